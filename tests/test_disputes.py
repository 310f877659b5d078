"""DinDisputes on the embedded chain and on anvil: a dishonest majority of a subgroup loses.

A subgroup of 5 validators, 3 of them colluding, gets a wrong aggregate accepted;
anyone files a dispute; a committee drawn from the other stakers after the filing
decides; the colluders are slashed and removed, the honest two are untouched and
no longer slashable, and the round is replayed from the model it started from.
The attacker's side: a griefer's dispute of a correct result is dismissed and
costs its bond; a committee member voting with the minority or staying silent
is slashed; filing twice, or for a subgroup without an accepted result, is
refused; a frozen task rejects every phase's action. A last round's lie is
disputable after training (slashed, nothing replays). An evaluation
subgroup's colluding majority is disputed while the task settles: a
dissenting subgroup cannot settle before the window, and settlement takes
the committee's vector and slashes the liars.
"""

from __future__ import annotations

import os

import pytest

from din_cli.chain.din import (
    DURATION_NAMES,
    Din,
    cid_digest,
    deploy_all,
    encode_result,
    pack_scores,
    result_digest,
    scores_digest,
)
from din_cli.errors import TransactionReverted

UNIT = 10**18
MIN_STAKE = 100 * UNIT
SLASH = MIN_STAKE // 10
DEPOSIT = 1000 * UNIT
SPAN = 600
DURATIONS = dict.fromkeys(DURATION_NAMES, SPAN)


def cid(tag: str) -> bytes:
    import hashlib

    return b"\x01\x55\x12\x20" + hashlib.sha256(tag.encode()).digest()


def reverts(reason: str):
    return pytest.raises(TransactionReverted, match=reason)


@pytest.fixture(scope="module", params=["embedded", "anvil"])
def net(request):
    """A deployment plus every account that ever staked in it (so tests can drive any committee)."""
    from din_cli.chain.client import connect

    chain = connect(
        "memory" if request.param == "embedded" else request.getfixturevalue("anvil_url")
    )
    dev = chain.dev_account()
    dep = deploy_all(chain, dev, min_stake=MIN_STAKE, unstake_delay=3600, committee=5)
    din = Din(chain, dep)
    stakers: dict = {}
    yield chain, dev, din, stakers
    chain.close()


def account(chain, din, dev, tokens=0):
    from eth_account import Account

    a = Account.create()
    chain.fund(a.address, UNIT)
    if tokens:
        din.transfer(dev, a.address, tokens)
    return a


def staker(net):
    from din_cli.crypto import hpke

    chain, dev, din, stakers = net
    a = account(chain, din, dev, 2 * MIN_STAKE)
    din.stake(a, MIN_STAKE, hpke.generate_keypair()[1])
    stakers[a.address] = a
    return a


class Task:
    """One task: 3 participants in one subgroup of 5 validators; `extra` more honest stakers."""

    def __init__(self, net, extra=6, **kw):
        chain, dev, din, stakers = net
        self.net, self.chain, self.dev, self.din = net, chain, dev, din
        self.owner = account(chain, din, dev, 2 * DEPOSIT)
        self.parts = [account(chain, din, dev) for _ in range(3)]
        self.vals = [staker(net) for _ in range(5)]
        for _ in range(extra):
            staker(net)
        self.task = din.create_task(
            self.owner,
            genesis_cid=cid("genesis"),
            arch="mlp-test",
            deposit=DEPOSIT,
            test_set_hash=bytes.fromhex("5e" * 32),
            subgroup_size=3,
            validators_per_subgroup=5,
            max_rounds=kw.get("max_rounds", 2),
            slash_amount=SLASH,
            durations=DURATIONS,
        )
        for p in self.parts:
            din.join_task(p, self.task, os.urandom(32))
        for v in self.vals:
            din.register_validator_for_task(v, self.task)
        din.start_round(self.owner, self.task)

    def info(self):
        return self.din.task_info(self.task)

    def slots(self, round_=None):
        by = {v.address: v for v in self.vals}
        return [by[a] for a in self.din.members(self.task, 0, round_)["validators"]]

    def aggregate(self, round_, liars=(), wrong=None):
        """Every participant submits; the validators in `liars` (slot numbers) reveal `wrong`."""
        for p in self.parts:
            self.din.submit_update(p, self.task, cid(f"update-{self.task}-{round_}-{p.address}"))
        right = cid(f"agg-{self.task}-{round_}")
        slots = self.slots()
        for j, v in enumerate(slots):
            self.din.commit_aggregate(v, self.task, wrong if j in liars else right)
        for j, v in enumerate(slots):
            self.din.reveal_aggregate(v, self.task, wrong if j in liars else right)
        return right, slots

    def globalise(self, round_):
        model = cid(f"global-{self.task}-{round_}")
        self.din.post_global_model(self.owner, self.task, model)
        for v in self.slots():
            if self.info().phase != "global-model":
                break
            self.din.attest_global(v, self.task, model)
        return model

    def file(self, round_, claim):
        filer = account(self.chain, self.din, self.dev, 10 * SLASH)
        did = self.din.file_dispute(filer, self.task, round_, 0, claim)
        self.chain.advance_time(1)  # the draw needs a later block than the filing
        return filer, did

    def vote(self, did, votes):
        """votes: {member address: cid or None (silent)}; commit then reveal."""
        stakers = self.net[3]
        for who, c in votes.items():
            if c is not None:
                self.din.dispute_commit(stakers[who], did, c)
        if None in votes.values():  # a silent member: reveals open when the commit window ends
            self.chain.advance_time(SPAN + 1)
        for who, c in votes.items():
            if c is not None:
                self.din.dispute_reveal(stakers[who], did, c)


def test_colluding_majority_is_overturned_slashed_and_the_round_replayed(net):
    chain, dev, din, _ = net
    t = Task(net)
    wrong = cid("poisoned")
    right, slots = t.aggregate(1, liars=(0, 2, 4), wrong=wrong)
    colluders, honest = [slots[j] for j in (0, 2, 4)], [slots[j] for j in (1, 3)]
    assert din.accepted_aggregates(t.task, 1) == {0: wrong}  # 3 of 5: the lie is accepted
    # the colluders cannot slash the honest minority while the dispute is pending... nor after it
    filer, did = t.file(1, right)
    assert t.info().phase == "disputed"
    bal = din.balance(filer.address)
    # the frozen task rejects every phase's action
    with reverts("not in the global model phase"):
        din.post_global_model(t.owner, t.task, cid("g"))
    with reverts("task has ended"):
        din.slash_aggregator(dev, t.task, 1, honest[0].address)
    with reverts("not disputable in this phase"):  # one open dispute per task
        t.file(1, right)
    committee = din.draw_committee(dev, did)
    assert len(committee) == 5 and not set(committee) & {v.address for v in slots}
    bonded = {m: din.validator_info(m).bonded for m in committee}
    assert all(b >= SLASH for b in bonded.values())
    t.vote(did, {m: right for m in committee})
    stakes = {v.address: din.validator_info(v.address).stake for v in slots}
    d = din.resolve_dispute(dev, did)
    assert d["state"] == "upheld" and d["decided_digest"] == result_digest(right)
    for v in colluders:  # slashed (stake burnt) and removed
        assert din.validator_info(v.address).stake == stakes[v.address] - SLASH
        with reverts("validator already removed"):
            din.slash_aggregator(dev, t.task, 1, v.address)
    for v in honest:  # untouched, and the committee's CID is now the majority
        assert din.validator_info(v.address).stake == stakes[v.address]
        with reverts("validator revealed the majority aggregate"):
            din.slash_aggregator(dev, t.task, 1, v.address)
    with reverts("that result is not the subgroup's accepted one"):  # a dispute decided another
        chain.send(
            dev,
            din.tasks.functions.slashAggregator(t.task, 1, honest[0].address, result_digest(wrong)),
        )
    assert din.balance(filer.address) == bal + SLASH  # bond back
    assert all(din.validator_info(m).bonded == bonded[m] - SLASH for m in committee)
    info = t.info()
    # replayed: a new round number from the model round 1 started from, one more round allowed
    assert (info.phase, info.round, info.last_round) == ("training", 2, 3)
    assert info.model_digest == cid_digest(cid("genesis"))
    assert din.round_info(t.task, 2).model_cid == cid("genesis")
    with reverts("a dispute already decided that subgroup"):  # the rest of round 1: discarded
        chain.send(
            dev,
            din.disputes.functions.file(t.task, 1, 0, encode_result(wrong), encode_result(right)),
        )

    # the replay decides without the removed three: their slots are counted out, so the honest
    # two are a strict majority of the live slots (before: 2 of 5 could never accept anything)
    for p in t.parts:
        din.submit_update(p, t.task, cid(f"replay-{p.address}"))
    assert t.info().phase == "aggregation-commit"
    with reverts("validator was not removed from this task"):
        din.mark_gone(dev, t.task, honest[0].address)
    slots2 = t.slots(2)
    with reverts("validator was slashed out of this task"):
        din.commit_aggregate(colluders[0], t.task, wrong)
    for v in slots2:
        if v in colluders:
            din.mark_gone(dev, t.task, v.address)
    with reverts("slot already counted out"):
        din.mark_gone(dev, t.task, colluders[0].address)
    assert din.gone_slots(t.task, 2) == {v.address: 0 for v in colluders}
    replayed = cid("agg-replay")
    for v in honest:
        din.commit_aggregate(v, t.task, replayed)
    assert t.info().phase == "aggregation-reveal"  # every live slot committed: no waiting
    for v in honest:
        din.reveal_aggregate(v, t.task, replayed)
    assert din.accepted_aggregates(t.task, 2) == {0: replayed}
    model = cid("global-replay")
    din.post_global_model(t.owner, t.task, model)
    for v in honest:
        din.attest_global(v, t.task, model)
    assert t.info().round == 3 and t.info().model_digest == cid_digest(model)
    with reverts("not in the aggregation commit phase"):
        din.mark_gone(dev, t.task, colluders[1].address)


def test_a_replay_that_cuts_a_round_short_leaves_no_one_slashable_for_it(net):
    """The dispute of round 1 is decided while round 2 trains: round 2 is discarded before any
    validator could reveal. A griefer slashing round 2's validators for "did not reveal" (every
    one of them, honest included) is refused, on chain and in `din rewards settle`'s list."""
    chain, dev, din, _ = net
    t = Task(net, max_rounds=2)
    wrong = cid("poisoned-2")
    right, slots = t.aggregate(1, liars=(0, 2, 4), wrong=wrong)
    honest = [slots[j] for j in (1, 3)]
    t.globalise(1)
    assert (t.info().phase, t.info().round) == ("training", 2)
    din.submit_update(t.parts[0], t.task, cid(f"r2-{t.task}"))  # round 2 under way
    filer, did = t.file(1, right)
    committee = din.draw_committee(dev, did)
    t.vote(did, {m: right for m in committee})
    assert din.resolve_dispute(dev, did)["state"] == "upheld"
    assert {1, 2} <= set(din.discarded_rounds(t.task)) and t.info().round == 3
    for v in din.members(t.task, 0, 2)["validators"]:  # round 2's slots: nobody revealed
        if din.removed(t.task, v):
            continue
        stake = din.validator_info(v).stake
        with reverts("a dispute's replay discarded that round"):
            din.slash_aggregator(dev, t.task, 2, v)
        assert din.validator_info(v).stake == stake
    assert din.slashable_aggregators(t.task, 2) == []
    for v in honest:  # in the disputed round itself the committee's CID is the majority
        with reverts("validator revealed the majority aggregate"):
            din.slash_aggregator(dev, t.task, 1, v.address)


def test_a_dispute_filed_in_the_reveal_phase_slashes_no_one_it_kept_from_revealing(net):
    """Old: 3 colluders reveal a lie first, the lie is accepted, and a dispute is filed at once,
    in the reveal phase; upheld, the round is discarded, and resolve slashed the honest
    validator that had committed but not revealed yet for "did not reveal". New: the filing
    records that it cut the round's reveals short; those that had committed are not slashable
    for it, while one that never committed (the commit phase was over) still is."""
    chain, dev, din, _ = net
    t = Task(net)
    wrong = cid("poisoned-early")
    for p in t.parts:
        din.submit_update(p, t.task, cid(f"update-{t.task}-early-{p.address}"))
    right = cid(f"agg-{t.task}-early")
    slots = t.slots()
    liars, waiting, silent = [slots[j] for j in (0, 2, 4)], slots[1], slots[3]
    for v in liars:
        din.commit_aggregate(v, t.task, wrong)
    din.commit_aggregate(waiting, t.task, right)
    chain.advance_time(SPAN + 1)  # the silent one let the commit window run out
    din.advance(dev, t.task)
    assert t.info().phase == "aggregation-reveal"
    for v in liars:
        din.reveal_aggregate(v, t.task, wrong)
    assert din.accepted_aggregates(t.task, 1) == {0: wrong}
    filer, did = t.file(1, right)  # before `waiting` could reveal
    stakes = {v.address: din.validator_info(v.address).stake for v in slots}
    committee = din.draw_committee(dev, did)
    t.vote(did, {m: right for m in committee})
    assert din.resolve_dispute(dev, did)["state"] == "upheld"
    assert 1 in din.discarded_rounds(t.task)
    assert din.validator_info(waiting.address).stake == stakes[waiting.address]
    assert not din.removed(t.task, waiting.address)
    with reverts("a dispute's filing cut its reveal short"):
        din.slash_aggregator(dev, t.task, 1, waiting.address)
    for v in [*liars, silent]:  # the liars, and the one that never committed, are slashed
        assert din.validator_info(v.address).stake == stakes[v.address] - SLASH
        assert din.removed(t.task, v.address)
    assert din.slashable_aggregators(t.task, 1) == []


def test_griefer_loses_its_bond_and_lying_or_silent_members_are_slashed(net):
    chain, dev, din, _ = net
    t = Task(net)
    right, _ = t.aggregate(1)
    griefer, did = t.file(1, cid("bogus"))
    bal = din.balance(griefer.address)
    committee = din.draw_committee(dev, did)
    liar, silent, *good = committee
    t.vote(did, {liar: cid("bogus"), silent: None, **{m: right for m in good}})
    stakes = {m: din.validator_info(m).stake for m in committee}
    bonded = {m: din.validator_info(m).bonded for m in committee}
    tokens = {m: din.balance(m) for m in committee}
    chain.advance_time(SPAN + 1)  # the silent member lets the reveal window run out
    d = din.resolve_dispute(dev, did)
    assert d["state"] == "dismissed"
    assert din.balance(griefer.address) == bal  # the bond is gone
    for m in (liar, silent):
        assert din.validator_info(m).stake == stakes[m] - SLASH
    # no outcome pays the committee (rubber-stamping earns nothing); the bond is burnt
    assert all(din.balance(m) == tokens[m] for m in committee)
    assert din.balance(din.disputes.address) == 0
    assert all(din.validator_info(m).bonded == bonded[m] - SLASH for m in committee)
    info = t.info()
    assert info.phase == "global-model"  # unfrozen: the phase got its time back
    assert din.accepted_aggregates(t.task, 1) == {0: right}


def test_refused_filings(net):
    chain, dev, din, _ = net
    t = Task(net, extra=0)
    filer = account(chain, din, dev, 10 * SLASH)
    din._ensure_allowance(filer, din.disputes.address, 10 * SLASH)

    def file(round_, accepted, claim):
        fn = din.disputes.functions.file(
            t.task, round_, 0, encode_result(accepted), encode_result(claim)
        )
        chain.send(filer, fn)

    with reverts("CID is not the accepted one"):  # nothing accepted yet
        file(1, cid("x"), cid("y"))
    right, slots = t.aggregate(1, liars=(0, 1), wrong=cid("w"))  # 3 of 5 honest
    with reverts("CID is not the accepted one"):  # a minority CID was never accepted
        file(1, cid("w"), right)
    with reverts("the claimed CID is the accepted one"):
        file(1, right, right)
    with reverts("only the dispute contract"):
        chain.send(filer, din.tasks.functions.dispute(t.task, 1, 0, result_digest(right), True))


def test_a_last_round_lie_is_disputable_after_training_and_its_liars_slashed(net):
    """Old: disputes closed with training, so a majority's wrong aggregate in the last round went
    unpunished once the test-set phase began. New: filed before settlement, an upheld dispute
    slashes the liars; nothing replays (training is over), and the subgroup cannot be disputed
    twice."""
    chain, dev, din, _ = net
    t = Task(net, max_rounds=1)
    wrong = cid("last-round-lie")
    right, slots = t.aggregate(1, liars=(0, 2, 4), wrong=wrong)
    t.globalise(1)
    assert t.info().phase == "test-set"
    filer, did = t.file(1, right)
    committee = din.draw_committee(dev, did)
    t.vote(did, {m: right for m in committee})
    stakes = {v.address: din.validator_info(v.address).stake for v in slots}
    d = din.resolve_dispute(dev, did)
    assert d["state"] == "upheld"
    resolved = din.dispute_logs("DisputeResolved", disputeId=did)[0]["args"]
    assert int(resolved["newRound"]) == 0  # nothing replays
    assert (t.info().phase, t.info().round) == ("test-set", 1)
    assert din.accepted_aggregates(t.task, 1) == {0: right}
    for j, v in enumerate(slots):
        assert din.validator_info(v.address).stake == stakes[v.address] - (
            SLASH if j % 2 == 0 else 0
        )
    with reverts("a dispute already decided that subgroup"):
        fn = din.disputes.functions.file(t.task, 1, 0, encode_result(wrong), encode_result(right))
        din._ensure_allowance(filer, din.disputes.address, SLASH)
        chain.send(filer, fn)


def test_a_dispute_without_enough_eligible_stakers_leaves_the_result(net):
    """Only the subgroup's own 5 validators... plus earlier tests' stakers in this module: the
    committee is drawn from the whole staked set, so it exists; the filer keeps its bond on
    an undecided (silent) committee, and the silent members are slashed."""
    chain, dev, din, _ = net
    t = Task(net, extra=0)
    right, _ = t.aggregate(1, liars=(0, 1, 2), wrong=cid("w2"))
    filer, did = t.file(1, right)
    bal = din.balance(filer.address)
    committee = din.draw_committee(dev, did)
    assert len(committee) in (3, 5)
    bonded = {m: din.validator_info(m).bonded for m in committee}
    chain.advance_time(2 * SPAN + 1)
    d = din.resolve_dispute(dev, did)
    assert d["state"] == "undecided"
    assert din.balance(filer.address) == bal + SLASH
    assert all(din.validator_info(m).bonded == bonded[m] - SLASH for m in committee)  # slashed
    assert t.info().phase == "global-model"


def test_stakers_joining_after_the_filing_are_never_drawn(net):
    """Old: the draw permuted the staker list as it stood at the draw, so once the filing block's
    hash was public an attacker could stake fresh accounts until the permutation put its own in
    the committee. New: the draw permutes only the stakers listed at filing."""
    chain, dev, din, _ = net
    t = Task(net, extra=4)
    right, _ = t.aggregate(1, liars=(0, 2, 4), wrong=cid("w3"))
    filer, did = t.file(1, right)
    late = {staker(net).address for _ in range(12)}  # the attacker's accounts, after the filing
    committee = din.draw_committee(dev, did)
    assert committee and not set(committee) & late
    t.vote(did, {m: right for m in committee})
    assert din.resolve_dispute(dev, did)["state"] == "upheld"


def _mirror_draw(chain, din, did: int, stakers: int, block: int, size: int) -> list[str]:
    """DinDisputes.draw in Python, by the weights the registry held at the end of ``block``."""
    from eth_abi import encode
    from eth_utils import keccak

    from din_cli.chain.assignment import permute

    filing_hash = chain._block_hash(din.dispute_info(did)["filed_block"])
    k = keccak(encode(["bytes32", "uint256"], [filing_hash, did]))
    at = [permute(k, i, stakers) for i in range(min(stakers, 256))]
    who, w = chain.call(din.registry.functions.weightsAt(at, block))
    w = list(w)
    total, drawn, j = sum(w), [], 0
    while len(drawn) < size and total > 0:
        r = int.from_bytes(keccak(encode(["bytes32", "uint256"], [k, j])), "big") % total
        i = 0
        while r >= w[i]:
            r -= w[i]
            i += 1
        total -= w[i]
        w[i] = 0
        drawn.append(who[i])
        j += 1
    return drawn


def test_committees_are_drawn_by_stake_at_filing_and_stake_moved_later_cannot_steer_them(net):
    """Old: every listed staker had the same chance, whatever its stake. New: successive draws by
    stake (self-stake plus delegations) as it stood at the end of the filing block. Once that
    block's hash is public an attacker can compute the draw for any weights; here it delegates
    1,000x the minimum to a validator the draw would pass over, which then would be drawn
    first, but the committee is still the one the filing block's weights give."""
    from din_cli.chain.economy import Economy

    chain, dev, din, _ = net
    t = Task(net, extra=6)
    heavy = staker(net)  # 5x the others' weight at filing: the draw must favour it
    Economy(chain, din.deployment).delegate(
        account(chain, din, dev, 4 * MIN_STAKE), heavy.address, 4 * MIN_STAKE
    )
    right, slots = t.aggregate(1, liars=(0, 2, 4), wrong=cid("w3"))
    filer, did = t.file(1, right)
    filed = din.dispute_info(did)["filed_block"]
    n = chain.call(din.registry.functions.stakerCount())
    at_filing = _mirror_draw(chain, din, did, n, filed, 64)  # the whole order, not just 5
    outside = {v.address for v in slots} | {filer.address}
    eligible = [a for a in at_filing if a not in outside]
    expected = eligible[:5]
    # the whale: an eligible staker the filing-block draw leaves out, now 1,000x the minimum
    whale = eligible[5]
    Economy(chain, din.deployment).delegate(
        account(chain, din, dev, 1000 * MIN_STAKE), whale, 1000 * MIN_STAKE
    )
    now = _mirror_draw(chain, din, did, n, chain.head(), 64)
    assert whale in [a for a in now if a not in outside][:5]  # these weights would draw it
    committee = din.draw_committee(dev, did)
    assert committee == expected and whale not in committee
    t.vote(did, {m: right for m in committee})
    assert din.resolve_dispute(dev, did)["state"] == "upheld"


def _to_scores(t: Task, liars=(), lie=(10000, 0, 0), truth=(3000, 3000, 4000), silent=()):
    """One round trained and accepted, the test set posted, and the evaluation subgroup's
    validators at slots ``liars`` revealing ``lie``, those at ``silent`` nothing, and the rest
    ``truth``: SETTLING."""
    din = t.din
    t.aggregate(1)
    t.globalise(1)
    assert t.info().phase == "test-set"
    slots = [{v.address: v for v in t.vals}[a] for a in din.members(t.task, 0, 0)["validators"]]
    din.post_test_set(t.owner, t.task, cid("test-set"), {v.address: b"k" for v in slots})
    for step in (din.commit_scores, din.reveal_scores):
        for j, v in enumerate(slots):
            if j not in silent:
                step(v, t.task, lie if j in liars else truth)
        if t.info().phase == "score-commit":  # the silent one let the commit window run out
            t.chain.advance_time(SPAN + 1)
            din.advance(t.dev, t.task)
    assert t.info().phase == "settling"
    return slots


def test_a_colluding_evaluation_majority_is_overturned_and_slashed_at_settlement(net):
    """3 of 5 evaluation validators reveal scores that hand one participant everything: the
    honest minority files, a committee of other stakers decides, and settlement takes the
    committee's vector, slashing the three and paying the honest two."""
    chain, dev, din, _ = net
    t = Task(net, max_rounds=1)
    lie, truth = [10000, 0, 0], [3000, 3000, 4000]
    slots = _to_scores(t, liars=(0, 2, 4), lie=lie, truth=truth)
    colluders, honest = [slots[j] for j in (0, 2, 4)], [slots[j] for j in (1, 3)]
    parts, vals, majority = din.score_majority(t.task, 0)
    assert majority == lie
    with reverts("validators disagree"):  # a dissenting subgroup waits: the minority may file
        chain.send(dev, din.tasks.functions.settle(t.task, 0, parts, vals, pack_scores(lie)))
    with reverts("not the subgroup's majority vector"):  # a griefer cannot name another vector
        din._ensure_allowance(honest[0], din.disputes.address, SLASH)
        fn = din.disputes.functions.fileScores(
            t.task, 0, pack_scores(truth), pack_scores(lie), vals
        )
        chain.send(honest[0], fn)
    did = din.file_score_dispute(honest[0], t.task, 0, truth)
    assert t.info().phase == "disputed"
    with reverts("not in the settlement phase"):
        chain.send(dev, din.tasks.functions.settle(t.task, 0, parts, vals, pack_scores(lie)))
    chain.advance_time(1)
    committee = din.draw_committee(dev, did)
    assert len(committee) == 5 and not set(committee) & {v.address for v in slots}
    stakers = t.net[3]
    for m in committee:
        din.dispute_commit(stakers[m], did, b"", scores=truth)
    for m in committee:
        din.dispute_reveal(stakers[m], did, b"", scores=truth)
    stakes = {v.address: din.validator_info(v.address).stake for v in slots}
    d = din.resolve_dispute(dev, did)
    assert d["state"] == "upheld" and d["decided_digest"] == scores_digest(truth)
    assert t.info().phase == "settling" and din.decided_scores(t.task, 0) == truth
    with reverts("scores differ from the accepted vector"):  # the majority's lie no longer settles
        chain.send(dev, din.tasks.functions.settle(t.task, 0, parts, vals, pack_scores(lie)))
    din.settle(dev, t.task)  # the committee's vector, at once: a dispute decided it
    assert t.info().phase == "settled"
    for v in colluders:
        assert din.validator_info(v.address).stake == stakes[v.address] - SLASH
    for v in honest:
        assert din.validator_info(v.address).stake == stakes[v.address]
    paid = {p.address: din.claim(p, t.task) for p in t.parts}
    fees = [din.claim(v, t.task) for v in honest]
    assert fees[0] == fees[1] == DEPOSIT * 1000 // 10000 // 2  # the default 10 % fee, two earn it
    pool = DEPOSIT - sum(fees)
    by_index = dict(zip(parts, truth, strict=True))
    expect = {t.parts[i].address: pool * by_index[i] // 10000 for i in by_index}
    assert all(abs(paid[a] - expect[a]) <= 1 for a in expect)  # by the honest scores
    assert sum(paid.values()) + sum(fees) == DEPOSIT


def test_a_split_evaluation_subgroup_without_a_majority_is_decided_by_a_dispute(net):
    """Old: two liars, two honest and one silent validator left no strict majority, so every
    participant of the subgroup scored 0 and the liars went unpunished. New: the subgroup waits
    for the window, the honest file with any revealed vector named, and the committee decides."""
    chain, dev, din, _ = net
    t = Task(net, max_rounds=1)
    lie, truth = [0, 0, 10000], [3000, 3000, 4000]
    slots = _to_scores(t, liars=(0, 1), lie=lie, truth=truth, silent=(4,))
    assert din.score_majority(t.task, 0)[2] is None
    with reverts("validators disagree"):
        din.settle(dev, t.task)
    did = din.file_score_dispute(slots[2], t.task, 0, truth)
    chain.advance_time(1)
    committee = din.draw_committee(dev, did)
    stakers = t.net[3]
    for step in (din.dispute_commit, din.dispute_reveal):
        for m in committee:
            step(stakers[m], did, b"", scores=truth)
    assert din.resolve_dispute(dev, did)["state"] == "upheld"
    stakes = {v.address: din.validator_info(v.address).stake for v in slots}
    din.settle(dev, t.task)
    assert din.settlement_results(t.task) == {
        t.parts[i].address: s for i, s in zip(din.score_majority(t.task, 0)[0], truth, strict=True)
    }
    for j, v in enumerate(slots):  # the liars and the silent one slashed, the honest two not
        cut = SLASH if j in (0, 1, 4) else 0
        assert din.validator_info(v.address).stake == stakes[v.address] - cut


def test_a_subgroup_that_disagrees_settles_in_the_second_half_without_a_dispute(net):
    chain, dev, din, _ = net
    t = Task(net, max_rounds=1)
    truth = [3000, 3000, 4000]
    slots = _to_scores(t, liars=(0,), lie=[5000, 5000, 0], truth=truth)
    with reverts("validators disagree"):
        din.settle(dev, t.task)
    chain.advance_time(SPAN // 2)
    din.settle(dev, t.task)  # the majority's vector; the lone liar is slashed
    assert din.settlement_results(t.task) == {
        t.parts[i].address: s for i, s in zip(din.score_majority(t.task, 0)[0], truth, strict=True)
    }
    assert din.removed(t.task, slots[0].address)
