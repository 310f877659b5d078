"""din_cli.ml"""
