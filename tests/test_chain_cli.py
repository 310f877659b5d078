"""The chain commands: exit codes, state carried across processes, concurrency, anvil.

``din`` runs a command in this process through ``main()`` (fast: imports are
paid once); ``run_din`` runs it in a separate process, where carrying state
over is the point.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
from conftest import Result

CID = bytes.fromhex("01551220") + b"\x11" * 32  # a binary CIDv1 (raw, sha2-256)


def ok(run) -> str:
    """stdout of a successful run (``din`` or ``run_din``)."""
    r = Result.of(run)
    assert r.exit_code == 0, r.stderr
    return r.stdout


def one_line_error(run, code: int) -> str:
    """The one stderr line of a run that failed with ``code``, having printed nothing on stdout."""
    r = Result.of(run)
    assert r.exit_code == code, (r.exit_code, r.stderr)
    assert r.stderr.startswith("din: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert r.stdout_bytes == b""
    return r.stderr


def din_json(run_din, *args):
    return json.loads(ok(run_din(*args, "--json")))


def create_task(din_home, owner_key: str = "dev1") -> int:
    """A task through the library (`din model publish` belongs to the protocol part)."""
    from din_cli.chain import network
    from din_cli.crypto.keystore import Keystore

    password = (din_home / "dev-password").read_text().strip()
    owner = Keystore().unlock(owner_key, password).account
    chain, dep = network.open_network()
    try:
        with chain.writing():
            return network.din(chain, dep).create_task(
                owner, genesis_cid=CID, arch="mlp", deposit=10**18, test_set_hash=b"\x5e" * 32
            )
    finally:
        chain.close()


def start(*args, env=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "din_cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def initialised(din, din_home):
    out = ok(din("init", "--dev-accounts", "3", "-q"))
    return dict(line.split("\t") for line in out.splitlines())


# ---------------------------------------------------------------- bad input first


def test_chain_info_before_init_names_din_init(run_din, din_home):
    err = one_line_error(run_din("chain", "info"), 4)
    assert "run `din init` first" in err
    assert not (din_home / "chain.sqlite").exists()


def test_unreachable_chain_url_is_exit_6(run_din, din_home):
    err = one_line_error(run_din("init", "--chain", "http://127.0.0.1:9"), 6)
    assert "cannot reach the chain node at http://127.0.0.1:9" in err
    assert not (din_home / "deployment.json").exists()
    assert not (din_home / "keys").exists()


def test_a_bad_chain_url_is_a_usage_error(din):
    one_line_error(din("init", "--chain", "localhost:8545"), 2)


# ---------------------------------------------------------------- init and persistence


def test_init_creates_home_chain_deployment_and_dev_accounts(initialised, run_din, din_home):
    assert set(initialised) == {
        "DinToken",
        "ValidatorRegistry",
        "DinPayouts",
        "DinTasks",
        "DinDisputes",
        "DinGovernor",
        "DinGrants",
    }
    dep = json.loads((din_home / "deployment.json").read_text())
    assert {k: dep[k] for k in initialised} == initialised
    assert (din_home / "chain.sqlite").is_file()
    assert oct((din_home / "dev-password").stat().st_mode & 0o777) == "0o600"
    assert "password_file" in (din_home / "config.toml").read_text()
    keys = json.loads(ok(run_din("keys", "list", "--json")))
    names = sorted(k["name"] for k in (keys if isinstance(keys, list) else keys.get("keys", [])))
    assert names == ["dev1", "dev2", "dev3"]

    # a separate process sees the same chain: head, time, addresses, balances
    info = din_json(run_din, "chain", "info")
    assert info["chain_id"] == dep["chain_id"] and info["contracts"] == initialised
    assert info["head"] > 0 and abs(info["time"] - __import__("time").time()) < 300
    v = din_json(run_din, "validator", "info", "--key", "dev2")
    assert v["stake"] == 0 and v["token_balance"] == 10_000 * 10**18 and v["eth_balance"] > 0


def test_init_twice_is_already_done_and_changes_nothing(initialised, din, din_home):
    def snapshot():
        files = sorted(
            p for p in din_home.rglob("*") if p.is_file() and "chain.sqlite" not in p.name
        )
        return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    before, head = snapshot(), din_json(din, "chain", "info")["head"]
    err = one_line_error(din("init", "--dev-accounts", "5"), 7)
    assert "already initialised" in err
    assert snapshot() == before
    assert din_json(din, "chain", "info")["head"] == head


def test_stake_info_unstake_withdraw(initialised, din):
    assert ok(din("validator", "stake", "100", "--key", "dev2")).strip() == "100"
    assert ok(din("validator", "stake", "0.5", "--key", "dev2")).strip() == "100.5"
    v = din_json(din, "validator", "info", "--key", "dev2")
    assert v["stake"] == 1005 * 10**17 and v["active"] is True and v["unlock_at"] is None
    assert v["hpke_public"] == json.loads(ok(din("keys", "show", "dev2", "--json")))["hpke_public"]

    unlock = int(ok(din("validator", "unstake", "--key", "dev2")))
    v = din_json(din, "validator", "info", "--key", "dev2")
    assert v["unlock_at"] == unlock and v["active"] is False
    one_line_error(din("validator", "unstake", "--key", "dev2"), 7)  # delay not over

    ok(din("chain", "advance", str(7 * 24 * 3600)))
    assert ok(din("validator", "unstake", "--key", "dev2")).strip() == "100.5"
    v = din_json(din, "validator", "info", "--key", "dev2")
    assert v["stake"] == 0 and v["token_balance"] == 10_000 * 10**18


def test_a_revert_is_exit_5_with_the_contract_reason(initialised, din):
    err = one_line_error(din("validator", "stake", "1", "--key", "dev2"), 5)
    assert err == "din: error: stake reverted: stake below minimum\n"
    assert din_json(din, "validator", "info", "--key", "dev2")["stake"] == 0
    # a custom error raised in another contract (the token), decoded with its arguments
    err = one_line_error(din("validator", "stake", "20000", "--key", "dev2"), 5)
    assert "stake reverted: ERC20InsufficientBalance(sender=0x" in err
    assert "balance=10000000000000000000000, needed=20000000000000000000000)" in err


def test_bad_amount_is_a_usage_error(initialised, din):
    one_line_error(din("validator", "stake", "lots", "--key", "dev2"), 2)


def test_participant_join_and_task_status(initialised, din, din_home):
    tid = create_task(din_home)
    assert ok(din("participant", "join", str(tid), "--key", "dev2")).strip() == "0"
    assert ok(din("participant", "join", str(tid), "--key", "dev3")).strip() == "1"
    one_line_error(din("participant", "join", str(tid), "--key", "dev3"), 7)
    err = one_line_error(din("participant", "join", str(tid), "--key", "dev1"), 5)
    assert "the model owner cannot participate" in err

    status = din_json(din, "task", "status", str(tid), "--key", "dev3")
    assert status["phase"] == "joining" and status["participants"] == 2 and status["round"] == 0
    assert status["you"] == {"address": status["you"]["address"], "role": "participant", "index": 1}
    assert 0 < status["seconds_left"] <= 3600
    lines = dict(line.split("\t") for line in ok(din("task", "status", str(tid))).splitlines())
    assert lines["phase"] == "joining" and lines["participants"] == "2"

    one_line_error(din("task", "status", "99"), 4)
    one_line_error(din("task", "status", "abc"), 2)
    one_line_error(din("participant", "join", "99", "--key", "dev2"), 4)


def test_task_list_and_validator_join(initialised, din, din_home):
    assert ok(din("task", "list")) == ""
    tid = create_task(din_home)
    assert tid == 1
    assert ok(din("task", "list")).splitlines() == ["1\tjoining\t0\t0\t0"]
    owner = din_json(din, "validator", "info", "--key", "dev1")
    assert owner["token_balance"] == 9_999 * 10**18  # the deposit left the owner

    err = one_line_error(din("validator", "join", str(tid), "--key", "dev3"), 5)
    assert "registerValidator reverted: stake below minimum" in err
    ok(din("validator", "stake", "100", "--key", "dev3"))
    assert ok(din("validator", "join", str(tid), "--key", "dev3")).strip() == "0"
    one_line_error(din("validator", "join", str(tid), "--key", "dev3"), 7)
    assert din_json(din, "task", "status", str(tid), "--key", "dev3")["you"]["role"] == "validator"
    assert din_json(din, "task", "list") == [
        {**din_json(din, "task", "list")[0], "task_id": 1, "phase": "joining", "validators": 1}
    ]


# ---------------------------------------------------------------- concurrency


def test_two_commands_at_once_both_succeed_on_the_embedded_chain(initialised, run_din):
    procs = [start("validator", "stake", "100", "--key", "dev2", "-q") for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
        outs.append(out.decode().strip())
    assert sorted(outs) == ["100", "200"]  # serialised: one saw the other's stake
    assert din_json(run_din, "validator", "info", "--key", "dev2")["stake"] == 200 * 10**18


def test_two_inits_at_once_deploy_once(din_home):
    procs = [start("init", "--dev-accounts", "1", "-q") for _ in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        results.append((p.returncode, out.decode()))
    assert sorted(code for code, _ in results) == [0, 7], results
    printed = next(out for code, out in results if code == 0)
    dep = json.loads((din_home / "deployment.json").read_text())
    assert printed.splitlines()[-2:] == [
        f"DinGovernor\t{dep['DinGovernor']}",
        f"DinGrants\t{dep['DinGrants']}",
    ]


# ---------------------------------------------------------------- anvil


@pytest.mark.integration
def test_anvil_init_stake_and_concurrent_sends(anvil_url, run_din, din_home):
    out = ok(run_din("init", "--chain", anvil_url, "--dev-accounts", "2", "-q"))
    assert [line.split("\t")[0] for line in out.splitlines()] == [
        "DinToken",
        "ValidatorRegistry",
        "DinPayouts",
        "DinTasks",
        "DinDisputes",
        "DinGovernor",
        "DinGrants",
    ]
    dep = json.loads((din_home / "deployment.json").read_text())
    assert dep["url"] == anvil_url and dep["chain_id"] == 31337
    # later commands find the node through deployment.json
    assert din_json(run_din, "chain", "info")["url"] == anvil_url
    assert ok(run_din("validator", "stake", "100", "--key", "dev1")).strip() == "100"
    one_line_error(run_din("validator", "stake", "1", "--key", "dev2"), 5)
    # two processes, one key: the nonce lock keeps them from colliding
    procs = [start("validator", "stake", "10", "--key", "dev1", "-q") for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    assert din_json(run_din, "validator", "info", "--key", "dev1")["stake"] == 120 * 10**18
    one_line_error(run_din("init", "--chain", anvil_url), 7)
