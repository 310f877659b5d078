"""Where din keeps its state and how settings are resolved.

Order: command-line flag, then ``DIN_*`` environment variable, then
``$DIN_HOME/config.toml``, then the built-in default. ``DIN_HOME`` defaults to
``./.din`` so a Makefile experiment keeps its state beside it.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from din_cli.errors import InputError

ENV_PREFIX = "DIN_"


def din_home() -> Path:
    """The state folder: ``$DIN_HOME`` or ``./.din``."""
    return Path(os.environ.get("DIN_HOME") or ".din").absolute()


def ensure_home() -> Path:
    home = din_home()
    home.mkdir(parents=True, exist_ok=True)
    return home


@lru_cache(maxsize=8)
def _read_config(path: str, mtime_ns: int) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # the same parser, published as tomli before it joined the standard library
        import tomli as tomllib

    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: not valid TOML ({e})", "fix or delete the file") from e


def file_config() -> dict[str, Any]:
    """The parsed ``$DIN_HOME/config.toml`` (empty when there is none)."""
    path = din_home() / "config.toml"
    try:
        st = path.stat()
    except FileNotFoundError:
        return {}
    return _read_config(str(path), st.st_mtime_ns)


def setting(name: str, default: Any = None) -> Any:
    """Resolve ``name`` from ``DIN_<NAME>`` then config.toml then ``default``.

    Flags are resolved by click before this is consulted (see cli/options.py).
    Dotted names (``ipfs.api``) read nested TOML tables; the variable is
    ``DIN_IPFS_API``.
    """
    env = ENV_PREFIX + name.upper().replace(".", "_").replace("-", "_")
    if os.environ.get(env):
        return os.environ[env]
    node: Any = file_config()
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node
