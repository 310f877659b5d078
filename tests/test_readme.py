"""The README's worked examples run as written: every ```sh block, in order, in one empty folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click

from din_cli.cli.main import cli

README = Path(__file__).resolve().parent.parent / "README.md"


def sh_blocks() -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", README.read_text(), flags=re.S | re.M)


def test_readme_has_the_two_fresh_machine_commands():
    text = README.read_text()
    assert "make demo" in text and "make test" in text


def test_readme_examples_run(tmp_path):
    blocks = sh_blocks()
    assert blocks, "README has no ```sh examples"
    script = "set -euo pipefail\n" + "\n".join(blocks)
    bindir = Path(sys.executable).parent
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DIN_")},
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        "DIN_HOME": str(tmp_path / ".din"),
    }
    proc = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, (
        f"README examples failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    )


def test_every_command_appears_in_readme():
    text = README.read_text()
    missing = []

    def walk(group, path):
        ctx = click.Context(group, info_name=path)
        for name in group.list_commands(ctx):
            cmd = group.get_command(ctx, name)
            if cmd is None or cmd.hidden:
                continue
            full = f"{path} {name}"
            if isinstance(cmd, click.Group):
                walk(cmd, full)
            elif full not in text:
                missing.append(full)

    walk(cli, "din")
    assert not missing, f"commands not documented in README.md: {missing}"


def test_docs_are_not_stale():
    proc = subprocess.run(
        [sys.executable, str(README.parent / "scripts" / "gen_docs.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
