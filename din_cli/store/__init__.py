"""din_cli.store"""
