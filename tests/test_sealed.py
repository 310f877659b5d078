"""Sealed tasks: updates encrypted to the validators who must read them, on both chains.

The attacker tests play an outsider, a curious participant and an unassigned
validator (none of them reads an update), and a participant that seals wrongly
(garbage for one of its validators, plaintext, a copy of someone else's
sealed update): every validator of its subgroup refuses it alike, so nobody is
slashed for it and the round goes on.
"""

from __future__ import annotations

import json
import os

import pytest
from round_world import World, identity

from din_cli.crypto import aead, hpke, seal
from din_cli.errors import DinError, TransactionReverted, VerificationError
from din_cli.ml import tensorfile
from din_cli.protocol import evaluation, roundflow, sealing
from din_cli.protocol.cids import to_bytes, to_text

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SEALED = dict(participants=4, validators=4, subgroup_size=2, per_group=2, privacy_mode="sealed")


def _by_address(w):
    return {x.address: x for x in [w.owner, *w.parts, *w.vals]}


def _group_validators(w, round_, group):
    by = _by_address(w)
    return [by[a] for a in w.din.members(w.task, group, round_)["validators"]]


# --- the file format ---------------------------------------------------------


def test_a_sealed_file_opens_for_each_recipient_and_every_wrap_is_checkable(tmp_path):
    plain = tmp_path / "u.bin"
    plain.write_bytes(os.urandom(3000) + b"din.samples")
    readers = [identity(f"v{i}") for i in range(3)]
    b = seal.UpdateBinding(31337, 5, 2, readers[0].address)
    key = seal.seal_file(
        plain, tmp_path / "u.sealed", b, [(r.address, r.hpke_public) for r in readers]
    )
    raw = (tmp_path / "u.sealed").read_bytes()
    assert raw.startswith(b"din-seal") and b"din.samples" not in raw
    s = seal.read_header(tmp_path / "u.sealed")
    for r in readers:
        assert seal.open_key(s, r.address, r.hpke_private) == key
    publics = {r.address.lower(): r.hpke_public for r in readers}
    assert seal.check_wraps(s, key, publics) is None
    seal.open_file(tmp_path / "u.sealed", tmp_path / "u.out", key)
    assert (tmp_path / "u.out").read_bytes() == plain.read_bytes()
    # a wrong key opens nothing, and writes nothing
    with pytest.raises(VerificationError):
        seal.open_file(tmp_path / "u.sealed", tmp_path / "bad.out", aead.generate_key())
    assert not (tmp_path / "bad.out").exists()
    # a wrap made to another key for readers[1] is caught by whoever holds U
    wrong = [(r.address, r.hpke_public) for r in readers]
    wrong[1] = (readers[1].address, hpke.generate_keypair()[1])
    key2 = seal.seal_file(plain, tmp_path / "w.sealed", b, wrong)
    s2 = seal.read_header(tmp_path / "w.sealed")
    with pytest.raises(VerificationError):
        seal.open_key(s2, readers[1].address, readers[1].hpke_private)
    assert readers[1].address in seal.check_wraps(s2, key2, publics)


def test_derived_hpke_is_standard_hpke_with_the_derived_ephemeral_key():
    from pyhpke import AEADId, CipherSuite, KDFId, KEMId

    suite = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES256_GCM)
    sk, pk = hpke.generate_keypair()
    ikm, msg, info = os.urandom(32), os.urandom(32), b"din test"
    ours = hpke.seal_derived(pk, msg, info=info, ikm=ikm)
    assert ours == hpke.seal_derived(pk, msg, info=info, ikm=ikm)  # a function of its inputs
    enc, ctx = suite.create_sender_context(
        suite.kem.deserialize_public_key(pk), info=info, eks=suite.kem.derive_key_pair(ikm)
    )
    assert enc + ctx.seal(msg) == ours  # RFC 9180 DeriveKeyPair + Encap, as pyhpke computes them
    assert hpke.unseal(sk, ours, info=info) == msg


# --- a whole sealed task -----------------------------------------------------


def test_a_sealed_task_runs_and_only_the_readers_it_names_read_an_update(tmp_path, deployed):
    w = World(tmp_path, deployed=deployed, rounds=1, **SEALED)
    info = w.din.task_info(w.task)
    assert info.privacy_mode == "sealed" and info.privacy.startswith("sealed")
    roundflow.start(w.ctx(w.owner), w.task)
    docs = w.train_all()
    updates = w.din.updates_submitted(w.task, 1)
    assert sorted(to_text(u.cid) for u in updates) == sorted(d["cid"] for d in docs)
    eve = identity("eve")
    for u in updates:
        raw = w.ctx().fetch(u.cid, tmp_path / "raw")
        sealed_bytes = raw.read_bytes()
        assert seal.is_sealed(raw) and b"din.samples" not in sealed_bytes
        with pytest.raises(DinError):  # not a safetensors file at all
            tensorfile.read_header(raw)
        readers = _group_validators(w, 1, u.group)
        others = [v for v in w.vals if v not in readers]
        peer = next(p for p in w.parts if p.address != u.participant)
        # an outsider, the owner, a curious participant, the validators of other subgroups
        for who in [eve, w.owner, peer, *others]:
            with pytest.raises(sealing.KeyMissing):
                sealing.open_update(w.ctx(who), w.task, info, u, tmp_path / "x")
            assert not (tmp_path / "x").exists()
        for v in readers:
            got = sealing.open_update(w.ctx(v), w.task, info, u, tmp_path / f"{v.name}.st")
            assert tensorfile.read_header(got).kind == "update"
            plain = got.read_bytes()
            for at in range(len(plain) - 4096, len(plain), 512):  # none of its weights' bytes
                assert plain[at : at + 32] not in sealed_bytes
        with pytest.raises(
            sealing.KeyMissing
        ):  # what a reader opened stays its own, in one process too
            sealing.open_update(w.ctx(others[0]), w.task, info, u, tmp_path / "x")
    assert w.phase() == "aggregation-commit"  # every participant submitted
    w.aggregate_all()
    w.finalize_and_attest()
    assert w.phase() == "test-set"
    # each accepted aggregate is what open mode computes from the same (plaintext) updates
    from din_cli.chain.din import task_rule
    from din_cli.protocol import admission

    task = w.din.task_info(w.task)
    start = w.ctx().fetch(w.din.round_info(w.task, 1).model_cid, tmp_path / "start.st")
    for g, cid in w.din.accepted_aggregates(w.task, 1).items():
        reader = _group_validators(w, 1, g)[0]
        ups = w.din.updates_submitted(w.task, 1, g)
        plain = [
            sealing.open_update(w.ctx(reader), w.task, info, u, tmp_path / f"g{g}-{k}.st")
            for k, u in enumerate(ups)
        ]
        admission.aggregate(
            plain,
            tmp_path / f"open-{g}.st",
            rule=task_rule(task),
            base=start,
            max_samples=task.max_samples,
            ids=[to_text(u.cid) for u in ups],
        )
        assert w.ctx().add(tmp_path / f"open-{g}.st") == to_text(cid)
    for g, cid in w.din.accepted_aggregates(w.task, 1).items():  # aggregates stay readable
        assert tensorfile.read_header(w.ctx().fetch(cid, tmp_path / f"agg{g}")).kind == "aggregate"
    # the evaluation needs every update: a validator that lacks the other subgroup's keys waits
    first = _group_validators(w, 1, 0)
    for v in first:
        assert sealing.grant_for_evaluation(w.ctx(v), w.task)["keys"] == 2
    with pytest.raises(DinError, match="already granted"):
        sealing.grant_for_evaluation(w.ctx(first[0]), w.task)
    evaluation.post_test_set(w.ctx(w.owner), w.task, w.test_store)
    # griefers grant wrong keys for the other subgroup's updates: an outsider's grant is not even
    # fetched, and a validator's fails the key check
    w.chain.fund(eve.address, 10**18)
    theirs = [to_text(u.cid) for u in updates if u.group == 1]
    for griefer in (eve, first[1]):
        bogus = seal.grant_document(
            int(w.chain.chain_id),
            w.task,
            griefer.address,
            [(c, aead.generate_key()) for c in theirs],
            [(first[0].address, first[0].hpke_public)],
        )
        (tmp_path / "bogus.json").write_text(json.dumps(bogus))
        cid = w.ctx().add(tmp_path / "bogus.json")
        w.din.grant_keys(griefer.account, w.task, to_bytes(cid))
    with pytest.raises(sealing.KeyMissing, match="has no key for"):
        evaluation.evaluate_commit(w.ctx(first[0]), w.task)
    for v in _group_validators(w, 1, 1):
        sealing.grant_for_evaluation(w.ctx(v), w.task)
    for v in w.assigned(0):
        evaluation.evaluate_commit(w.ctx(v), w.task)
    if w.phase() == "score-commit":
        w.advance()
    for v in w.assigned(0):
        evaluation.evaluate_reveal(w.ctx(v), w.task)
    if w.phase() == "score-reveal":
        w.advance()
    paid = w.settle_and_claim()
    assert all(paid[p.name] > 0 for p in w.parts)
    assert sum(paid.values()) == w.din.task_info(w.task).deposit
    assert not any(w.din.removed(w.task, v.address) for v in w.vals)


def _train_offline(w, tmp_path, i):
    from din_cli.ml.train import train

    start = w.ctx().fetch(w.din.round_info(w.task, 1).model_cid, tmp_path / "start.st")
    out = tmp_path / f"p{i}.st"
    train(start, w.stores[i], out, epochs=2, lr=0.5, batch_size=32, seed=1)
    return out


def test_a_participant_that_seals_wrongly_is_refused_alike_by_every_validator(tmp_path, deployed):
    w = World(tmp_path, deployed=deployed, rounds=1, **SEALED)
    ctx0 = w.ctx(w.owner)
    roundflow.start(ctx0, w.task)
    w.din.advance(w.owner.account, w.task)  # draws round 1's subgroups
    chain_id = int(w.chain.chain_id)
    p0, p1, p2, p3 = w.parts
    # p0 wraps garbage for the first validator of its subgroup
    g0 = w.din.subgroup_of(w.task, p0.address, 1).group
    readers = [(v.address, v.hpke_public) for v in _group_validators(w, 1, g0)]
    readers[0] = (readers[0][0], hpke.generate_keypair()[1])
    b = seal.UpdateBinding(chain_id, w.task, 1, p0.address)
    seal.seal_file(_train_offline(w, tmp_path, 0), tmp_path / "p0.sealed", b, readers)
    w.din.submit_update(p0.account, w.task, to_bytes(w.ctx().add(tmp_path / "p0.sealed")))
    # p1 is honest; p2 submits its update in the clear; p3 copies p1's sealed update
    honest = roundflow.train_and_submit(w.ctx(p1), w.task, w.stores[1], epochs=2)
    w.din.submit_update(p2.account, w.task, to_bytes(w.ctx().add(_train_offline(w, tmp_path, 2))))
    w.din.submit_update(p3.account, w.task, to_bytes(honest["cid"]))
    assert w.phase() == "aggregation-commit"
    want = {
        p0.address: "bad-seal",
        p1.address: None,
        p2.address: "not-sealed",
        p3.address: "bad-seal",
    }
    for g in range(w.din.task_info(w.task).groups):
        seen = set()
        for v in _group_validators(w, 1, g):
            work = tmp_path / f"judge-{v.name}-{g}"
            work.mkdir()
            _, judged = roundflow.subgroup_result(w.ctx(v), w.task, 1, g, work, aggregate=False)
            updates = w.din.updates_submitted(w.task, 1, g)
            verdicts = tuple(
                (u.participant, None if x.admitted else x.reason)
                for u, x in zip(updates, judged.verdicts, strict=True)
            )
            for who, reason in verdicts:
                assert reason == want[who], (who, reason)
            seen.add(verdicts)
        assert len(seen) == 1  # the subgroup's validators agree exactly
    w.aggregate_all()
    w.finalize_and_attest()
    assert w.phase() == "test-set"
    assert not any(w.din.removed(w.task, v.address) for v in w.vals)


def test_the_contract_refuses_an_unknown_privacy_mode(tmp_path, deployed, monkeypatch):
    from din_cli.chain import din as din_mod

    monkeypatch.setattr(din_mod, "PRIVACY_MODES", ("open", "sealed", "secagg", "bogus"))
    with pytest.raises(TransactionReverted, match="bad privacy mode"):
        World(tmp_path, deployed=deployed, privacy_mode="bogus")


def test_the_cli_publishes_sealed_by_default_and_shows_it(run_din):
    from din_cli.errors import ExitCode

    def ok(*args):
        proc = run_din(*args)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        return proc.stdout.decode()

    ok("init", "--dev-accounts", "4", "-q")
    ok("model", "init", "--arch", "logreg:64-10", "-o", "genesis.safetensors")
    ok("data", "split", "--dataset", "digits", "--participants", "2", "--out", "stores")
    publish = ("model", "publish", "genesis.safetensors", "--test-set", "stores/test.npz")
    publish += ("--deposit", "10", "--key", "dev1", "-q")
    bad = run_din(*publish, "--privacy", "secret")
    assert bad.returncode == ExitCode.USAGE and b"secret" in bad.stderr
    assert ok(*publish).strip() == "1"  # the default: sealed
    assert ok(*publish, "--privacy", "open").strip() == "2"
    status = ok("task", "status", "1")
    assert "sealed: each update is readable only by its subgroup's validators" in status
    assert "open: updates are public as trained" in ok("task", "status", "2")
    early = run_din("keys", "grant", "--task", "1", "--key", "dev2")
    assert early.returncode == ExitCode.USAGE and early.stdout == b""
    assert len(early.stderr.decode().strip().splitlines()) == 1
    assert "once the evaluation is drawn" in early.stderr.decode()
    open_task = run_din("keys", "grant", "--task", "2", "--key", "dev2")
    assert open_task.returncode == ExitCode.NOT_FOUND and b"is not sealed" in open_task.stderr

    # one round of task 1: dev2 trains, dev3 validates; dev2's update opens for dev3 only
    ok("validator", "stake", "100", "--key", "dev3", "-q")
    ok("validator", "join", "1", "--key", "dev3", "-q")
    ok("participant", "join", "1", "--key", "dev2", "-q")
    ok("round", "start", "--task", "1", "--key", "dev1", "-q")
    cid = ok("train", "--task", "1", "--data", "stores/participant-01.npz", "--submit",
             "--epochs", "1", "--key", "dev2", "-q").strip()  # fmt: skip
    for who in ("dev1", "dev2", "dev4"):  # the owner, the participant itself, an outsider
        refused = run_din("keys", "unseal", cid, "--task", "1", "--key", who, "-o", f"{who}.st")
        assert refused.returncode == ExitCode.VERIFICATION_FAILED, refused.stderr
        assert len(refused.stderr.decode().strip().splitlines()) == 1
        assert b"holds no key" in refused.stderr and not os.path.exists(f"{who}.st")
    doc = json.loads(
        ok("keys", "unseal", cid, "--task", "1", "--key", "dev3", "-o", "dev3.st", "--json")
    )
    assert (doc["round"], doc["group"]) == (1, 0)
    assert tensorfile.read_header("dev3.st").kind == "update"


def test_past_the_cutoff_an_ungranted_update_counts_as_unavailable(tmp_path):
    """Nobody grants: an evaluation validator waits until the middle of the score-commit phase,
    then scores without the updates it cannot open (they earn 0 from it), instead of stalling."""
    from din_cli.chain.din import PHASE_NUMBERS

    w = World(tmp_path, rounds=1, **SEALED)
    roundflow.start(w.ctx(w.owner), w.task)
    w.train_all()
    w.aggregate_all()
    w.finalize_and_attest()
    evaluation.post_test_set(w.ctx(w.owner), w.task, w.test_store)
    v = w.assigned(0)[0]
    mine = w.din.subgroup_of(w.task, v.address, 1).group
    with pytest.raises(sealing.KeyMissing):
        evaluation.evaluate_commit(w.ctx(v), w.task)
    opened = [
        e
        for e in w.din.events(w.task, "PhaseChanged")
        if int(e["args"]["phase"]) == PHASE_NUMBERS["score-commit"]
    ]
    cutoff = (
        int(opened[-1]["args"]["deadline"]) - w.din.task_info(w.task).durations["score_commit"] // 2
    )
    assert sealing.evaluation_cutoff(w.ctx(), w.task) == cutoff
    w.chain.advance_time(cutoff - w.chain.now() + 1)
    assert w.phase() == "score-commit"
    rec = evaluation.evaluate_commit(w.ctx(v), w.task)
    unreadable = {u.participant for u in w.din.updates_submitted(w.task, 1) if u.group != mine}
    assert unreadable and all(
        s == 0 for a, s in zip(rec["participants"], rec["scores"], strict=True) if a in unreadable
    )
    # an outsider-checker (din verify) is never judged by the window: the subgroup stays "sealed"
    from din_cli.protocol import verify

    checks = verify.audit(w.ctx(v), w.task)
    sealed = [c for c in checks if c["what"] == "subgroup" and c["ok"] is None]
    assert [c["group"] for c in sealed] == [1 - mine]
    assert all(c["ok"] for c in checks if c not in sealed)
