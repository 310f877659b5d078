"""Shared option factories and helpers for every command module.

Each ``*_option(...)`` is a factory that returns a click decorator, so an
option is written once and varied per command (``round_option("Check one
round only.")``). ``unlock``, ``key_address`` and ``context`` turn the
``--key``/``--chain``/``--ipfs`` values into what a library call needs.
Nothing here imports torch, web3 or eth-*: ``din --help`` stays fast.

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


def _setting_option(flag: str, dest: str, metavar: str, envvar: str, setting: str, help: str):
    """An option that falls back to ``envvar``, then ``setting`` in config.toml."""
    return click.option(
        flag,
        dest,
        metavar=metavar,
        envvar=envvar,
        default=lambda: config.setting(setting),
        help=help,
    )


def ipfs_option():
    """``--ipfs MULTIADDR``: a Kubo RPC API instead of the local store."""
    return _setting_option(
        "--ipfs",
        "ipfs_api",
        "MULTIADDR",
        "DIN_IPFS",
        "ipfs",
        "Kubo RPC API, e.g. /ip4/127.0.0.1/tcp/5001. Default: the local store in $DIN_HOME/blocks  [env: DIN_IPFS]",
    )


def chain_option():
    """``--chain URL``: a JSON-RPC node instead of the embedded chain."""
    return _setting_option(
        "--chain",
        "chain_url",
        "URL",
        "DIN_CHAIN",
        "chain",
        "JSON-RPC node, e.g. http://127.0.0.1:8545. Default: the embedded chain in $DIN_HOME/chain.sqlite  [env: DIN_CHAIN]",
    )


def key_option(
    help: str = "Identity to act as (see `din keys list`)  [env: DIN_KEY]",
    *,
    flag: str = "--key",
    dest: str = "key_name",
):
    """``--key NAME``: which of the keystore's identities acts (``flag``: the same under another name)."""
    return _setting_option(flag, dest, "NAME", "DIN_KEY", "key", help)


def json_option(help: str = "Print JSON on stdout."):
    """``--json``: print one JSON document instead of plain lines."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def quiet_option():
    """``-q``: no progress or chatter on stderr."""

    def decorator(f):
        @click.option("-q", "--quiet", is_flag=True, help="No progress bars or notes on stderr.")
        @functools.wraps(f)
        def wrapper(*args, quiet, **kwargs):
            from din_cli.cli import output

            output.set_quiet(quiet)
            return f(*args, **kwargs)

        return wrapper

    return decorator


def acting_options(*, ipfs: bool = False):
    """``--chain [--ipfs] --key --json -q``: the options of a command that acts on chain as --key."""
    decorators = [
        chain_option(),
        *([ipfs_option()] if ipfs else []),
        key_option(),
        json_option(),
        quiet_option(),
    ]

    def decorator(f):
        for option in reversed(
            decorators
        ):  # the first listed is the outermost, as in a stack of @s
            f = option(f)
        return f

    return decorator


def output_option(
    help: str = "Output file; - for stdout. Written atomically.", *, dest: str = "output"
):
    """``-o FILE|-``: where to write; ``-`` (the default) is stdout."""
    return click.option(
        "-o", "--output", dest, metavar="FILE|-", default="-", show_default=True, help=help
    )


def task_option(
    help: str = "Task id (printed by `din model publish`).", *, required: bool = True, **kwargs
):
    """``--task TASK`` (None when optional and absent); ``kwargs`` override click.option's (``metavar``, ``type``)."""
    settings = {"required": True} if required else {"required": False, "default": None}
    return click.option("--task", "task", **{**settings, "metavar": "TASK", "help": help, **kwargs})


def rule_options(rule_help: str, *, clip_from: str = "--base"):
    """``--rule`` (into ``rule``; ``ml.robust.RULES``), ``--clip-norm X`` and ``--trim F``: an aggregation rule."""

    def apply(f):
        f = click.option(
            "--trim",
            default=None,
            metavar="F",
            help="With --rule trimmed-mean: drop floor(F*n) values at each end of every coordinate (0 <= F < 0.5).",
        )(f)
        f = click.option(
            "--clip-norm",
            default=None,
            metavar="X",
            help=f"With --rule norm-bounded: clip each update's L2 distance from {clip_from} to X.",
        )(f)
        return click.option(
            "--rule",
            type=click.Choice(["mean", "norm-bounded", "trimmed-mean", "median"]),
            default="mean",
            show_default=True,
            help=rule_help,
        )(f)

    return apply


def round_option(help: str, *, required: bool = False, min: int = 1):
    """``--round R``: a round number (``min`` and up); without ``required``, None means all or the current one."""
    settings = {"required": True} if required else {"required": False, "default": None}
    return click.option(
        "--round", "round_", type=click.IntRange(min, None), metavar="R", help=help, **settings
    )


def require_one_step(commit: bool, reveal: bool, commit_only: dict[str, object]) -> None:
    """``--task`` steps take exactly one of --commit/--reveal; flags in ``commit_only`` only with --commit."""
    from din_cli.errors import UsageError

    if commit == reveal:
        raise UsageError(
            "--task needs exactly one of --commit and --reveal",
            "commit first, reveal in the reveal phase",
        )
    for flag, value in commit_only.items():
        if value and not commit:
            raise UsageError(f"{flag} goes with --commit", f"drop {flag}")


# ---------------------------------------------------------------- from option values to library objects


def parse_scores(pairs) -> dict[str, int]:
    """``--set-score ADDRESS=BPS`` pairs as ``{address: bps}`` (0..10000 basis points)."""
    from din_cli.errors import UsageError

    scores = {}
    for pair in pairs or ():
        who, sep, bps = pair.partition("=")
        if not sep or not bps.strip().isdigit() or int(bps) > 10_000:
            raise UsageError(
                f"--set-score {pair!r} is not ADDRESS=BPS (0 to 10000)",
                "e.g. --set-score 0xAbC...=10000",
            )
        scores[who.strip()] = int(bps)
    return scores


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
            raise NotFoundError(
                f"DIN_PASSWORD_FILE={path}: no such file", "point it at a file holding the password"
            ) from None
        return text.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise UsageError(
            "no password: stdin is not a terminal",
            "set DIN_PASSWORD_FILE to a file holding the password",
        )
    return click.prompt(prompt, hide_input=True, confirmation_prompt=confirm, err=True)


def unlock(key_name: str | None):
    """The unlocked identity named by --key (or the only key there is)."""
    from din_cli.crypto.keystore import Keystore

    ks = Keystore()
    name = ks.default_name(key_name)
    ks.show(name)  # NotFoundError before asking for a password
    return ks.unlock(name, read_password(f"Password for {name}"))


def key_address(key_name: str | None, *, optional: bool = False) -> str | None:
    """The address of --key (or of the only key) without unlocking it.

    ``optional``: None instead of an error when no --key was given and no
    single key can stand in for it.
    """
    from din_cli.crypto.keystore import Keystore
    from din_cli.errors import DinError

    try:
        ks = Keystore()
        return ks.show(ks.default_name(key_name)).address
    except DinError:
        if key_name or not optional:
            raise
        return None


def context(
    chain_url: str | None,
    ipfs_api: str | None = None,
    key_name: str | None = None,
    *,
    act: bool = True,
):
    """A protocol Context (a context manager that closes the chain); ``act`` unlocks --key."""
    from din_cli.protocol.context import open_context

    identity = unlock(key_name) if act else None
    return open_context(chain_url, ipfs_api, identity)
