"""The CLI conventions every command relies on: fast start, exit codes, config precedence, atomic files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import click
import pytest

from din_cli import __version__, files
from din_cli.cli.main import COMMANDS, cli
from din_cli.cli.options import ipfs_option
from din_cli.errors import DinError, ExitCode, InputError, NotFoundError, UsageError

HEAVY = (
    "torch",
    "web3",
    "eth_tester",
    "eth",
    "eth_account",
    "sklearn",
    "ipfshttpclient",
    "numpy",
    "numba",
    "safetensors",
)


def _imported_modules(*args: str, full: bool = False) -> set[str]:
    """Top-level packages imported by `din ARGS` (from -X importtime); ``full``: every module."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "din_cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    mods = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            mods.add(name if full else name.split(".")[0])
    return mods


def test_din_train_imports_no_dynamo_and_no_chain(tmp_path):
    """Scripts and CI call one step at a time, so each pays its own start-up: `din train` must
    not pull in torch._dynamo (torch.optim's construction did, ~1 s), nor the chain stack."""
    pytest.importorskip("torch", reason="din train needs torch")
    from din_cli.ml import data, models

    os.chdir(tmp_path)
    models.init_model("logreg:64-10", "g.safetensors")
    ds = data.load_dataset("digits")
    data.save_store("s.npz", ds.x[:74], ds.y[:74])
    args = ("train", "--model", "g.safetensors", "--data", "s.npz", "-o", "u.safetensors")
    mods = _imported_modules(*args, full=True)
    assert "torch" in mods and not [m for m in mods if m.startswith("torch._dynamo")]
    tops = {m.split(".")[0] for m in mods}
    assert not tops & {"web3", "eth_tester", "eth", "numba", "sklearn", "ipfshttpclient"}, tops


def test_a_small_din_aggregate_imports_neither_numba_nor_torch(tmp_path):
    """`din aggregate` of small updates: numpy's kernels (numba's code generator costs ~1.2 s,
    more than numpy takes below NUMBA_MIN_BYTES), no torch, no chain stack."""
    import numpy as np

    from din_cli.ml import tensorfile, zoo

    os.chdir(tmp_path)
    paths = []
    for k in range(3):
        w = {n: np.full(s, k / 10, np.float32) for n, s in zoo.param_shapes("logreg:64-10").items()}
        meta = tensorfile.make_metadata(arch="logreg:64-10", kind="update", samples=k + 1, round=1)
        tensorfile.write(f"u{k}.safetensors", w, meta)
        paths.append(f"u{k}.safetensors")
    tops = _imported_modules("aggregate", *paths, "-o", "a.safetensors")
    assert "numpy" in tops
    assert not tops & {"numba", "torch", "web3", "eth_tester", "eth", "sklearn"}, tops


@pytest.mark.integration
def test_reading_a_node_imports_no_embedded_chain(anvil_url, run_din):
    """`din chain info --chain URL` talks JSON-RPC: no eth_tester or py-evm (package `eth`),
    no torch, no numba."""
    proc = run_din("init", "--chain", anvil_url, "--dev-accounts", "1", "-q")
    assert proc.returncode == 0, proc.stderr
    tops = _imported_modules("chain", "info", "--chain", anvil_url)
    assert "web3" in tops
    assert not tops & {"eth_tester", "eth", "torch", "numba", "sklearn"}, tops


@pytest.mark.parametrize(
    "args", [["--help"], ["--version"], *([name, "--help"] for name in COMMANDS)]
)
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


@pytest.fixture
def hidden_command():
    """Register a hidden ``din NAME`` for one test: ``hidden_command(name)(function)``."""
    added = []

    def register(name):
        added.append(name)
        return cli.command(name, hidden=True)

    yield register
    for name in added:
        cli.commands.pop(name, None)


@pytest.mark.parametrize(
    "error, code",
    [
        (InputError("bad data", "fix it"), ExitCode.ERROR),
        (UsageError("bad flags"), ExitCode.USAGE),
        (NotFoundError("missing"), ExitCode.NOT_FOUND),
    ],
)
def test_din_errors_become_one_line_and_their_exit_code(error, code, din, hidden_command):
    @hidden_command("raise-for-test")
    def _raise():
        raise error

    r = din("raise-for-test")
    assert r.exit_code == code
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("din: error: ")
    assert error.message in r.stderr and (error.hint or "") in r.stderr
    assert r.stdout_bytes == b""


def test_din_debug_shows_a_din_errors_traceback_and_its_cause(din, hidden_command):
    @hidden_command("raise-for-test")
    def _raise():
        try:
            int("twelve")
        except ValueError:
            raise InputError(
                "bad number", "give digits"
            ) from None  # hidden from users, not from DIN_DEBUG

    r = din("raise-for-test")
    assert r.stderr == "din: error: bad number; give digits\n"
    r = din("raise-for-test", env={"DIN_DEBUG": "1"})
    assert r.exit_code == ExitCode.ERROR  # scripts see the same code
    assert r.stderr.startswith("Traceback (most recent call last):")
    assert "ValueError: invalid literal for int() with base 10: 'twelve'" in r.stderr
    assert "din_cli.errors.InputError: bad number" in r.stderr
    assert r.stderr.endswith("\ndin: error: bad number; give digits\n")


def test_din_debug_raises_an_unexpected_error_with_its_cause(din, hidden_command):
    @hidden_command("bug-for-test")
    def _bug():
        try:
            {}["missing"]
        except KeyError:
            raise RuntimeError("a bug") from None

    r = din("bug-for-test")
    assert r.exit_code == ExitCode.ERROR
    assert (
        r.stderr
        == "din: error: internal error: RuntimeError: a bug (rerun with DIN_DEBUG=1 for a traceback)\n"
    )
    with pytest.raises(RuntimeError) as exc:
        din("bug-for-test", env={"DIN_DEBUG": "1"})
    assert isinstance(exc.value.__context__, KeyError) and not exc.value.__suppress_context__


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
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == ExitCode.INTERRUPTED, err
    assert err.decode().strip() == "din: error: interrupted"
    assert out == b""


def test_settings_precedence_flag_env_config(din_home, monkeypatch, din, hidden_command):
    @hidden_command("show-for-test")
    @ipfs_option()
    def show(ipfs_api):
        click.echo(ipfs_api or "none")

    assert din("show-for-test").stdout.strip() == "none"
    din_home.mkdir(parents=True)
    (din_home / "config.toml").write_text('ipfs = "/ip4/127.0.0.1/tcp/7001"\n')
    assert din("show-for-test").stdout.strip() == "/ip4/127.0.0.1/tcp/7001"
    monkeypatch.setenv("DIN_IPFS", "/ip4/127.0.0.1/tcp/7002")
    assert din("show-for-test").stdout.strip() == "/ip4/127.0.0.1/tcp/7002"
    assert (
        din("show-for-test", "--ipfs", "/ip4/127.0.0.1/tcp/7003").stdout.strip()
        == "/ip4/127.0.0.1/tcp/7003"
    )


def test_config_show_reports_sources(din_home, run_din):
    din_home.mkdir(parents=True)
    (din_home / "config.toml").write_text('chain = "http://127.0.0.1:9"\n')
    proc = run_din(
        "config", "show", "--json", env={"DIN_IPFS": "/ip4/127.0.0.1/tcp/5001"}, check=True
    )
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
    assert (
        proc.stderr.decode().count("\n") == 1
        and "config.toml: not valid TOML" in proc.stderr.decode()
    )


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
