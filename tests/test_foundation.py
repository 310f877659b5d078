"""The CLI conventions every command relies on: fast start, exit codes, config precedence, atomic files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import click
import pytest
from click.testing import CliRunner

from din_cli import __version__, files
from din_cli.cli.main import COMMANDS, cli, main
from din_cli.cli.options import ipfs_option
from din_cli.errors import DinError, ExitCode, InputError, NotFoundError, UsageError

HEAVY = ("torch", "web3", "eth_tester", "eth", "eth_account", "sklearn", "ipfshttpclient", "numpy", "numba", "safetensors")


def _imported_modules(*args: str) -> set[str]:
    """Top-level packages imported by `din ARGS` (from -X importtime)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "din_cli", *args],
        capture_output=True, text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    mods = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            mods.add(name.split(".")[0])
    return mods


@pytest.mark.parametrize("args", [["--help"], ["--version"], *([name, "--help"] for name in COMMANDS)])
def test_help_and_version_import_no_heavy_library(args):
    mods = _imported_modules(*args)
    assert "din_cli" in mods
    heavy = sorted(m for m in HEAVY if m in mods)
    assert heavy == [], f"`din {' '.join(args)}` imported {heavy}"


def test_version_prints_version(run_din):
    proc = run_din("--version", check=True)
    assert proc.stdout.decode().strip() == f"din, version {__version__}"


def test_every_registered_command_loads_and_has_help():
    def walk(group, path):
        ctx = click.Context(group, info_name=path)
        for name in group.list_commands(ctx):
            cmd = group.get_command(ctx, name)
            assert cmd is not None, f"{path} {name} does not load"
            assert (cmd.help or "").strip(), f"`{path} {name}` has no help"
            if isinstance(cmd, click.Group):
                walk(cmd, f"{path} {name}")

    walk(cli, "din")
    assert set(COMMANDS) <= set(cli.list_commands(click.Context(cli)))


def test_unknown_command_is_usage_error(run_din):
    proc = run_din("no-such-command")
    assert proc.returncode == ExitCode.USAGE
    assert b"No such command" in proc.stderr
    assert proc.stdout == b""


@pytest.mark.parametrize(
    "error, code",
    [
        (InputError("bad data", "fix it"), ExitCode.ERROR),
        (UsageError("bad flags"), ExitCode.USAGE),
        (NotFoundError("missing"), ExitCode.NOT_FOUND),
    ],
)
def test_din_errors_become_one_line_and_their_exit_code(error, code, capsys, monkeypatch):
    @cli.command("raise-for-test", hidden=True)
    def _raise():
        raise error

    try:
        with pytest.raises(SystemExit) as exc:
            main(["raise-for-test"])
    finally:
        cli.commands.pop("raise-for-test", None)
    assert exc.value.code == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("din: error: ")
    assert error.message in err and (error.hint or "") in err


def test_every_exit_code_is_distinct_and_documented():
    values = [c.value for c in ExitCode]
    assert len(values) == len(set(values))
    help_text = cli.help
    for code in ExitCode:
        if code not in (ExitCode.OK,):
            assert str(code.value) in help_text, f"exit code {code.name} missing from `din --help`"


def test_ctrl_c_exits_130_with_one_line(tmp_path):
    # `din ipfs add -` blocks reading stdin: interrupt it like a user pressing Ctrl-C.
    proc = subprocess.Popen(
        [sys.executable, "-m", "din_cli", "ipfs", "add", "-"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == ExitCode.INTERRUPTED, err
    assert err.decode().strip() == "din: error: interrupted"
    assert out == b""


def test_settings_precedence_flag_env_config(din_home, monkeypatch):
    @click.command()
    @ipfs_option()
    def show(ipfs_api):
        click.echo(ipfs_api or "none")

    runner = CliRunner()
    assert runner.invoke(show, []).output.strip() == "none"
    din_home.mkdir(parents=True)
    (din_home / "config.toml").write_text('ipfs = "/ip4/127.0.0.1/tcp/7001"\n')
    assert runner.invoke(show, []).output.strip() == "/ip4/127.0.0.1/tcp/7001"
    monkeypatch.setenv("DIN_IPFS", "/ip4/127.0.0.1/tcp/7002")
    assert runner.invoke(show, []).output.strip() == "/ip4/127.0.0.1/tcp/7002"
    assert runner.invoke(show, ["--ipfs", "/ip4/127.0.0.1/tcp/7003"]).output.strip() == "/ip4/127.0.0.1/tcp/7003"


def test_config_show_reports_sources(din_home, run_din):
    din_home.mkdir(parents=True)
    (din_home / "config.toml").write_text('chain = "http://127.0.0.1:9"\n')
    proc = run_din("config", "show", "--json", env={"DIN_IPFS": "/ip4/127.0.0.1/tcp/5001"}, check=True)
    import json

    doc = json.loads(proc.stdout)
    assert doc["chain"] == {"value": "http://127.0.0.1:9", "source": "config.toml"}
    assert doc["ipfs"] == {"value": "/ip4/127.0.0.1/tcp/5001", "source": "env"}
    assert doc["home"]["value"] == str(din_home)


def test_broken_config_file_is_a_one_line_error(din_home, run_din):
    din_home.mkdir(parents=True)
    (din_home / "config.toml").write_text("chain = \n")
    proc = run_din("config", "show")
    assert proc.returncode == ExitCode.ERROR
    assert proc.stderr.decode().count("\n") == 1 and "config.toml: not valid TOML" in proc.stderr.decode()


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with files.atomic_output(target) as f:
            f.write(b"half")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_write_secret_is_mode_600_and_never_overwrites(tmp_path):
    path = tmp_path / "k.bin"
    files.write_secret(path, b"secret")
    assert (path.stat().st_mode & 0o777) == 0o600
    with pytest.raises(DinError) as exc:
        files.write_secret(path, b"other")
    assert exc.value.exit_code == ExitCode.USAGE
    assert path.read_bytes() == b"secret"
