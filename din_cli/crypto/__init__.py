"""din_cli.crypto"""
