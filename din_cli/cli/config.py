"""`din config`: show where settings come from."""

from __future__ import annotations

import os

import click

from din_cli import config
from din_cli.cli import output
from din_cli.cli.options import json_option

SETTINGS = {
    "chain": ("DIN_CHAIN", "embedded chain in $DIN_HOME/chain.sqlite"),
    "ipfs": ("DIN_IPFS", "local store in $DIN_HOME/blocks"),
    "key": ("DIN_KEY", None),
    "password_file": ("DIN_PASSWORD_FILE", "prompt"),
}


@click.group("config")
def config_group():
    """Show din's settings and where each comes from.

    Order: flag, then DIN_* environment variable, then $DIN_HOME/config.toml.

    \b
    Example:
        din config show --json | jq -r .chain.value
    """


@config_group.command("show")
@json_option()
def config_show(as_json):
    """Print each setting's value and source (env, config.toml or default).

    \b
    Example:
        DIN_IPFS=/ip4/127.0.0.1/tcp/5001 din config show
    """
    home = config.din_home()
    rows = {
        "home": {"value": str(home), "source": "env" if os.environ.get("DIN_HOME") else "default"}
    }
    file_cfg = config.file_config()
    for name, (env, default) in SETTINGS.items():
        if os.environ.get(env):
            rows[name] = {"value": os.environ[env], "source": "env"}
        elif name in file_cfg:
            rows[name] = {"value": file_cfg[name], "source": "config.toml"}
        else:
            rows[name] = {"value": None, "source": "default", "default": default}
    if as_json:
        output.emit_json(rows)
        return
    for name, r in rows.items():
        shown = r["value"] if r["value"] is not None else f"({r.get('default') or 'unset'})"
        output.emit(f"{name}\t{shown}\t{r['source']}")
