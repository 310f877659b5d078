"""`din node run`: long-lived nodes run a whole task with no conductor, survive kill -9 in every
phase without acting twice or losing a turn, stop cleanly on signals, and refuse bad input.

Real processes on the embedded chain (and on anvil in CI): one node for the owner, one holding
the participants, one holding the validators, as a deployment would run them.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from din_cli.errors import ExitCode

PARTICIPANTS = ("dev2", "dev3", "dev4")
VALIDATORS = ("dev5", "dev6", "dev7")
EVERY_PHASE = {
    "joining",
    "training",
    "aggregation-commit",
    "aggregation-reveal",
    "global-model",
    "test-set",
    "score-commit",
    "score-reveal",
    "settling",
    "settled",
}


def _task(run_din, env=None, rounds: int = 2, publish=("--subgroup-size", "3")) -> str:
    """dev1 publishes a task of ``rounds`` rounds over 3 participants' digits stores; its id."""
    for args in (
        ("init", "--dev-accounts", "8", "-q"),
        ("data", "split", "--dataset", "digits", "--participants", "3", "--alpha", "0.5",
         "--seed", "1", "--out", "stores"),
        ("model", "init", "--arch", "logreg:64-10", "--seed", "0", "-o", "genesis.safetensors"),
    ):  # fmt: skip
        run_din(*args, env=env, check=True)
    proc = run_din(
        "model", "publish", "genesis.safetensors", "--test-set", "stores/test.npz",
        "--deposit", "100", "--validators-per-subgroup", "3", *publish,
        "--rounds", str(rounds), "--key", "dev1", "-q", env=env, check=True,
    )  # fmt: skip
    return proc.stdout.decode().strip()


def _node_args(task: str) -> dict[str, list[str]]:
    parts = [
        f"--participant={k}=stores/participant-0{i + 1}.npz" for i, k in enumerate(PARTICIPANTS)
    ]
    return {
        "owner": ["--owner", "dev1", "--test-set", "stores/test.npz", "--min-participants", "3",
                  "--min-validators", "3"],
        "parts": ["--name", "parts", *parts, "--epochs", "3", "--lr", "0.5"],
        "vals": ["--name", "vals", *[f"--validator={k}" for k in VALIDATORS], "--stake", "100"],
    }  # fmt: skip


def _start(task: str, name: str, args: list[str], logs: Path, env=None) -> subprocess.Popen:
    out = open(logs / f"{name}.ndjson", "ab")
    err = open(logs / f"{name}.err", "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "din_cli", "node", "run", "--task", task, "--poll", "0.2",
         "--json", *args],
        stdout=out, stderr=err, env={**os.environ, **(env or {})},
    )  # fmt: skip


def _events(logs: Path, name: str) -> list[dict]:
    path = logs / f"{name}.ndjson"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait_all(procs: dict, timeout: float) -> dict[str, int]:
    end = time.monotonic() + timeout
    codes = {}
    for name, p in procs.items():
        try:
            codes[name] = p.wait(timeout=max(1.0, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs.values():
                q.kill()
            raise AssertionError(f"node {name} did not finish within {timeout} s") from None
    return codes


def _rewards(run_din, task, env=None) -> dict:
    proc = run_din("rewards", "show", "--task", task, "--json", env=env, check=True)
    return json.loads(proc.stdout)


def _check_outcome(run_din, task, logs: Path, env=None) -> dict:
    """What every honest actor is owed after a task run by nodes: settled, everyone paid, nobody slashed, no retries."""
    doc = _rewards(run_din, task, env)
    assert doc["phase"] == "settled" and doc["fully_paid"] and doc["balanced"], doc
    for p in doc["participants"]:
        assert p["score"] > 0 and p["claimed"] > 0 and p["claimable"] == 0, p
    for v in doc["validators"]:
        assert v["slashed"] == 0 and v["fee_earned"] and v["claimed"] > 0, v
    assert (
        sum(p["claimed"] for p in doc["participants"])
        + sum(v["claimed"] for v in doc["validators"])
        == doc["deposit"]
    )
    for name in ("owner", "parts", "vals"):
        events = _events(logs, name)
        retries = [e for e in events if e["event"] in ("retry", "failed")]
        assert not retries, f"node {name} retried or failed: {retries}"
    return doc


def test_nodes_run_a_whole_task_with_no_conductor(run_din, tmp_path):
    task = _task(run_din)
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = {n: _start(task, n, a, logs) for n, a in _node_args(task).items()}
    codes = _wait_all(procs, 600)
    assert codes == {"owner": 0, "parts": 0, "vals": 0}, {
        n: (logs / f"{n}.err").read_text() for n in procs
    }
    _check_outcome(run_din, task, logs)

    # one action per step per actor: each participant trained once a round, each validator
    # committed, revealed and attested once a round and scored once
    steps = Counter(
        (e["key"], e["step"], e["round"] if e["step"] in ("train", "aggregate-commit",
         "aggregate-reveal") else 0)
        for n in ("owner", "parts", "vals") for e in _events(logs, n) if e["event"] == "action"
    )  # fmt: skip
    for k in PARTICIPANTS:
        assert steps[(k, "train", 1)] == steps[(k, "train", 2)] == 1
        assert steps[(k, "join", 0)] == steps[(k, "claim", 0)] == 1
    for k in VALIDATORS:
        for r in (1, 2):
            assert steps[(k, "aggregate-commit", r)] == steps[(k, "aggregate-reveal", r)] == 1
        assert steps[(k, "score-commit", 0)] == steps[(k, "score-reveal", 0)] == 1
    assert steps[("dev1", "start", 0)] == steps[("dev1", "post-test-set", 0)] == 1
    assert steps[("dev1", "finalize", 0)] == 2  # rounds 1 and 2

    # `din node status` reads what the nodes left behind
    status = json.loads(run_din("node", "status", "--json", check=True).stdout)
    assert {s["name"]: s["state"] for s in status} == {
        "dev1": "finished",
        "parts": "finished",
        "vals": "finished",
    }
    assert all(s["tasks"][task]["phase"] == "settled" for s in status)
    text = run_din("node", "status", "vals", check=True).stdout.decode()
    assert text.startswith("vals\tfinished\t") and "claimed" in text


def test_nodes_run_a_sealed_task_granting_keys_to_the_evaluation(run_din, tmp_path):
    """Two subgroups of one validator each: each evaluation validator needs the other subgroup's
    keys, which the validator nodes grant by themselves once the evaluation is drawn."""
    task = _task(
        run_din,
        rounds=1,
        publish=("--subgroup-size", "2", "--validators-per-subgroup", "1", "--privacy", "sealed"),
    )
    status = run_din("task", "status", task, check=True).stdout.decode()
    assert "sealed: each update is readable only by" in status
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = {n: _start(task, n, a, logs) for n, a in _node_args(task).items()}
    codes = _wait_all(procs, 600)
    assert codes == {"owner": 0, "parts": 0, "vals": 0}, {
        n: (logs / f"{n}.err").read_text() for n in procs
    }
    doc = _rewards(run_din, task)
    assert doc["phase"] == "settled" and doc["fully_paid"] and doc["balanced"], doc
    assert all(p["score"] > 0 and p["claimed"] > 0 for p in doc["participants"]), doc
    assert all(v["slashed"] == 0 for v in doc["validators"]), doc
    grants = [
        e for e in _events(logs, "vals") if e["event"] == "action" and e["step"] == "grant-keys"
    ]
    assert sorted(e["key"] for e in grants) == sorted(VALIDATORS)  # once each
    assert sum(e["result"]["keys"] for e in grants) == 3  # every update's key, by its own validator


def test_nodes_killed_in_every_phase_resume_without_acting_twice(run_din, tmp_path):
    """kill -9 every node as each phase opens, and the validators' node again at a random moment
    inside it; restarted with the same options, the task still ends as if nothing happened."""
    from din_cli.protocol.context import open_context

    task = _task(run_din, rounds=1)  # one round has every phase
    logs = tmp_path / "logs"
    logs.mkdir()
    args = _node_args(task)
    procs = {n: _start(task, n, a, logs) for n, a in args.items()}
    rng = random.Random(7)
    killed: list[tuple[str, int]] = []
    seen = None
    again = None  # when to kill the validators' node once more inside the phase
    deadline = time.monotonic() + 900
    try:
        with open_context() as ctx:
            while True:
                assert time.monotonic() < deadline, f"stuck after kills in {killed}"
                info = ctx.din.task_info(int(task))
                here = (info.phase, info.round)
                if (
                    here != seen
                    and info.phase != "settled"
                    or (info.phase == "settled" and seen and seen[0] != "settled")
                ):
                    seen = here
                    for p in procs.values():
                        p.send_signal(signal.SIGKILL)
                        p.wait()
                    killed.append(here)
                    procs = {n: _start(task, n, a, logs) for n, a in args.items()}
                    # start-up takes ~2 s: in or just before a step. The loop keeps watching the
                    # phase meanwhile, so a phase the nodes finish quickly is still caught
                    again = time.monotonic() + rng.uniform(1.0, 4.0)
                elif again is not None and time.monotonic() >= again:
                    again = None
                    if procs["vals"].poll() is None:
                        procs["vals"].send_signal(signal.SIGKILL)
                        procs["vals"].wait()
                        procs["vals"] = _start(task, "vals", args["vals"], logs)
                if all(p.poll() is not None for p in procs.values()):
                    break
                time.sleep(0.05)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    codes = {n: p.returncode for n, p in procs.items()}
    assert codes == {"owner": 0, "parts": 0, "vals": 0}, {
        n: (logs / f"{n}.err").read_text()[-2000:] for n in procs
    }
    assert {phase for phase, _ in killed} == EVERY_PHASE, killed
    _check_outcome(run_din, task, logs)
    # no step was taken twice (a step whose event a kill swallowed counts 0 here, and the
    # contract would have reverted a second submit, commit or reveal: a retry, checked above)
    steps = Counter(
        (e["key"], e["step"], e["round"])
        for n in ("owner", "parts", "vals")
        for e in _events(logs, n)
        if e["event"] == "action"
    )
    assert max(steps.values()) == 1, [k for k, n in steps.items() if n > 1]


def _started(p, logs: Path, name: str, before: int) -> None:
    """Wait for this run's "started" event (the log holds ``before`` of them from earlier runs)."""
    end = time.monotonic() + 60
    while sum(e["event"] == "started" for e in _events(logs, name)) <= before:
        assert time.monotonic() < end and p.poll() is None, (logs / f"{name}.err").read_text()
        time.sleep(0.1)


def test_a_node_stops_cleanly_on_signals_and_shows_as_dead_when_killed(run_din, tmp_path):
    task = _task(run_din)
    logs = tmp_path / "logs"
    logs.mkdir()
    owner = _node_args(task)["owner"]  # waits for 3 participants that never come
    for sig, code in ((signal.SIGTERM, 0), (signal.SIGINT, ExitCode.INTERRUPTED)):
        p = _start(task, "owner", owner, logs)
        _started(p, logs, "owner", before=int(sig == signal.SIGINT))
        p.send_signal(sig)
        assert p.wait(timeout=30) == code
        assert _events(logs, "owner")[-1]["event"] == "stopped"
        status = json.loads(run_din("node", "status", "dev1", "--json", check=True).stdout)
        assert status[0]["state"] == "stopped"
    p = _start(task, "owner", owner, logs)
    _started(p, logs, "owner", before=2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    status = json.loads(run_din("node", "status", "--json", check=True).stdout)
    assert [(s["name"], s["state"]) for s in status] == [("dev1", "dead")]
    assert run_din("node", "status", "nobody").returncode == ExitCode.NOT_FOUND


BAD = [
    ((), ExitCode.USAGE, "give at least one identity"),
    (("--owner", "dev1"), ExitCode.USAGE, "--owner needs --test-set"),
    (("--test-set", "stores/test.npz"), ExitCode.USAGE, "--test-set goes with --owner"),
    (("--participant", "dev2"), ExitCode.USAGE, "is not NAME=STORE"),
    (("--participant", "dev2=nope.npz"), ExitCode.NOT_FOUND, "no such data store"),
    (("--validator", "dev5", "--validator", "dev5"), ExitCode.USAGE, "given twice"),
    (("--validator", "nobody"), ExitCode.NOT_FOUND, "nobody"),
    (("--validator", "dev5", "--task", "9"), ExitCode.NOT_FOUND, "task 9 does not exist"),
    (
        ("--participant", "dev2=stores/test.npz", "--commit-genesis"),
        ExitCode.USAGE,
        "validators' options",
    ),
    (
        ("--validator", "dev5", "--set-score", "0xabc=20000"),
        ExitCode.USAGE,
        "is not ADDRESS=BPS (0 to 10000)",
    ),
]


def test_bad_node_options_fail_in_one_line_before_anything_runs(din, run_din):
    task = _task(run_din)
    before = run_din("rewards", "show", "--task", task, "--json", check=True).stdout
    for args, code, words in BAD:
        r = din("node", "run", "--task", task, *args)
        assert r.exit_code == code, (args, r.output)
        assert words in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)
        assert r.stdout == ""
    assert not (Path(os.environ["DIN_HOME"]) / "nodes").exists()  # no node ran
    assert run_din("rewards", "show", "--task", task, "--json", check=True).stdout == before


def test_nodes_run_a_whole_task_on_anvil(run_din, tmp_path, anvil_url):
    env = {"DIN_CHAIN": anvil_url}
    task = _task(run_din, env)
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = {n: _start(task, n, a, logs, env) for n, a in _node_args(task).items()}
    codes = _wait_all(procs, 600)
    assert codes == {"owner": 0, "parts": 0, "vals": 0}, {
        n: (logs / f"{n}.err").read_text() for n in procs
    }
    _check_outcome(run_din, task, logs, env)


REPO = Path(__file__).resolve().parent.parent
ANVIL = REPO / "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"


def _until(p, logs: Path, name: str, what, timeout: float = 120) -> dict:
    """Wait for the first event of node ``name`` that ``what`` accepts; the event."""
    end = time.monotonic() + timeout
    while True:
        found = [e for e in _events(logs, name) if what(e)]
        if found:
            return found[0]
        assert time.monotonic() < end and p.poll() is None, (logs / f"{name}.err").read_text()
        time.sleep(0.2)


@pytest.mark.skipif(not ANVIL.exists(), reason="anvil is not installed (npm ci)")
def test_a_node_retries_while_its_chain_is_down_and_carries_on(run_din, tmp_path):
    """The chain node goes away under a running participant node and comes back: the node says
    it is retrying, with a bounded delay, and then trains in the round that starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script_env = {**os.environ, "ANVIL_PORT": str(port), "DIN_ANVIL_STATE": str(tmp_path / "anvil")}
    state = tmp_path / "anvil-state.json"

    def anvil(*args):
        proc = subprocess.run(
            ["bash", str(REPO / "scripts/anvil.sh"), *args],
            env=script_env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr

    anvil("start", "--state", str(state))
    env = {"DIN_CHAIN": f"http://127.0.0.1:{port}"}
    logs = tmp_path / "logs"
    logs.mkdir()
    p = None
    try:
        task = _task(run_din, env, rounds=1)
        for args in (("validator", "stake", "100"), ("validator", "join", task)):
            run_din(*args, "--key", "dev5", "-q", env=env, check=True)
        p = _start(task, "dev2", ["--participant", "dev2=stores/participant-01.npz",
                                  "--max-backoff", "1"], logs, env)  # fmt: skip
        _until(p, logs, "dev2", lambda e: e.get("step") == "join")
        anvil("stop")
        retry = _until(p, logs, "dev2", lambda e: e["event"] == "retry", timeout=60)
        assert "127.0.0.1" in retry["error"] or "reach" in retry["error"], retry
        time.sleep(3)  # several retries, each at most --max-backoff apart
        delays = [e["delay"] for e in _events(logs, "dev2") if e["event"] == "retry"]
        assert len(delays) >= 2 and max(delays) <= 1, delays
        anvil("start", "--state", str(state))
        run_din("round", "start", "--task", task, "--key", "dev1", "-q", env=env, check=True)
        trained = _until(p, logs, "dev2", lambda e: e.get("step") == "train")
        assert trained["round"] == 1 and trained["result"]["cid"].startswith("bafkrei")
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=60) == 0
    finally:
        if p is not None and p.poll() is None:
            p.kill()
        anvil("stop")


def test_a_straggler_does_not_block_the_round_nodes_advance_past_the_deadline(run_din, tmp_path):
    """dev3 joins and never trains. Nobody else sends a transaction while the training phase
    waits for it, so only the nodes' clock can see the deadline pass: they advance the task,
    and it settles with dev3 paid nothing."""
    for args in (
        ("init", "--dev-accounts", "8", "-q"),
        ("data", "split", "--dataset", "digits", "--participants", "2", "--seed", "1",
         "--out", "stores"),
        ("model", "init", "--arch", "logreg:64-10", "--seed", "0", "-o", "genesis.safetensors"),
    ):  # fmt: skip
        run_din(*args, check=True)
    task = run_din(
        "model", "publish", "genesis.safetensors", "--test-set", "stores/test.npz",
        "--deposit", "100", "--subgroup-size", "2", "--validators-per-subgroup", "1",
        "--rounds", "1", "--phase-seconds", "40", "--key", "dev1", "-q", check=True,
    ).stdout.decode().strip()  # fmt: skip
    run_din("participant", "join", task, "--key", "dev3", "-q", check=True)
    logs = tmp_path / "logs"
    logs.mkdir()
    args = {
        "owner": ["--owner", "dev1", "--test-set", "stores/test.npz", "--min-participants", "2"],
        "parts": ["--name", "parts", "--participant", "dev2=stores/participant-01.npz"],
        "vals": ["--name", "vals", "--validator", "dev5", "--stake", "100"],
    }
    procs = {n: _start(task, n, a, logs) for n, a in args.items()}
    codes = _wait_all(procs, 600)
    assert codes == {"owner": 0, "parts": 0, "vals": 0}, {
        n: (logs / f"{n}.err").read_text() for n in procs
    }
    advanced = [
        e
        for n in procs
        for e in _events(logs, n)
        if e["event"] == "action" and e["step"] == "advance"
    ]
    assert advanced and advanced[0]["phase"] == "training", advanced
    doc = _rewards(run_din, task)
    paid = {p["address"]: p["claimed"] for p in doc["participants"]}
    keys = dict(line.split("\t") for line in run_din("keys", "list").stdout.decode().splitlines())
    assert doc["phase"] == "settled" and paid[keys["dev3"]] == 0 and paid[keys["dev2"]] > 0, doc


def test_a_step_that_keeps_reverting_stops_the_node_with_its_error(run_din, tmp_path):
    """dev5 cannot afford the stake it is told to keep: each try reverts; after 8 the node stops
    with the contract's reason on one line and exit 5, having backed off between tries."""
    task = _task(run_din, rounds=1)
    logs = tmp_path / "logs"
    logs.mkdir()
    p = _start(task, "vals", ["--name", "vals", "--validator", "dev5", "--stake", "1000000000",
                              "--max-backoff", "0.4"], logs)  # fmt: skip
    assert p.wait(timeout=120) == ExitCode.TX_REVERTED
    events = _events(logs, "vals")
    retries = [e for e in events if e["event"] == "retry"]
    assert len(retries) == 7 and all(e["step"] == "stake" for e in retries)
    assert [e["delay"] for e in retries] == [0.4] * 7  # --poll 0.2 doubled, capped at 0.4
    assert events[-1]["event"] == "failed" and "stake for task" in events[-1]["error"]
    err = (logs / "vals.err").read_text().strip().splitlines()
    assert err[-1].startswith("din: error: validator dev5: stake for task") and "8 times" in err[-1]
    assert (
        json.loads(run_din("node", "status", "vals", "--json", check=True).stdout)[0]["state"]
        == "failed"
    )
