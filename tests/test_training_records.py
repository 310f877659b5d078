"""The owner withholds its test set, and its Sybil submitted junk all along: the participants' pool
goes to the contributors by their accepted training record, which the Sybil does not have.

A subgroup result on chain is the aggregate's CID and the bitmap of the positions whose update it
admitted, so a strict majority agrees on both. Each participant proves its admitted rounds once
(``din rewards prove``) between the test-set phase and settlement; a task abandoned for want of a
test set keeps that window open for the settling duration before claims open. Embedded chain and
anvil, one deployment per module.
"""

from __future__ import annotations

import pytest
from round_world import DEPOSIT, SPAN, World

from din_cli.chain import assignment
from din_cli.chain.din import admitted_bitmap, admitted_positions, encode_result, split_result
from din_cli.chain.settlement import abandoned_payouts
from din_cli.errors import (
    AlreadyDone,
    InputError,
    NotFoundError,
    TransactionReverted,
    UsageError,
    VerificationError,
)
from din_cli.protocol import rewards, roundflow, verify
from din_cli.protocol.cids import to_bytes


def _junk_round(w: World, sybil, train: list) -> None:
    """Everyone in ``train`` trains; the Sybil resubmits the round's starting model (excluded)."""
    start = roundflow.current_model(w.ctx(), w.task)
    for i, p in enumerate(w.parts):
        if p in train:
            roundflow.train_and_submit(w.ctx(p), w.task, w.stores[i], epochs=1, lr=0.5)
    w.din.submit_update(sybil.account, w.task, to_bytes(start))
    if w.phase() == "training":
        w.advance()
    w.aggregate_all()
    w.finalize_and_attest()


def test_a_withheld_test_set_pays_contributors_by_record_and_the_sybil_nothing(tmp_path, deployed):
    w = World(tmp_path, participants=4, subgroup_size=4, rounds=2, deployed=deployed)
    *honest, sybil = w.parts
    roundflow.start(w.ctx(w.owner), w.task)
    _junk_round(w, sybil, honest)
    with pytest.raises(UsageError):  # records are proven once training is over
        rewards.prove(w.ctx(honest[0]), w.task)
    _junk_round(w, sybil, honest[:2])  # honest[2] sits round 2 out
    assert w.phase() == "test-set"

    # every validator revealed the same result: the aggregate and who it admitted
    for r, admitted in ((1, 0b0111), (2, 0b0011)):
        results = w.din.accepted_results(w.task, r)
        assert len(results) == 1
        bits = results[0][1]
        rnd = w.din.round_info(w.task, r)
        pos = {
            p.name: assignment.participant_group(rnd.seed, i, rnd.participants, rnd.groups)[1]
            for i, p in enumerate(w.parts)
        }
        expect = sum(1 << pos[p.name] for k, p in enumerate(w.parts) if admitted >> k & 1)
        assert bits == expect

    w.advance()  # no test set: abandoned, with a window to prove records
    assert w.phase() == "abandoned"
    with pytest.raises(UsageError):  # claims wait for the window to close
        rewards.claim(w.ctx(honest[0]), w.task)
    cid, bits = w.din.accepted_results(w.task, 1)[0]
    with pytest.raises(TransactionReverted, match="rounds must increase"):  # no round counted twice
        fn = w.din.tasks.functions.proveRecord(w.task, [1, 1], [encode_result(cid, bits)] * 2)
        w.din._send(honest[0].account, fn)
    proved = {p.name: rewards.prove(w.ctx(p), w.task)["rounds"] for p in honest}
    assert proved == {"p0": [1, 2], "p1": [1, 2], "p2": [1]}
    with pytest.raises(AlreadyDone):
        rewards.prove(w.ctx(honest[0]), w.task)

    # the Sybil has nothing to prove, and cannot pass off the accepted result or a forged one
    with pytest.raises(NotFoundError):
        rewards.prove(w.ctx(sybil), w.task)
    cid, bits = w.din.accepted_results(w.task, 1)[0]
    rnd = w.din.round_info(w.task, 1)
    index = w.din.participants(w.task).index(sybil.address)
    mine = assignment.participant_group(rnd.seed, index, rnd.participants, rnd.groups)[1]
    for result, why in (
        (encode_result(cid, bits), "does not admit your update"),
        (encode_result(cid, bits | 1 << mine), "not the subgroup's accepted one"),
    ):
        with pytest.raises(TransactionReverted, match=why):
            w.din._send(sybil.account, w.din.tasks.functions.proveRecord(w.task, [1], [result]))

    w.chain.advance_time(SPAN + 1)
    paid = {}
    for who in [w.owner, *w.parts, *w.vals]:
        try:
            paid[who.name] = rewards.claim(w.ctx(who), w.task)["amount"]
        except NotFoundError:
            paid[who.name] = 0
    # the contract's split is settlement.py's, in proof order
    expect, refund = abandoned_payouts(DEPOSIT, w.parts, records=[("p0", 2), ("p1", 2), ("p2", 1)])
    assert refund == 0
    assert {n: paid[n] for n in ("p0", "p1", "p2")} == expect
    assert paid["p3"] == 0 and paid["owner"] == 0
    assert sum(paid.values()) == DEPOSIT
    with pytest.raises(UsageError):  # the window is closed
        rewards.prove(w.ctx(sybil), w.task)


def test_a_result_carries_the_admitted_bitmap_after_the_cid():
    cid = bytes.fromhex("01551220") + bytes(range(32))
    assert encode_result(cid, 0b101)[-32:] == (5).to_bytes(32, "big")
    assert split_result(encode_result(cid, 5)) == (cid, 5)
    assert split_result(b"short") == (b"short", None)  # sent to the contract directly
    assert encode_result(b"short", None) == b"short"  # its own bytes: it can still be disputed
    assert admitted_positions(admitted_bitmap([0, 3, 255])) == [0, 3, 255]
    with pytest.raises(InputError):
        admitted_bitmap([256])


def test_a_majority_that_lies_only_about_whom_it_admitted_is_caught(tmp_path):
    """The aggregate is right, but the majority's bitmap admits a participant whose update it
    excluded (a record bought from the validators): `din verify` names the lie, so it can be
    disputed like a wrong aggregate; nobody reading only the CID would have noticed."""
    w = World(tmp_path, participants=3, subgroup_size=3)
    roundflow.start(w.ctx(w.owner), w.task)
    _junk_round_of_one(w)
    with w.ctx().workdir() as work:
        cid, bits = roundflow.subgroup_aggregate(w.ctx(), w.task, 1, 0, work)
    assert bin(bits).count("1") == 2  # the starting model was excluded
    for v in w.assigned():  # every validator reveals the right CID with everyone admitted
        roundflow.aggregate_commit(w.ctx(v), w.task, cid=cid, admitted=0b111)
    if w.phase() != "aggregation-reveal":
        w.advance()
    for v in w.assigned():
        roundflow.aggregate_reveal(w.ctx(v), w.task)
    assert w.din.accepted_results(w.task, 1)[0] == (to_bytes(cid), 0b111) != (to_bytes(cid), bits)
    with pytest.raises(VerificationError, match="admits positions"):
        verify.verify(w.ctx(), w.task)


def _junk_round_of_one(w: World) -> None:
    """p0 and p1 train; p2 resubmits the starting model, which the admission rule excludes."""
    start = roundflow.current_model(w.ctx(), w.task)
    for i, p in enumerate(w.parts[:2]):
        roundflow.train_and_submit(w.ctx(p), w.task, w.stores[i], epochs=1, lr=0.5)
    w.din.submit_update(w.parts[2].account, w.task, to_bytes(start))
