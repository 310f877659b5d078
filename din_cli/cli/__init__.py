"""The click commands: parse, call one library function, print.

This is the only package that imports click or rich.
"""
