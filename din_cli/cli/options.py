"""Shared option decorators and parameter types for every command.

Order of precedence for settings: flag, then ``DIN_*`` environment variable
(click's ``envvar``), then ``$DIN_HOME/config.toml``, then the default.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click

from din_cli import config


def _from_config(name: str, default=None):
    return lambda: config.setting(name, default)


def ipfs_option(f):
    """``--ipfs MULTIADDR``: a Kubo RPC API instead of the local store."""
    return click.option(
        "--ipfs",
        "ipfs_api",
        metavar="MULTIADDR",
        envvar="DIN_IPFS",
        default=_from_config("ipfs"),
        help="Kubo RPC API, e.g. /ip4/127.0.0.1/tcp/5001. Default: the local store in $DIN_HOME/blocks  [env: DIN_IPFS]",
    )(f)


def chain_option(f):
    """``--chain URL``: a JSON-RPC node instead of the embedded chain."""
    return click.option(
        "--chain",
        "chain_url",
        metavar="URL",
        envvar="DIN_CHAIN",
        default=_from_config("chain"),
        help="JSON-RPC node, e.g. http://127.0.0.1:8545. Default: the embedded chain in $DIN_HOME/chain.sqlite  [env: DIN_CHAIN]",
    )(f)


def key_option(f):
    """``--key NAME``: which of the keystore's identities acts."""
    return click.option(
        "--key",
        "key_name",
        metavar="NAME",
        envvar="DIN_KEY",
        default=_from_config("key"),
        help="Identity to act as (see `din keys list`)  [env: DIN_KEY]",
    )(f)


def json_option(f):
    """``--json``: print one JSON document instead of plain lines."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")(f)


def quiet_option(f):
    """``-q``: no progress or chatter on stderr."""

    @click.option("-q", "--quiet", is_flag=True, help="No progress bars or notes on stderr.")
    @functools.wraps(f)
    def wrapper(*args, quiet, **kwargs):
        from din_cli.cli import output

        output.set_quiet(quiet)
        return f(*args, **kwargs)

    return wrapper


def output_option(f):
    """``-o FILE|-``: where to write; ``-`` (the default) is stdout."""
    return click.option(
        "-o",
        "--output",
        metavar="FILE|-",
        default="-",
        show_default=True,
        help="Output file; - for stdout. Written atomically.",
    )(f)


def read_password(prompt: str = "Password", *, confirm: bool = False) -> str:
    """A password from the file named by ``DIN_PASSWORD_FILE``, else a hidden prompt.

    Never from a flag value: secrets do not belong in argv or shell history.
    """
    from din_cli.errors import NotFoundError, UsageError

    path = os.environ.get("DIN_PASSWORD_FILE") or config.setting("password_file")
    if path:
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            raise NotFoundError(f"DIN_PASSWORD_FILE={path}: no such file", "point it at a file holding the password") from None
        return text.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise UsageError("no password: stdin is not a terminal", "set DIN_PASSWORD_FILE to a file holding the password")
    return click.prompt(prompt, hide_input=True, confirmation_prompt=confirm, err=True)
