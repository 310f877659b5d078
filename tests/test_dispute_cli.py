"""A dishonest majority loses, with din's own commands on the embedded chain (and anvil when set).

One subgroup of 5 validators; 3 of them collude in round 2 and reveal a
well-formed but wrong aggregate (FedAvg of one update of two), which the
contract accepts. `din verify` names it; anyone files `din round dispute`;
a committee of the other stakers, drawn after the filing, recomputes and
votes; `din dispute resolve` slashes and removes the colluders, leaves the
honest two untouched and unslashable, and replays the round from the model
it started from; `din verify` then holds. Filing against a correct result is
refused and files nothing.
"""

from __future__ import annotations

import json

import pytest

from din_cli.errors import ExitCode

OWNER, PARTS = "dev1", ("dev2", "dev3")
VALS = ("dev4", "dev5", "dev6", "dev7", "dev8")
COLLUDERS, HONEST = VALS[:3], VALS[3:]
STAKERS = ("dev9", "dev10", "dev11")  # staked, not in the task: the committee is drawn from them
FILER = "dev12"


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def fields(text: str) -> dict:
    return dict(line.split("\t", 1) for line in text.splitlines())


def _started_task(din, *, rounds: int, privacy: str) -> tuple[str, dict]:
    """One subgroup of the 2 participants and the 5 validators, the committee's stakers staked,
    round 1 started; ``(task id, {key name: address})``."""
    ok(din("init", "--dev-accounts", "12", "-q"))
    ok(din("data", "split", "--dataset", "digits", "--participants", "2", "--out", "stores"))
    ok(din("model", "init", "--arch", "logreg:64-10", "--seed", "0", "-o", "genesis.safetensors"))
    task = ok(
        din(
            "model", "publish", "genesis.safetensors", "--test-set", "stores/test.npz",
            "--deposit", "100", "--subgroup-size", "2", "--validators-per-subgroup", "5",
            "--rounds", str(rounds), "--privacy", privacy, "--key", OWNER, "-q",
        )
    ).strip()  # fmt: skip
    addr = {k: ok(din("keys", "show", k, "--field", "address")).strip() for k in VALS + STAKERS}
    for v in VALS + STAKERS:
        ok(din("validator", "stake", "100", "--key", v, "-q"))
    for v in VALS:
        ok(din("validator", "join", task, "--key", v, "-q"))
    for p in PARTS:
        ok(din("participant", "join", task, "--key", p, "-q"))
    ok(din("round", "start", "--task", task, "--key", OWNER, "-q"))
    return task, addr


@pytest.fixture(params=["embedded", "anvil"])
def chain_env(request, monkeypatch):
    if request.param == "anvil":
        monkeypatch.setenv("DIN_CHAIN", request.getfixturevalue("anvil_url"))
    return request.param


def test_a_colluding_majority_is_overturned_by_a_dispute(din, chain_env):
    task, addr = _started_task(din, rounds=2, privacy="open")

    def train(r):
        for i, p in enumerate(PARTS):
            ok(din("train", "--task", task, "--data", f"stores/participant-0{i + 1}.npz", "--submit",
                   "--epochs", "2", "--lr", "0.5", "--seed", str(r), "--key", p, "-q"))  # fmt: skip

    def aggregate(wrong=None):
        for v in VALS:
            liar = ["--cid", wrong] if wrong and v in COLLUDERS else []
            ok(din("aggregate", "--task", task, "--commit", *liar, "--key", v, "-q"))
        for v in VALS:
            ok(din("aggregate", "--task", task, "--reveal", "--key", v, "-q"))

    def status():
        return json.loads(ok(din("round", "status", "--task", task, "--json")))

    # round 1 is honest: its accepted result is correct, and disputing it is refused
    train(1)
    aggregate()
    refused = din("round", "dispute", "--task", task, "--round", "1", "--group", "0",
                  "--key", FILER)  # fmt: skip
    assert refused.exit_code == ExitCode.USAGE and refused.stdout == ""
    assert refused.stderr.count("\n") == 1 and "recomputes exactly" in refused.stderr
    assert ok(din("dispute", "status", "--task", task)) == ""  # nothing filed
    assert status()["phase"] == "global-model"
    model1 = ok(din("round", "finalize", "--task", task, "--key", OWNER, "-q")).strip()
    for v in VALS:
        assert din("round", "attest", "--task", task, "--key", v, "-q").exit_code in (0, 7)
    assert (status()["phase"], status()["round"], status()["model"]) == ("training", 2, model1)

    # round 2: 3 of 5 reveal a valid but wrong aggregate (one update left out); it is accepted
    train(2)
    first = status()["current_round"]["updates"][0]["cid"]
    ok(din("aggregate", first, "-o", "partial.safetensors", "-q"))
    wrong = ok(din("ipfs", "add", "partial.safetensors")).strip()
    aggregate(wrong)
    assert status()["current_round"]["accepted"] == {"0": wrong}
    audit = din("verify", "--task", task)
    assert audit.exit_code == ExitCode.VERIFICATION_FAILED
    assert f"2\tsubgroup\t0\tFAIL\t{wrong}" in audit.stdout.splitlines()
    assert "round 2: subgroup 0's aggregate on chain is " + wrong in audit.stderr

    stake = {
        v: json.loads(ok(din("validator", "info", "--key", v, "--json")))["stake"] for v in VALS
    }
    did = ok(din("round", "dispute", "--task", task, "--round", "2", "--group", "0",
                 "--key", FILER, "-q")).strip()  # fmt: skip
    assert did == "1"
    again = din("round", "dispute", "--task", task, "--round", "2", "--group", "0", "--key", FILER)
    assert again.exit_code == ExitCode.ALREADY_DONE, again.output
    assert status()["phase"] == "disputed" and status()["disputes"][0]["state"] == "filed"
    # nobody but the committee may vote, and nobody resolves before the draw
    assert din("dispute", "vote", did, "--key", VALS[3]).exit_code == ExitCode.NOT_FOUND
    early = din("dispute", "resolve", did, "--key", FILER)
    assert early.exit_code == ExitCode.USAGE and "din dispute draw" in early.stderr

    committee = ok(din("dispute", "draw", did, "--key", FILER, "-q")).split()
    assert sorted(committee) == sorted(addr[s] for s in STAKERS)  # never the subgroup's own
    by_addr = {addr[s]: s for s in STAKERS}
    right = None
    for m in committee:
        right = ok(din("dispute", "vote", did, "--key", by_addr[m], "-q")).strip()
    assert right != wrong
    for m in committee:
        assert (
            ok(din("dispute", "vote", did, "--reveal", "--key", by_addr[m], "-q")).strip() == right
        )
    shown = json.loads(ok(din("dispute", "status", did, "--json")))
    assert shown["revealed"] == 3 and {c["cid"] for c in shown["committee"]} == {right}
    assert shown["accepted"] == wrong and shown["claimed"] == right

    line = ok(din("dispute", "resolve", did, "--key", FILER, "-q")).strip()
    assert line == f"{did}\tupheld\t2\t0\t{right}"
    assert din("dispute", "resolve", did, "--key", FILER).exit_code == ExitCode.ALREADY_DONE

    slash = 10 * 10**18  # the task's slash amount: a tenth of the minimum stake
    after = {
        v: json.loads(ok(din("validator", "info", "--key", v, "--json")))["stake"] for v in VALS
    }
    for v in COLLUDERS:
        assert after[v] == stake[v] - slash, v
    for v in HONEST:
        assert after[v] == stake[v], v
    # the honest minority cannot be slashed for round 2: the committee's CID is its majority now
    assert ok(din("round", "slash", "--task", task, "--round", "2", "--key", FILER, "-q")) == ""
    assert all(
        json.loads(ok(din("validator", "info", "--key", v, "--json")))["stake"] == stake[v]
        for v in HONEST
    )
    shown = json.loads(ok(din("rewards", "show", "--task", task, "--json")))
    removed = {v["address"] for v in shown["validators"] if v["slashed"]}
    assert removed == {addr[v] for v in COLLUDERS}

    # replayed: a new round 3 from the model round 2 started from (round 1's global model)
    now = status()
    assert (now["phase"], now["round"], now["model"]) == ("training", 3, model1)
    assert now["overturned"] == {"2/0": 1} and now["discarded"] == [2]
    plain = fields(ok(din("round", "status", "--task", task)))
    assert plain["disputes"] == "1:upheld" and plain["overturned"] == "2/0"

    clean = din("verify", "--task", task)
    assert clean.exit_code == 0, clean.output
    assert f"2\tsubgroup\t0\tok\t{right}" in clean.stdout.splitlines()
    assert "overturned by dispute 1" in clean.stderr

    # the replay: the removed three cannot act, and the honest two decide it (their commit
    # counts the removed slots out), so training goes on from a correct model
    train(3)
    for v in COLLUDERS:
        out = din("aggregate", "--task", task, "--commit", "--key", v)
        assert out.exit_code != 0 and "slashed out of this task" in out.stderr
    for v in HONEST:
        ok(din("aggregate", "--task", task, "--commit", "--key", v, "-q"))
    assert status()["phase"] == "aggregation-reveal"  # no wait for the removed slots
    assert sorted(status()["current_round"]["counted_out"]) == sorted(addr[v] for v in COLLUDERS)
    for v in HONEST:
        ok(din("aggregate", "--task", task, "--reveal", "--key", v, "-q"))
    replayed = status()["current_round"]["accepted"]["0"]
    model3 = ok(din("round", "finalize", "--task", task, "--key", OWNER, "-q")).strip()
    for v in HONEST:
        assert din("round", "attest", "--task", task, "--key", v, "-q").exit_code in (0, 7)
    assert status()["phase"] == "test-set" and model3 != model1
    audit = din("verify", "--task", task)
    assert audit.exit_code == 0, audit.output
    assert f"3\tsubgroup\t0\tok\t{replayed}" in audit.stdout.splitlines()


def test_a_colluding_majority_is_overturned_in_a_sealed_task(din, chain_env):
    """Sealed: only the subgroup's validators read its updates, so an honest one of them files, and
    the committee (stakers outside the task) votes once it granted them the subgroup's keys."""
    task, addr = _started_task(din, rounds=1, privacy="sealed")
    genesis = ok(din("ipfs", "add", "genesis.safetensors")).strip()
    for i, p in enumerate(PARTS):
        ok(din("train", "--task", task, "--data", f"stores/participant-0{i + 1}.npz", "--submit",
               "--epochs", "2", "--lr", "0.5", "--key", p, "-q"))  # fmt: skip
    for v in VALS:  # the three colluders reveal the starting model: every update "left out"
        liar = ["--cid", genesis] if v in COLLUDERS else []
        ok(din("aggregate", "--task", task, "--commit", *liar, "--key", v, "-q"))
    for v in VALS:
        ok(din("aggregate", "--task", task, "--reveal", "--key", v, "-q"))
    # an outsider cannot check the subgroup; its honest validator can, and files
    blind = din("verify", "--task", task)
    assert blind.exit_code == 0 and f"1\tsubgroup\t0\tsealed\t{genesis}" in blind.stdout
    assert "sealed; only its validators can check it" in blind.stderr
    seen = din("verify", "--task", task, "--key", HONEST[0])
    assert seen.exit_code == ExitCode.VERIFICATION_FAILED, seen.output
    assert f"1\tsubgroup\t0\tFAIL\t{genesis}" in seen.stdout
    outsider = din("round", "dispute", "--task", task, "--round", "1", "--group", "0",
                   "--key", FILER)  # fmt: skip
    assert outsider.exit_code == ExitCode.USAGE and "has no key" in outsider.stderr
    filer = HONEST[0]
    did = ok(din("round", "dispute", "--task", task, "--round", "1", "--group", "0",
                 "--key", filer, "-q")).strip()  # fmt: skip
    committee = ok(din("dispute", "draw", did, "--key", filer, "-q")).split()
    assert sorted(committee) == sorted(addr[s] for s in STAKERS)
    by_addr = {addr[s]: s for s in STAKERS}
    blind = din("dispute", "vote", did, "--key", by_addr[committee[0]])
    assert blind.exit_code == ExitCode.USAGE and "has no key" in blind.stderr
    granted = json.loads(ok(din("keys", "grant", "--task", task, "--dispute", did,
                                "--key", filer, "--json")))  # fmt: skip
    assert granted["keys"] == 2 and sorted(granted["readers"]) == sorted(committee)
    votes = {ok(din("dispute", "vote", did, "--key", by_addr[m], "-q")).strip() for m in committee}
    assert len(votes) == 1 and genesis not in votes
    for m in committee:
        ok(din("dispute", "vote", did, "--reveal", "--key", by_addr[m], "-q"))
    line = ok(din("dispute", "resolve", did, "--key", filer, "-q")).strip()
    assert line == f"{did}\tupheld\t1\t0\t{votes.pop()}"
    shown = json.loads(ok(din("rewards", "show", "--task", task, "--json")))
    assert {v["address"] for v in shown["validators"] if v["slashed"]} == {
        ok(din("keys", "show", v, "--field", "address")).strip() for v in COLLUDERS
    }


def _scored_by_colluders(din, privacy: str) -> tuple[str, dict, list[str]]:
    """A one-round task trained and aggregated honestly, its test set posted, and the three
    colluders' scores giving the first participant everything: the task settles;
    ``(task, {key: address}, participant addresses)``."""
    task, addr = _started_task(din, rounds=1, privacy=privacy)
    for i, p in enumerate(PARTS):
        ok(din("train", "--task", task, "--data", f"stores/participant-0{i + 1}.npz", "--submit",
               "--epochs", "2", "--lr", "0.5", "--key", p, "-q"))  # fmt: skip
    for step in ("--commit", "--reveal"):
        for v in VALS:
            ok(din("aggregate", "--task", task, step, "--key", v, "-q"))
    ok(din("round", "finalize", "--task", task, "--key", OWNER, "-q"))
    for v in VALS:
        assert din("round", "attest", "--task", task, "--key", v, "-q").exit_code in (0, 7)
    ok(din("round", "test-set", "--task", task, "--data", "stores/test.npz", "--key", OWNER, "-q"))
    if privacy == "sealed":
        for v in VALS:
            ok(din("keys", "grant", "--task", task, "--key", v, "-q"))
    parts = [ok(din("keys", "show", p, "--field", "address")).strip() for p in PARTS]
    lie = ["--set-score", f"{parts[0]}=10000", "--set-score", f"{parts[1]}=0"]
    for v in VALS:
        ok(din("evaluate", "--task", task, "--commit", *(lie if v in COLLUDERS else []),
               "--key", v, "-q"))  # fmt: skip
    for v in VALS:
        ok(din("evaluate", "--task", task, "--reveal", "--key", v, "-q"))
    return task, addr, parts


@pytest.mark.parametrize("privacy", ["open", "sealed"])
def test_a_colluding_evaluation_majority_is_overturned_by_a_dispute(din, chain_env, privacy):
    """3 of the 5 evaluation validators reveal scores that give one participant everything. The
    subgroup disagrees, so it cannot settle at once; an honest validator (it holds K) files,
    grants K (and, sealed, the update keys) to a committee of stakers outside the subgroup, which
    rescores and decides; settlement pays by the committee's vector and slashes the three."""
    task, addr, parts = _scored_by_colluders(din, privacy)
    early = din("rewards", "settle", "--task", task, "--key", FILER)
    assert early.exit_code == ExitCode.USAGE and "disagree" in early.stderr, early.output
    assert early.stderr.count("\n") == 1
    outsider = din("round", "dispute", "--task", task, "--round", "0", "--group", "0",
                   "--key", FILER)  # fmt: skip
    assert outsider.exit_code == ExitCode.USAGE and "holds no test-set key" in outsider.stderr
    stake = {
        v: json.loads(ok(din("validator", "info", "--key", v, "--json")))["stake"] for v in VALS
    }
    filer = HONEST[0]
    did = ok(din("round", "dispute", "--task", task, "--round", "0", "--group", "0",
                 "--key", filer, "-q")).strip()  # fmt: skip
    committee = ok(din("dispute", "draw", did, "--key", filer, "-q")).split()
    assert sorted(committee) == sorted(addr[s] for s in STAKERS)
    by_addr = {addr[s]: s for s in STAKERS}
    blind = din("dispute", "vote", did, "--key", by_addr[committee[0]])
    assert blind.exit_code == ExitCode.USAGE and "no grant of the test set's key" in blind.stderr
    granted = json.loads(ok(din("keys", "grant", "--task", task, "--dispute", did,
                                "--key", filer, "--json")))  # fmt: skip
    assert granted["keys"] == (1 if privacy == "open" else 3)  # K, and the two updates' keys
    votes = {ok(din("dispute", "vote", did, "--key", by_addr[m], "-q")).strip() for m in committee}
    shown = json.loads(ok(din("dispute", "status", did, "--json")))
    honest = shown["claimed"]  # the filer's vector, which every member recomputed
    claimed = " ".join(map(str, honest))
    assert votes == {claimed} and sorted(shown["accepted"]) == [0, 10000] != sorted(honest)
    for m in committee:
        ok(din("dispute", "vote", did, "--reveal", "--key", by_addr[m], "-q"))
    line = ok(din("dispute", "resolve", did, "--key", filer, "-q")).strip()
    assert line == f"{did}\tupheld\t0\t0\t{claimed}"
    ok(din("rewards", "settle", "--task", task, "--key", FILER, "-q"))
    slash = 10 * 10**18
    for v in VALS:
        now = json.loads(ok(din("validator", "info", "--key", v, "--json")))["stake"]
        assert now == stake[v] - (slash if v in COLLUDERS else 0), v
    shown = json.loads(ok(din("rewards", "show", "--task", task, "--json")))
    scores = {p["address"]: p["score"] for p in shown["participants"]}
    assert sorted(scores[a] for a in parts) == sorted(honest)  # paid by the committee's scores


def test_an_outvoted_validator_node_disputes_the_scores_by_itself(din, tmp_path):
    """The honest minority runs a node: it files the score dispute, draws the committee, grants
    it K, resolves once the committee voted, settles by the committee's vector and claims."""
    import os
    import subprocess
    import sys
    import time

    task, addr, _ = _scored_by_colluders(din, "open")
    log = open(tmp_path / "node.ndjson", "wb")
    err = open(tmp_path / "node.err", "wb")
    node = subprocess.Popen(
        [sys.executable, "-m", "din_cli", "node", "run", "--task", task, "--poll", "0.2",
         "--json", "--validator", HONEST[0]],
        stdout=log, stderr=err, env=dict(os.environ),
    )  # fmt: skip
    try:
        by_addr = {addr[s]: s for s in STAKERS}
        end = time.monotonic() + 180
        voted: set = set()
        while len(voted) < len(STAKERS):  # members vote once the node drew them and granted K
            assert time.monotonic() < end, (tmp_path / "node.err").read_text()
            assert node.poll() is None, (tmp_path / "node.err").read_text()
            shown = json.loads(ok(din("dispute", "status", "--task", task, "--json")) or "[]")
            if shown and shown[0]["state"] == "drawn":
                for m in shown[0]["committee"]:
                    who = by_addr[m["member"]]
                    if (
                        who not in voted
                        and din("dispute", "vote", "1", "--key", who, "-q").exit_code == 0
                    ):
                        voted.add(who)
            time.sleep(0.5)
        for s in STAKERS:
            ok(din("dispute", "vote", "1", "--reveal", "--key", s, "-q"))
        assert node.wait(timeout=180) == 0, (tmp_path / "node.err").read_text()
    finally:
        node.kill()
    steps = [
        json.loads(line).get("step") for line in (tmp_path / "node.ndjson").read_text().splitlines()
    ]
    for step in (
        "dispute-scores",
        "dispute-draw",
        "dispute-grant",
        "dispute-resolve",
        "settle",
        "claim",
    ):
        assert step in steps, steps
    shown = json.loads(ok(din("rewards", "show", "--task", task, "--json")))
    slashed = {v["address"] for v in shown["validators"] if v["slashed"]}
    assert slashed == {addr[v] for v in COLLUDERS}


def test_dispute_commands_refuse_bad_ids_in_one_line(din):
    ok(din("init", "--dev-accounts", "2", "-q"))
    for args, code, says in [
        (("dispute", "status"), ExitCode.USAGE, "give a dispute ID or --task"),
        (("dispute", "status", "1", "--task", "1"), ExitCode.USAGE, "give a dispute ID or --task"),
        (("dispute", "status", "zero"), ExitCode.USAGE, "not a dispute id"),
        (("dispute", "status", "7"), ExitCode.NOT_FOUND, "dispute 7 does not exist"),
        (("dispute", "draw", "7", "--key", "dev1"), ExitCode.NOT_FOUND, "dispute 7 does not exist"),
        (("dispute", "status", "--task", "3"), ExitCode.NOT_FOUND, "task 3 does not exist"),
    ]:
        r = din(*args)
        assert r.exit_code == code, (args, r.output)
        assert r.stdout == "" and r.stderr.count("\n") == 1 and says in r.stderr, (args, r.stderr)
