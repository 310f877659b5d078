"""`din model publish`, `din round ...`, `din rewards ...`, `din verify` as a user runs them: real
processes on the embedded chain, asserting stdout, exit codes and the contract's revert reasons."""

from __future__ import annotations

import json

import pytest

from din_cli.errors import ExitCode


@pytest.fixture
def chain_home(run_din, tmp_path):
    """An initialised DIN_HOME (embedded chain, dev1..dev4) with a genesis model file."""
    run_din("init", "--dev-accounts", "4", "-q", check=True)
    run_din("model", "init", "--arch", "logreg:64-10", "-o", "genesis.safetensors", check=True)
    return tmp_path


def out(proc) -> str:
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout.decode()


def test_commands_without_a_deployment_say_run_din_init(run_din):
    proc = run_din("round", "status", "--task", "1")
    assert proc.returncode == ExitCode.NOT_FOUND
    assert b"din init" in proc.stderr and proc.stdout == b""


def test_a_task_from_publish_to_the_first_round(run_din, chain_home):
    tid = out(
        run_din(
            "model",
            "publish",
            "genesis.safetensors",
            "--test-set",
            "genesis.safetensors",  # any file: these tasks never reach their test set
            "--deposit",
            "10",
            "--subgroup-size",
            "2",
            "--validators-per-subgroup",
            "1",
            "--rounds",
            "1",
            "--key",
            "dev1",
            "-q",
        )
    ).strip()
    assert tid == "1"
    doc = json.loads(
        out(
            run_din(
                "model",
                "publish",
                "genesis.safetensors",
                "--test-set",
                "genesis.safetensors",
                "--deposit",
                "5",
                "--key",
                "dev1",
                "--json",
            )
        )
    )
    assert doc["task_id"] == 2 and doc["cid"].startswith("bafk") and doc["arch"] == "logreg:64-10"
    # the owner must commit to its test set when it publishes
    proc = run_din("model", "publish", "genesis.safetensors", "--deposit", "5", "--key", "dev1")
    assert proc.returncode == 2 and b"--test-set" in proc.stderr
    # exact Shapley over 17 updates is refused before anything is published: one line, no task
    publish = ["model", "publish", "genesis.safetensors", "--test-set", "genesis.safetensors",
               "--deposit", "5", "--key", "dev1"]  # fmt: skip
    proc = run_din(*publish, "--scoring", "exact", "--subgroup-size", "17")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert b"exact Shapley over subgroups of 17" in proc.stderr
    # newest first
    assert [line.split("\t")[0] for line in out(run_din("task", "list")).splitlines()] == ["2", "1"]

    # too early: nobody joined, so the owner cannot start; the contract's reason is printed
    proc = run_din("round", "start", "--task", "1", "--key", "dev1")
    assert proc.returncode == ExitCode.TX_REVERTED
    assert b"no participants joined yet" in proc.stderr
    proc = run_din("round", "start", "--task", "1", "--key", "dev2")
    assert proc.returncode == ExitCode.TX_REVERTED and b"only the model owner" in proc.stderr

    out(run_din("validator", "stake", "100", "--key", "dev4", "-q"))
    out(run_din("validator", "join", "1", "--key", "dev4", "-q"))
    out(run_din("participant", "join", "1", "--key", "dev2", "-q"))
    proc = run_din("round", "wait", "--task", "1", "--phase", "training", "--timeout", "0")
    assert proc.returncode == ExitCode.ERROR and b"still in joining" in proc.stderr

    assert out(run_din("round", "start", "--task", "1", "--key", "dev1", "-q")).strip() == "1"
    proc = run_din("round", "start", "--task", "1", "--key", "dev1")
    assert proc.returncode == ExitCode.ALREADY_DONE
    assert (
        out(run_din("round", "wait", "--task", "1", "--phase", "training", "--timeout", "5"))
        == "training\t1\n"
    )

    status = dict(
        line.split("\t", 1)
        for line in out(run_din("round", "status", "--task", "1", "--key", "dev2")).splitlines()
    )
    assert (
        status["phase"] == "training" and status["round"] == "1" and status["you"] == "participant"
    )
    assert status["model"] == doc["cid"]  # both tasks start from the same genesis bytes
    full = json.loads(out(run_din("round", "status", "--task", "1", "--json")))
    assert full["current_round"]["updates"] == [] and full["groups"] == 1
    assert full["scoring"] == "gtg"  # what participants join: the default, contribution

    # steps out of phase say which phase the task is in, and how to wait for the right one
    proc = run_din("round", "finalize", "--task", "1", "--key", "dev1")
    assert proc.returncode == ExitCode.USAGE and b"din round wait" in proc.stderr
    proc = run_din("rewards", "claim", "--task", "1", "--key", "dev2")
    assert proc.returncode == ExitCode.USAGE and b"not settled" in proc.stderr

    # nothing accepted yet: verify has nothing to check and passes
    assert out(run_din("verify", "--task", "1")) == ""
    shown = json.loads(out(run_din("rewards", "show", "--task", "1", "--json")))
    assert shown["phase"] == "training" and shown["deposit"] == 10 * 10**18
    assert [p["index"] for p in shown["participants"]] == [0]


def test_a_bad_task_id_is_a_usage_error(run_din, chain_home):
    proc = run_din("round", "status", "--task", "zero")
    assert proc.returncode == ExitCode.USAGE and b"not a task id" in proc.stderr
    proc = run_din("round", "status", "--task", "9")
    assert proc.returncode == ExitCode.NOT_FOUND and b"task 9 does not exist" in proc.stderr


def test_killing_train_submit_midway_and_running_it_again_submits_once(run_din, chain_home):
    import signal
    import subprocess
    import sys
    import time

    run_din(
        "data", "split", "--dataset", "digits", "--participants", "2", "--out", "stores", check=True
    )
    out(
        run_din(
            "model",
            "publish",
            "genesis.safetensors",
            "--test-set",
            "stores/test.npz",
            "--deposit",
            "10",
            "--subgroup-size",
            "2",
            "--validators-per-subgroup",
            "1",
            "--key",
            "dev1",
            "-q",
        )
    )
    out(run_din("validator", "stake", "100", "--key", "dev4", "-q"))
    out(run_din("validator", "join", "1", "--key", "dev4", "-q"))
    out(run_din("participant", "join", "1", "--key", "dev2", "-q"))
    out(run_din("participant", "join", "1", "--key", "dev3", "-q"))
    out(run_din("round", "start", "--task", "1", "--key", "dev1", "-q"))
    args = [
        "train",
        "--task",
        "1",
        "--data",
        "stores/participant-01.npz",
        "--submit",
        "--key",
        "dev2",
        "-q",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "din_cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    time.sleep(2.0)  # somewhere in imports, the fetch, training or the transaction
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    again = run_din(*args)
    assert again.returncode in (0, ExitCode.ALREADY_DONE), again.stderr
    assert run_din(*args).returncode == ExitCode.ALREADY_DONE  # never twice
    updates = json.loads(out(run_din("round", "status", "--task", "1", "--json")))["current_round"][
        "updates"
    ]
    assert [u["index"] for u in updates] == [0]
    # the submitted CID is in the store: nothing was lost
    assert run_din("ipfs", "cat", updates[0]["cid"]).returncode == 0
