"""din_cli.protocol"""
