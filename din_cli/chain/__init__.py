"""din_cli.chain"""
