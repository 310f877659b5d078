"""Shared fixtures: every test gets its own DIN_HOME; integration services come from .ci/run."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def din_home(tmp_path, monkeypatch):
    """A fresh ``DIN_HOME`` per test, and no backend configuration leaking in."""
    home = tmp_path / ".din"
    monkeypatch.setenv("DIN_HOME", str(home))
    for var in ("DIN_CHAIN", "DIN_IPFS", "DIN_KEY", "DIN_PASSWORD_FILE", "DIN_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return home


def _service(env_var: str, what: str):
    value = os.environ.get(env_var)
    if value:
        return value
    if os.environ.get("DIN_REQUIRE_INTEGRATION"):
        pytest.fail(f"{env_var} is not set but DIN_REQUIRE_INTEGRATION is: {what} must be running")
    pytest.skip(f"{env_var} not set: start {what} with `make services` (as .ci/run does)")


@pytest.fixture(scope="session")
def ipfs_api() -> str:
    """Multiaddr of a real IPFS RPC daemon on loopback (``DIN_TEST_IPFS``)."""
    return _service("DIN_TEST_IPFS", "an IPFS RPC daemon (js-ipfs)")


@pytest.fixture(scope="session")
def anvil_url() -> str:
    """JSON-RPC URL of an anvil node on loopback (``DIN_TEST_ANVIL``)."""
    return _service("DIN_TEST_ANVIL", "anvil")


@pytest.fixture(scope="module", params=["embedded", "anvil"])
def deployed(request):
    """``(chain, dev account, deployment)``: the contracts deployed once per test module, on the
    embedded chain and on anvil (minimum stake 100 DIN, unstake delay one hour)."""
    from din_cli.chain.client import connect
    from din_cli.chain.din import deploy_all

    if request.param == "embedded":
        chain = connect("memory")
    else:
        chain = connect(request.getfixturevalue("anvil_url"))
    dev = chain.dev_account()
    dep = deploy_all(chain, dev, min_stake=100 * 10**18, unstake_delay=3600)
    yield chain, dev, dep
    chain.close()


@dataclass(frozen=True)
class Result:
    """What a user sees of one ``din`` run: the exit status and the bytes on stdout and stderr."""

    exit_code: int
    stdout_bytes: bytes
    stderr_bytes: bytes

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode(errors="replace")

    @property
    def output(self) -> str:
        """stderr then stdout, for assertion messages."""
        return self.stderr + self.stdout

    @classmethod
    def of(cls, run) -> Result:
        """A Result from a Result or from ``run_din``'s CompletedProcess."""
        if isinstance(run, subprocess.CompletedProcess):
            return cls(run.returncode, run.stdout or b"", run.stderr or b"")
        return run


@pytest.fixture
def din():
    """Run ``din ARGS`` in this process through ``main()``: the exit code as a user's shell sees it.

    ``input`` (bytes or str) is stdin, which is never a terminal here; ``env``
    sets variables for this run only. Returns a ``Result``. Faster than
    ``run_din`` (imports are paid once); use ``run_din`` where a real process
    matters (signals, concurrency, what a fresh interpreter imports).
    """
    from click.testing import CliRunner

    from din_cli.cli import output
    from din_cli.cli.main import main

    def run(*args, input: bytes | str | None = None, env: dict | None = None) -> Result:
        output.set_quiet(False)  # -q of an earlier run in this process must not leak
        with CliRunner().isolation(input=input, env=env) as (out, err, _):
            try:
                main([str(a) for a in args])
                code = 0
            except SystemExit as e:
                code = 0 if e.code is None else int(e.code)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
        return Result(code, out.getvalue(), err.getvalue())

    return run


@pytest.fixture
def run_din():
    """Run ``din`` in a separate process (real argv, real exit code, real stdio)."""

    def run(*args, input: bytes | None = None, env: dict | None = None, check: bool = False, **kw):
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.run(
            [sys.executable, "-m", "din_cli", *map(str, args)],
            input=input,
            capture_output=True,
            env=full_env,
            **kw,
        )
        if check:
            assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        return proc

    return run
