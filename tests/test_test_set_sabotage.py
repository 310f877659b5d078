"""The owner plays the attacker at the end of a task: its test set is not the committed one, or K is
wrapped as garbage. Honest validators reject it (an empty score vector), keep their stake and fee,
and the participants' pool goes to the contributors, never back to the owner. A lazy validator that
rejects a good test set is a minority and is slashed. Embedded chain and anvil, one deployment per
module; every test publishes its own task with fresh accounts.
"""

from __future__ import annotations

import os

import pytest
from round_world import DEPOSIT, MIN_STAKE, World

from din_cli.chain.settlement import settle_task, share, split_deposit
from din_cli.errors import UsageError
from din_cli.protocol import evaluation, rewards, roundflow, status
from din_cli.protocol.roundflow import validator_state

FEE_BPS = 1000


def to_test_set(tmp_path, deployed, **kw) -> World:
    """A task of ``kw``'s shape, trained one round, standing in its test-set phase."""
    w = World(tmp_path, rounds=1, deployed=deployed, **kw)
    roundflow.start(w.ctx(w.owner), w.task)
    w.run_round(epochs=1)
    assert w.phase() == "test-set"
    return w


def post_as_owner(w: World, tmp_path, store, garble=(), other_key=()) -> None:
    """Post ``store`` encrypted under a fresh K, wrapped to every evaluation validator, straight
    through the contract (no din-side check); validators named in ``garble`` get random bytes,
    those in ``other_key`` a well-formed (recomputable) wrap of another key K'."""
    from din_cli.crypto import aead
    from din_cli.crypto.wrap import Recipient, chain_args, wrap_for, wrap_test_key

    ctx = w.ctx(w.owner)
    key = aead.generate_key()
    sealed = tmp_path / "sabotage.enc"
    aead.encrypt_file(str(store), sealed, key)
    cid = ctx.add(sealed)
    resolve = evaluation.chain_resolver(ctx)
    recipients = [Recipient(resolve(a), a) for a in evaluation.evaluation_validators(ctx, w.task)]
    doc = wrap_test_key(key, recipients, evaluation._binding(ctx, w.task), cid=cid, owner=w.owner)
    encrypted_cid, wrapped = chain_args(doc)
    for v in garble:
        wrapped[v.address] = os.urandom(len(wrapped[v.address]))
    binding = evaluation._binding(ctx, w.task)
    for v in other_key:
        wrapped[v.address] = wrap_for(aead.generate_key(), binding, v.hpke_public, v.address)
    w.din.post_test_set(w.owner.account, w.task, encrypted_cid, wrapped)
    assert w.phase() == "score-commit"


def commit_and_reveal(w: World, lazy=()) -> dict:
    """Every evaluation validator runs `din evaluate --commit` then `--reveal` (``lazy`` ones
    reject without looking); the commit documents by validator name."""
    docs = {}
    for v in w.assigned(0):
        if v in lazy:
            w.din.commit_scores(v.account, w.task, [])
        else:
            docs[v.name] = evaluation.evaluate_commit(w.ctx(v), w.task)
    assert w.phase() == "score-reveal"
    for v in w.assigned(0):
        if v in lazy:
            w.din.reveal_scores(v.account, w.task, [])
        else:
            evaluation.evaluate_reveal(w.ctx(v), w.task)
    assert w.phase() == "settling"
    return docs


def contributors(w: World) -> list[str]:
    """Participants in the order of their first update (the contract's ordinals)."""
    seen = []
    for e in w.din.events(w.task, "UpdateSubmitted"):
        if e["args"]["participant"] not in seen:
            seen.append(e["args"]["participant"])
    return seen


def reference(w: World):
    """settlement.py's settlement of what the evaluation validators revealed (contributors equally)."""
    rnd = w.din.round_info(w.task, 0)
    parts, vals = w.din.participants(w.task), w.din.validators(w.task)
    revealed = w.din.scores_revealed(w.task)
    groups = [
        (
            [parts[i] for i in rnd.participant_groups[g]],
            [vals[i] for i in rnd.validator_groups[g]],
            [revealed[vals[i]] for i in rnd.validator_groups[g]],
        )
        for g in range(rnd.groups)
    ]
    return settle_task(DEPOSIT, FEE_BPS, groups, contributors=contributors(w))


def claim_all(w: World) -> dict[str, int]:
    """Every account claims (a DinError, e.g. nothing owed, counts as 0); amounts by name."""
    from din_cli.errors import DinError

    info = w.din.task_info(w.task)  # the contributors' split waits for the records' window
    if info.phase in ("settled", "abandoned") and w.chain.now() < info.deadline < 2**64 - 1:
        w.chain.advance_time(info.deadline - w.chain.now())
    paid = {}
    for who in [w.owner, *w.parts, *w.vals]:
        try:
            paid[who.name] = rewards.claim(w.ctx(who), w.task)["amount"]
        except DinError:
            paid[who.name] = 0
    return paid


def stakes(w: World) -> dict[str, int]:
    return {v.name: w.din.validator_info(v.address).stake for v in w.vals}


def test_a_test_set_other_than_the_committed_one_is_rejected_and_pays_the_contributors(
    tmp_path, deployed
):
    """Old: every honest validator's `din evaluate` failed (exit 3), none committed, settlement
    slashed all three for "did not reveal scores" and nobody earned a fee. New: each commits and
    reveals the rejection, none is slashed, each earns its fee, the owner gets 0 and the
    contributors split the rest equally."""
    w = to_test_set(tmp_path, deployed, participants=3, validators=3, subgroup_size=3, per_group=3)
    post_as_owner(w, tmp_path, w.stores[0])  # a participant's store, not the committed test set
    docs = commit_and_reveal(w)
    for doc in docs.values():
        assert doc["scores"] == [] and "committed at publish" in doc["rejected"]
    doc = status.status(w.ctx(), w.task)
    assert len(doc["evaluation"]["rejections"]) == 3
    settled = rewards.settle(w.ctx(w.owner), w.task)
    assert settled["phase"] == "settled" and settled["rejected"] == [0]
    assert status.status(w.ctx(), w.task)["evaluation"]["rejected_subgroups"] == [0]
    paid = claim_all(w)
    pool, fees = split_deposit(DEPOSIT, FEE_BPS)
    fee = fees // 3
    assert stakes(w) == {v.name: MIN_STAKE for v in w.vals}  # nobody slashed
    assert [paid[v.name] for v in w.vals] == [fee] * 3
    assert paid["owner"] == 0
    order = contributors(w)
    by_address = {p.address: p.name for p in w.parts}
    want = dict(zip(order, share(DEPOSIT - 3 * fee, [1] * len(order)), strict=True))
    assert {a: paid[by_address[a]] for a in order} == want
    assert sum(paid.values()) == DEPOSIT
    shown = rewards.show(w.ctx(), w.task)
    assert shown["rejected_subgroups"] == [0] and shown["fully_paid"]


def test_garbage_k_to_one_subgroup_rejects_the_test_set_for_the_whole_task(tmp_path, deployed):
    """Old: the validator whose K was garbage could not open the test set, never committed and
    was slashed; its subgroup scored 0, so the owner moved the whole pool to the other subgroup.
    New: it rejects (not slashed, earns its fee); one accepted rejection sends the whole pool to the
    contributors by ordinal (the test set is one object), so sabotaging one subgroup steers nothing.
    Since wraps recompute from K, the other subgroup's validator sees the garbage and rejects too."""
    w = to_test_set(tmp_path, deployed, participants=4, validators=2, subgroup_size=2, per_group=1)
    assert w.din.task_info(w.task).groups == 2
    victim, other = w.assigned(0)
    post_as_owner(w, tmp_path, w.test_store, garble=[victim])
    docs = commit_and_reveal(w)
    assert "key does not open" in docs[victim.name]["rejected"]
    assert docs[other.name]["scores"] == []
    assert f"wrap to {victim.address} does not recompute from K" in docs[other.name]["rejected"]
    assert rewards.settle(w.ctx(w.owner), w.task)["rejected"] == [0, 1]

    # the Python reference agrees with the contract
    ref = reference(w)
    assert ref.rejected and not ref.penalised and ref.owner == 0
    paid = claim_all(w)
    assert stakes(w) == {v.name: MIN_STAKE for v in w.vals}
    by_address = {p.address: p.name for p in w.parts}
    assert {by_address[a]: amount for a, amount in ref.participants.items()} == {
        p.name: paid[p.name] for p in w.parts
    }
    assert [paid[v.name] for v in (victim, other)] == [
        ref.validators[v.address] for v in (victim, other)
    ]
    assert paid["owner"] == 0 and sum(paid.values()) == DEPOSIT


def test_a_lazy_validator_that_rejects_a_good_test_set_is_slashed(tmp_path, deployed):
    """Old: the contract refused an empty score vector, so there was no rejection to abuse. New:
    a rejection is a vector like any other: where the strict majority scored the committed test
    set, the lazy rejecter is a minority, slashed with no fee, and participants are paid by score."""
    w = to_test_set(tmp_path, deployed, participants=3, validators=3, subgroup_size=3, per_group=3)
    lazy = w.assigned(0)[1]
    post_as_owner(w, tmp_path, w.test_store)
    docs = commit_and_reveal(w, lazy=[lazy])
    assert all(d["rejected"] is None for d in docs.values())
    with pytest.raises(UsageError, match="disagree"):  # first the window for a score dispute
        rewards.settle(w.ctx(w.owner), w.task)
    w.chain.advance_time(w.din.task_info(w.task).durations["settle"] // 2)
    assert rewards.settle(w.ctx(w.owner), w.task)["rejected"] == []
    assert validator_state(w.ctx(), w.task, lazy.address)["removed"]
    paid = claim_all(w)
    assert stakes(w)[lazy.name] == MIN_STAKE - w.din.task_info(w.task).slash_amount
    assert paid[lazy.name] == 0
    honest = [v for v in w.vals if v is not lazy]
    fee = split_deposit(DEPOSIT, FEE_BPS)[1] // 2
    assert [paid[v.name] for v in honest] == [fee, fee]
    scores = next(iter(docs.values()))["scores"]
    results = w.din.settlement_results(w.task)
    assert [results[p.address] for p in w.parts] != [0, 0, 0]
    by_address = {p.address: p.name for p in w.parts}
    pool = DEPOSIT - 2 * fee
    want = dict(zip(next(iter(docs.values()))["participants"], share(pool, scores), strict=True))
    assert {by_address[a]: v for a, v in want.items()} == {p.name: paid[p.name] for p in w.parts}
    assert paid["owner"] == 0


@pytest.mark.parametrize("sabotage", ["garbage", "other-key"])
def test_a_bad_wrap_to_one_validator_of_a_subgroup_is_rejected_by_every_validator(
    tmp_path, deployed, sabotage
):
    """Old: the owner wrapped garbage (or a valid wrap of another key K') to one validator of a
    subgroup of three and K to the rest: that validator honestly rejected, was outvoted by the two
    that scored, and was slashed for it. New: wraps recompute from K, so the two (and the other
    subgroup's validators) see the bad wrap and reject too; nobody is slashed, every validator
    earns its fee, the owner gets nothing and the pool goes to the contributors by ordinal."""
    w = to_test_set(tmp_path, deployed, participants=4, validators=6, subgroup_size=2, per_group=3)
    rnd = w.din.round_info(w.task, 0)
    assert rnd.groups == 2 and all(len(g) == 3 for g in rnd.validator_groups)
    victim = w.assigned(0)[1]  # a minority of subgroup 0
    bad = {"garbage": {"garble": [victim]}, "other-key": {"other_key": [victim]}}[sabotage]
    post_as_owner(w, tmp_path, w.test_store, **bad)
    docs = commit_and_reveal(w)
    assert len(docs) == 6 and all(d["scores"] == [] and d["rejected"] for d in docs.values())
    for v in w.assigned(0):
        if v is not victim:
            assert f"wrap to {victim.address} does not recompute from K" in docs[v.name]["rejected"]
    want = "key does not open" if sabotage == "garbage" else "does not recompute from K"
    assert want in docs[victim.name]["rejected"]
    assert rewards.settle(w.ctx(w.owner), w.task)["rejected"] == [0, 1]
    assert w.din.events(w.task, "ValidatorPenalised") == []

    ref = reference(w)
    assert ref.rejected and not ref.penalised and ref.owner == 0
    paid = claim_all(w)
    assert stakes(w) == {v.name: MIN_STAKE for v in w.vals}  # nobody slashed, the victim least
    fee = split_deposit(DEPOSIT, FEE_BPS)[1] // 6
    assert [paid[v.name] for v in w.vals] == [fee] * 6
    order = contributors(w)
    by_address = {p.address: p.name for p in w.parts}
    equal = dict(zip(order, share(DEPOSIT - 6 * fee, [1] * len(order)), strict=True))
    assert {a: paid[by_address[a]] for a in order} == equal == ref.participants
    assert paid["owner"] == 0 and sum(paid.values()) == DEPOSIT


def test_a_validator_that_changes_its_key_after_the_post_cannot_split_the_others(
    tmp_path, deployed
):
    """Validators recompute the wraps against the registry as it stood at TestSetPosted: one that
    stakes again with a new HPKE key in the middle of the commit phase changes nothing, so those
    that score before and after it agree (and it still opens its copy with its old key)."""
    from din_cli.crypto import hpke

    w = to_test_set(tmp_path, deployed, participants=3, validators=3, subgroup_size=3, per_group=3)
    post_as_owner(w, tmp_path, w.test_store)
    first, mover, last = w.assigned(0)
    docs = {first.name: evaluation.evaluate_commit(w.ctx(first), w.task)}
    w.din.stake(mover.account, 0, hpke.generate_keypair()[1])
    assert w.din.validator_info(mover.address).hpke_key != mover.hpke_public
    for v in (mover, last):
        docs[v.name] = evaluation.evaluate_commit(w.ctx(v), w.task)
    assert all(d["rejected"] is None for d in docs.values())
    assert len({tuple(d["scores"]) for d in docs.values()}) == 1
