"""The DIN contracts through web3, on the embedded chain and on anvil: a whole task and every revert.

Each chain variant deploys the contracts once per module; each test creates its
own task with fresh accounts. Reverts must come back as TransactionReverted
carrying the contract's reason (the CLI prints it and exits with code 5).
"""

from __future__ import annotations

import os

import pytest

from din_cli.chain import assignment
from din_cli.chain.din import Din, cid_digest, derive_salt, pack_scores
from din_cli.chain.settlement import settle_task, split_deposit
from din_cli.errors import AlreadyDone, InputError, TransactionReverted, UsageError

UNIT = 10**18
TEST_SET_HASH = bytes.fromhex("5e" * 32)  # the owner's commitment to its plaintext test set
MIN_STAKE = 100 * UNIT
DEPOSIT = 1000 * UNIT + 7  # odd on purpose: shares must still sum to it exactly
SHORT = {
    "join": 600,
    "train": 600,
    "aggregation_commit": 600,
    "aggregation_reveal": 600,
    "global_model": 600,
    "test_set": 600,
    "score_commit": 600,
    "score_reveal": 600,
    "settle": 600,
}


def cid(tag: str) -> bytes:
    """A binary CIDv1 (raw, sha2-256) over ``tag``: real format, deterministic content."""
    import hashlib

    return b"\x01\x55\x12\x20" + hashlib.sha256(tag.encode()).digest()


class World:
    """Fresh, funded accounts and one task on a deployed chain."""

    def __init__(self, chain, dev, dep, n_participants=4, n_validators=4, **task_kw):
        from eth_account import Account

        self.chain, self.dev = chain, dev
        self.din = Din(chain, dep)
        self.owner = Account.create()
        self.parts = [Account.create() for _ in range(n_participants)]
        self.vals = [Account.create() for _ in range(n_validators)]
        self.by_address = {a.address: a for a in [self.owner, *self.parts, *self.vals]}
        for a in self.by_address.values():
            chain.fund(a.address, UNIT)
        self.din.transfer(dev, self.owner.address, 10 * DEPOSIT)
        for v in self.vals:
            self.din.transfer(dev, v.address, 2 * MIN_STAKE)
        kw = {
            "subgroup_size": 2,
            "validators_per_subgroup": 2,
            "max_rounds": 2,
            "fee_bps": 1000,
            "durations": SHORT,
            **task_kw,
        }
        self.task = self.din.create_task(
            self.owner,
            genesis_cid=cid("genesis"),
            arch="mlp-test",
            deposit=DEPOSIT,
            **{"test_set_hash": TEST_SET_HASH, **kw},
        )

    def info(self):
        return self.din.task_info(self.task)

    def join_all(self, stake=True):
        for p in self.parts:
            self.din.join_task(p, self.task, os.urandom(32))
        for v in self.vals:
            if stake:
                self.din.stake(v, MIN_STAKE, x25519_public())
            self.din.register_validator_for_task(v, self.task)

    def start(self):
        self.join_all()
        return self.din.start_round(self.owner, self.task)

    def assigned(self, round_=None):
        """{validator account: group} of the round (0: evaluation)."""
        rnd = self.din.round_info(self.task, round_)
        addrs = self.din.validators(self.task)
        return {
            self.by_address[addrs[i]]: g
            for g, idxs in enumerate(rnd.validator_groups)
            for i in idxs
        }

    def train(self, round_):
        for p in self.parts:
            self.din.submit_update(p, self.task, cid(f"update-{round_}-{p.address}"))

    def aggregate(self, round_, liar=None):
        assigned = self.assigned()
        for v, g in assigned.items():
            tag = f"wrong-{round_}" if v is liar else f"agg-{round_}-{g}"
            self.din.commit_aggregate(v, self.task, cid(tag))
        for v, g in assigned.items():
            tag = f"wrong-{round_}" if v is liar else f"agg-{round_}-{g}"
            self.din.reveal_aggregate(v, self.task, cid(tag))
        return assigned

    def globalise(self, round_):
        model = cid(f"global-{round_}")
        self.din.post_global_model(self.owner, self.task, model)
        for v in self.assigned():
            try:
                self.din.attest_global(v, self.task, model)
            except AlreadyDone:
                pass
        return model

    def to_evaluation(self, rounds=2):
        self.start()
        for r in range(1, rounds + 1):
            self.train(r)
            self.aggregate(r)
            self.globalise(r)
        assert self.info().phase == "test-set"

    def post_test_set(self):
        keys = {v.address: os.urandom(48) for v in self.vals}
        self.din.post_test_set(self.owner, self.task, cid("test-set"), keys)


def x25519_public() -> bytes:
    """A fresh, valid X25519 public key (the registry refuses low-order and non-canonical ones)."""
    from din_cli.crypto import hpke

    return hpke.generate_keypair()[1]


def reverts(reason: str):
    return pytest.raises(TransactionReverted, match=reason)


@pytest.fixture
def world(deployed):
    chain, dev, dep = deployed
    return World(chain, dev, dep)


def scores_for(world, validator, group, offset=0):
    rnd = world.din.round_info(world.task, 0)
    members = rnd.participant_groups[group]
    return [min(10000, 3000 + 1000 * k + 137 * (i % 3) + offset) for k, i in enumerate(members)]


# ---------------------------------------------------------------- the happy path


def test_whole_task_pays_exactly_the_deposit(deployed):
    world = World(*deployed, max_rounds=3)
    din, task = world.din, world.task
    balances = {a: din.balance(a) for a in world.by_address}
    world.start()
    info = world.info()
    assert (info.phase, info.round, info.groups, info.per_group) == ("training", 1, 2, 2)
    assert info.last_round == info.max_rounds == 3

    # Round 1: every participant submits, the phase ends early (no deadline wait).
    world.train(1)
    assert world.info().phase == "aggregation-commit"
    ups = din.updates_submitted(task, 1)
    assert sorted(u.participant for u in ups) == sorted(p.address for p in world.parts)
    for u in ups:  # subgroup from the seed agrees with what the contract placed
        assert u.group == din.subgroup_of(task, u.participant).group
    world.aggregate(1)
    assert world.info().phase == "global-model"
    accepted = din.accepted_aggregates(task, 1)
    assert accepted == {0: cid("agg-1-0"), 1: cid("agg-1-1")}
    model1 = world.globalise(1)
    info = world.info()
    assert (info.phase, info.round) == ("training", 2)
    assert din.round_info(task).model_cid == model1

    # Round 2 is made the last one by the model owner.
    assert din.signal_final_round(world.owner, task) == 2
    with reverts("the current round is already the last one"):
        din.signal_final_round(world.owner, task)
    world.train(2)
    world.aggregate(2)
    model2 = world.globalise(2)
    assert world.info().phase == "test-set"
    assert din.model_cid(task) == model2

    world.post_test_set()
    assert world.info().phase == "score-commit"
    test_cid, keys = din.test_set(task)
    assert test_cid == cid("test-set") and set(keys) == {v.address for v in world.vals}

    assigned = world.assigned(0)
    vectors = {
        v: scores_for(world, v, g) for v, g in assigned.items()
    }  # honest validators agree exactly
    for v, s in vectors.items():
        din.commit_scores(v, task, s)
    for v, s in vectors.items():
        din.reveal_scores(v, task, s)
    assert world.info().phase == "settling"
    assert din.settle(world.dev, task) == [0, 1]
    assert world.info().phase == "settled"

    # The contract's medians and payouts equal the Python reference.
    rnd = din.round_info(task, 0)
    parts, vals = din.participants(task), din.validators(task)
    groups = []
    for g in range(rnd.groups):
        members = [parts[i] for i in rnd.participant_groups[g]]
        vs = [vals[i] for i in rnd.validator_groups[g]]
        groups.append((members, vs, [vectors[world.by_address[a]] for a in vs]))
    ref = settle_task(DEPOSIT, 1000, groups)
    assert din.settlement_results(task) == ref.scores
    paid = {}
    for a, acct in world.by_address.items():
        amount = din.claimable(task, a)
        if amount:
            assert din.claim(acct, task) == amount
            paid[a] = amount
    _, fees = split_deposit(DEPOSIT, 1000)
    assert sum(paid.values()) == DEPOSIT
    for p in parts:
        assert paid.get(p, 0) == ref.participants[p]
    assert (
        [paid.get(v, 0) for v in vals]
        == [fees // len(vals)] * len(vals)
        == [ref.validators[v] for v in vals]
    )
    reg = din.registry.functions
    for a, before in balances.items():
        after = din.balance(a)
        if a == world.owner.address:  # the deposit left before the snapshot
            assert after == before + paid.get(a, 0)
        elif a in {v.address for v in world.vals}:
            # a validator's fee is a network fee: it went to its pool in the registry, 10 % burnt
            # and 10 % to public goods (the deployed shares); the pool's rest is its own (no
            # delegators here), on top of its share of inflation
            assert after == before - MIN_STAKE
            fee = paid[a]
            rest = fee - fee * 1000 // 10_000 - fee * 1000 // 10_000
            assert din.chain.call(reg.pendingRewards(a, a)) >= rest - 1
        else:
            assert after == before + paid.get(a, 0)
    goods = sum(paid[v] * 1000 // 10_000 for v in vals)
    assert din.balance(din.chain.call(reg.grants())) >= goods


def test_minority_aggregator_is_slashed_and_majority_is_not(world):
    din, task = world.din, world.task
    world.start()
    world.train(1)
    assigned = world.assigned()
    # With 2 validators per subgroup a liar blocks the majority; give its subgroup no accepted CID
    liar = next(iter(assigned))
    world.aggregate(1, liar=liar)
    group = assigned[liar]
    assert group not in din.accepted_aggregates(task, 1)
    honest = [v for v, g in assigned.items() if g != group]
    # Nobody is slashed for a subgroup without a majority; the honest one elsewhere neither
    with reverts("validator revealed an aggregate"):
        din.slash_aggregator(world.dev, task, 1, liar.address)
    with reverts("validator revealed the majority aggregate"):
        din.slash_aggregator(world.dev, task, 1, honest[0].address)


def test_validator_that_does_not_reveal_is_slashed_and_removed(deployed):
    chain, dev, dep = deployed
    w = World(
        chain,
        dev,
        dep,
        n_participants=2,
        n_validators=3,
        subgroup_size=2,
        validators_per_subgroup=3,
    )
    din, task = w.din, w.task
    w.start()
    w.train(1)
    lazy, liar, good = list(w.assigned())
    for v, tag in ((lazy, "agg"), (liar, "other"), (good, "agg")):
        din.commit_aggregate(v, task, cid(tag))
    din.reveal_aggregate(good, task, cid("agg"))
    din.reveal_aggregate(liar, task, cid("other"))
    with reverts("not in the global model phase"):
        din.post_global_model(w.owner, task, cid("g"))  # the reveal phase waits for `lazy`
    chain.advance_time(601)
    din.advance(dev, task)
    assert w.info().phase == "global-model"
    assert din.accepted_aggregates(task, 1) == {}  # 1 of 3 is no majority
    stake = din.validator_info(lazy.address).stake
    assert din.slash_aggregator(dev, task, 1, lazy.address) == MIN_STAKE // 10
    assert din.validator_info(lazy.address).stake == stake - MIN_STAKE // 10
    assert din.slashable_aggregators(task, 1) == []
    with reverts("validator already removed"):
        din.slash_aggregator(dev, task, 1, lazy.address)
    with reverts("validator revealed an aggregate"):
        din.slash_aggregator(dev, task, 1, liar.address)
    din.post_global_model(w.owner, task, cid("g"))
    with reverts("validator was slashed out of this task"):
        din.attest_global(lazy, task, cid("g"))


def test_minority_revealer_slashed_when_majority_exists(deployed):
    chain, dev, dep = deployed
    w = World(
        chain,
        dev,
        dep,
        n_participants=2,
        n_validators=3,
        subgroup_size=2,
        validators_per_subgroup=3,
    )
    din, task = w.din, w.task
    w.start()
    w.train(1)
    a, b, liar = list(w.assigned())
    for v, tag in ((a, "agg"), (b, "agg"), (liar, "bad")):
        din.commit_aggregate(v, task, cid(tag))
    for v, tag in ((a, "agg"), (b, "agg"), (liar, "bad")):
        din.reveal_aggregate(v, task, cid(tag))
    assert din.accepted_aggregates(task, 1) == {0: cid("agg")}
    # until the task settles a dispute may still overturn the majority: the minority is safe
    assert din.slashable_aggregators(task, 1) == []
    with reverts("a minority is slashable once the task settles"):
        din.slash_aggregator(dev, task, 1, liar.address)
    w.globalise(1)
    w.train(2)
    w.aggregate(2)
    w.globalise(2)
    assert w.info().phase == "test-set"  # aggregates are still disputable: the minority too safe
    assert din.slashable_aggregators(task, 1) == []
    w.post_test_set()
    score_round(w, lambda v, g, honest: honest)
    assert w.info().phase == "settling"
    assert din.slashable_aggregators(task, 1) == [liar.address]
    assert din.slash_aggregator(dev, task, 1, liar.address) > 0
    with reverts("validator revealed the majority aggregate"):
        din.slash_aggregator(dev, task, 1, a.address)


# ---------------------------------------------------------------- reverts


def test_wrong_phase_late_double_and_non_member_submissions(world):
    din, task = world.din, world.task
    p = world.parts[0]
    din.join_task(p, task, os.urandom(32))
    with reverts("not in the training phase"):
        din.submit_update(p, task, cid("early"))
    with reverts("already joined"):
        din.join_task(p, task, os.urandom(32))
    for q in world.parts[1:]:
        din.join_task(q, task, os.urandom(32))
    for v in world.vals:
        din.stake(v, MIN_STAKE, x25519_public())
        din.register_validator_for_task(v, task)
    with reverts("only the model owner starts before the join deadline"):
        din.start_round(p, task)
    din.start_round(world.owner, task)
    with reverts("task already started"):
        din.start_round(world.owner, task)
    with reverts("task is not open for joining"):
        din.join_task(world.dev, task, os.urandom(32))
    din.submit_update(p, task, cid("u1"))
    with reverts("update already submitted this round"):
        din.submit_update(p, task, cid("u1-again"))
    with reverts("not a participant of this task"):
        din.submit_update(world.vals[0], task, cid("intruder"))
    world.chain.advance_time(601)
    with reverts("not in the training phase"):
        din.submit_update(world.parts[1], task, cid("late"))
    din.advance(world.dev, task)
    assert world.info().phase == "aggregation-commit"


def test_under_staked_validator_cannot_register(world):
    din, task = world.din, world.task
    v = world.vals[0]
    with reverts("stake below minimum"):
        din.register_validator_for_task(v, task)
    with reverts("stake below minimum"):
        din.stake(v, MIN_STAKE - 1, x25519_public())
    din.stake(v, MIN_STAKE, x25519_public())
    din.unstake(v)
    with reverts("stake below minimum"):  # unstaking validators are not active
        din.register_validator_for_task(v, task)
    with reverts("unstake delay not over"):
        din.withdraw(v)
    world.chain.advance_time(3601)
    before = din.balance(v.address)
    assert din.withdraw(v) == MIN_STAKE
    assert din.balance(v.address) == before + MIN_STAKE


def test_reveal_must_match_commitment(world):
    din, task = world.din, world.task
    world.start()
    world.train(1)
    assigned = world.assigned()
    v = next(iter(assigned))
    others = [u for u in world.vals if u not in assigned]
    for u in others:
        with reverts("validator not assigned this round"):
            din.commit_aggregate(u, task, cid("x"))
    din.commit_aggregate(v, task, cid("mine"))
    with reverts("aggregate already committed this round"):
        din.commit_aggregate(v, task, cid("mine"))
    for u in list(assigned)[1:]:
        din.commit_aggregate(u, task, cid("theirs"))
    with reverts("reveal does not match commitment"):
        din.reveal_aggregate(v, task, cid("not-mine"))
    with reverts("reveal does not match commitment"):
        din.reveal_aggregate(v, task, cid("mine"), salt=os.urandom(32))
    din.reveal_aggregate(v, task, cid("mine"))
    with reverts("aggregate already revealed this round"):
        din.reveal_aggregate(v, task, cid("mine"))


def test_roles_are_enforced(world):
    din, task = world.din, world.task
    with reverts("the model owner cannot participate"):
        din.join_task(world.owner, task, os.urandom(32))
    world.start()
    world.train(1)
    world.aggregate(1)
    with reverts("only the model owner"):
        din.post_global_model(world.parts[0], task, cid("g"))
    with reverts("CID is not the proposed global model"):
        din.attest_global(world.vals[0], task, cid("g"))
    with reverts("only the model owner"):
        din.signal_final_round(world.parts[0], task)
    with reverts("not in the test set phase"):
        din.post_test_set(world.owner, task, cid("t"), {})
    with reverts("not in the settlement phase"):
        world.chain.send(world.dev, din.tasks.functions.settle(task, 0, [], [], b""))
    with reverts("task is not settled"):
        din.claim(world.parts[0], task)


def test_scores_reveal_settle_and_claim_twice(deployed):
    """A lazy validator revealing a constant 5000 is a minority: slashed, no fee (old: tolerated)."""
    w = World(*deployed, n_validators=6, validators_per_subgroup=3)
    din, task = w.din, w.task
    w.to_evaluation(rounds=2)
    with reverts("not in the score commit phase"):
        din.commit_scores(w.vals[0], task, [1, 2])
    w.post_test_set()
    items = list(w.assigned(0).items())
    lazy = items[1][0]
    vectors = {}
    for v, g in items:
        honest = scores_for(w, v, g)
        vectors[v] = [5000] * len(honest) if v is lazy else honest
        din.commit_scores(v, task, vectors[v])
    v0, _ = items[0]
    good = vectors[v0]
    with reverts("reveal does not match commitment"):
        din.reveal_scores(v0, task, [s + 1 for s in good])
    with reverts("score vector length differs from the subgroup size"):
        din.reveal_scores(v0, task, good + [1])
    salt = derive_salt(v0, task, 0, "scores")
    with reverts("score vector length differs from the subgroup size"):  # half a score
        w.chain.send(v0, din.tasks.functions.revealScores(task, pack_scores(good)[:-1], salt))
    over = pack_scores(good)[:-2] + (10001).to_bytes(2, "big")
    with reverts("score above 10000"):
        w.chain.send(v0, din.tasks.functions.revealScores(task, over, salt))
    din.reveal_scores(v0, task, good)
    with reverts("scores already revealed"):
        din.reveal_scores(v0, task, good)
    for v, _ in items[1:]:
        din.reveal_scores(v, task, vectors[v])
    # the lazy vector cannot be passed off as the subgroup's: it has no majority
    g_lazy = items[1][1]
    parts_g, vals_g, majority = din.settlement_inputs(task, g_lazy)
    assert majority == scores_for(w, items[0][0], g_lazy)
    with reverts("scores differ from the accepted vector"):
        w.chain.send(
            w.dev,
            din.tasks.functions.settle(task, g_lazy, parts_g, vals_g, pack_scores(vectors[lazy])),
        )
    with reverts("scores differ from the accepted vector"):
        w.chain.send(w.dev, din.tasks.functions.settle(task, g_lazy, parts_g, vals_g, b""))
    with reverts("validators disagree"):  # the lazy one dissents: first the window for a dispute
        din.settle(w.dev, task, [g_lazy])
    w.chain.advance_time(w.info().durations["settle"] // 2)
    din.settle(w.dev, task)
    with reverts("not in the settlement phase"):
        w.chain.send(w.dev, din.tasks.functions.settle(task, 0, [], [], b""))
    p = w.parts[0]
    assert din.claim(p, task) > 0
    with reverts("already claimed"):
        din.claim(p, task)
    with reverts("nothing to claim"):
        din.claim(w.dev, task)
    for a in w.by_address.values():
        if din.claimable(task, a.address):
            din.claim(a, task)
    paid: dict[str, int] = {}
    for e in din.events(task, "Claimed"):
        paid[e["args"]["account"]] = paid.get(e["args"]["account"], 0) + e["args"]["amount"]
    assert sum(paid.values()) == DEPOSIT
    rnd = din.round_info(task, 0)
    parts, vals = din.participants(task), din.validators(task)
    groups = [
        (
            [parts[i] for i in rnd.participant_groups[g]],
            [vals[i] for i in rnd.validator_groups[g]],
            [vectors[w.by_address[vals[i]]] for i in rnd.validator_groups[g]],
        )
        for g in range(rnd.groups)
    ]
    ref = settle_task(DEPOSIT, 1000, groups)
    assert ref.penalised == {lazy.address}
    assert [e["args"]["validator"] for e in din.events(task, "ValidatorPenalised")] == [
        lazy.address
    ]
    assert din.validator_info(lazy.address).stake == MIN_STAKE - MIN_STAKE // 10
    assert paid.get(lazy.address, 0) == 0
    for who, amount in {**ref.participants, **ref.validators}.items():
        assert paid.get(who, 0) == amount, who
    assert paid.get(w.owner.address, 0) == ref.owner == 0


def score_round(w, choose):
    """Commit and reveal score vectors: ``choose(validator, group, honest)`` gives one or None."""
    chosen = {}
    for v, g in w.assigned(0).items():
        vec = choose(v, g, scores_for(w, v, g))
        if vec is not None:
            chosen[v] = vec
            w.din.commit_scores(v, w.task, vec)
    if w.info().phase == "score-commit":  # someone stayed silent: let the phase run out
        w.chain.advance_time(601)
        w.din.advance(w.dev, w.task)
    for v, vec in chosen.items():
        w.din.reveal_scores(v, w.task, vec)
    return chosen


def test_copied_vector_and_no_majority_split(deployed):
    """4 validators per subgroup. Group A: one copies another subgroup's honest vector (slashed).
    Group B: a 2-of-4 split (two honest, two colluders) has no strict majority: everyone there
    scores 0, nobody is slashed (all revealed), nobody earns a fee; a silent one would be slashed."""
    w = World(*deployed, n_participants=4, n_validators=8, validators_per_subgroup=4, max_rounds=1)
    din, task = w.din, w.task
    w.to_evaluation(rounds=1)
    w.post_test_set()
    assigned = w.assigned(0)
    by_group = {}
    for v, g in assigned.items():
        by_group.setdefault(g, []).append(v)
    ga, gb = sorted(by_group)
    copier = by_group[ga][0]
    colluders = by_group[gb][:2]
    copied = [10000 - s for s in scores_for(w, None, gb)]  # what the colluders of B reveal

    def choose(v, g, honest):
        if v is copier:
            return copied  # same length, another subgroup's vector
        if v in colluders:
            return [10000 - s for s in honest]
        return honest

    score_round(w, choose)
    assert w.info().phase == "settling"
    w.chain.advance_time(w.info().durations["settle"] // 2)  # both subgroups dissent
    din.settle(w.dev, task)
    penalised = {e["args"]["validator"] for e in din.events(task, "ValidatorPenalised")}
    assert penalised == {copier.address}
    results = din.settlement_results(task)
    rnd = din.round_info(task, 0)
    parts = din.participants(task)
    assert all(results[parts[i]] == 0 for i in rnd.participant_groups[gb])
    assert [results[parts[i]] for i in rnd.participant_groups[ga]] == scores_for(w, None, ga)
    for v in by_group[gb]:
        assert din.claimable(task, v.address) == 0  # no fee without a majority
    fee = DEPOSIT * 1000 // 10000 // 3
    for v in by_group[ga]:
        assert din.claimable(task, v.address) == (0 if v is copier else fee)


def test_abandoned_task_refunds_contributors(world):
    """No test set by its deadline, and no accepted result to prove a record with: once the proof
    window closes, the deposit is split equally among participants that submitted."""
    din, task = world.din, world.task
    world.start()
    trainers = world.parts[:3]
    for p in trainers:
        din.submit_update(p, task, cid(p.address))
    world.chain.advance_time(601)  # training ends without the 4th
    din.advance(world.dev, task)
    world.chain.advance_time(601 * 4)  # commit, reveal, global and round 2 expire one by one
    for _ in range(12):
        if world.info().phase in ("test-set", "abandoned"):
            break
        world.chain.advance_time(601)
        din.advance(world.dev, task)
    assert world.info().phase == "test-set"
    world.chain.advance_time(601)
    din.advance(world.dev, task)
    assert world.info().phase == "abandoned"
    with reverts("nothing to claim"):  # the window in which participants prove records
        din.claim(trainers[0], task)
    world.chain.advance_time(601)
    paid = [din.claim(p, task) for p in trainers]
    assert sum(paid) == DEPOSIT and max(paid) - min(paid) <= 1
    with reverts("nothing to claim"):
        din.claim(world.parts[3], task)
    with reverts("nothing to claim"):
        din.claim(world.owner, task)


def test_task_without_participants_refunds_the_owner(world):
    din, task = world.din, world.task
    before = din.balance(world.owner.address)
    world.chain.advance_time(601)
    din.advance(world.dev, task)
    assert world.info().phase == "abandoned"
    assert din.claim(world.owner, task) == DEPOSIT
    assert din.balance(world.owner.address) == before + DEPOSIT
    with reverts("already claimed"):
        din.claim(world.owner, task)


def test_max_samples_is_fixed_at_creation(deployed):
    """The per-participant weight cap is a task parameter the owner cannot leave out or change."""
    chain, dev, dep = deployed
    w = World(chain, dev, dep, max_samples=1234)
    assert w.info().max_samples == 1234
    assert w.info().as_dict()["max_samples"] == 1234
    assert World(chain, dev, dep).info().max_samples == 2**16
    with reverts("max samples must be positive"):
        World(chain, dev, dep, max_samples=0)


def test_the_metric_is_fixed_at_creation_and_must_be_known(deployed, monkeypatch):
    """Validators read the metric from the task; the contract refuses a number it does not know."""
    import din_cli.chain.din as dinmod

    chain, dev, dep = deployed
    assert World(chain, dev, dep, metric="loss").info().metric == "loss"
    assert World(chain, dev, dep).info().metric == "accuracy"
    with pytest.raises(UsageError, match="metric 'auc' is not one of"):
        World(chain, dev, dep, metric="auc")
    monkeypatch.setattr(dinmod, "METRICS", (*dinmod.METRICS, "auc"))  # a client that sends 3
    with reverts(r"metric must be 0 \(accuracy\), 1 \(f1\) or 2 \(loss\)"):
        World(chain, dev, dep, metric="auc")


def test_round_seed_fixes_an_assignment_the_contract_accepts(world):
    """Every validator the Python assignment names can commit; no other can."""
    din, task = world.din, world.task
    world.start()
    world.train(1)
    info = world.info()
    rnd = din.round_info(task)
    assert rnd.seed != bytes(32)
    named = world.assigned()
    assert len(named) == info.groups * info.per_group
    for v in world.vals:
        if v in named:
            din.commit_aggregate(v, task, cid("a"))
    contract = din.disputes
    for i in range(info.participants):
        pos = world.chain.call(
            contract.functions.assignmentPosition(rnd.seed, 0, i, info.participants)
        )
        assert pos == assignment.permute(
            assignment.population_key(rnd.seed, 0), i, info.participants
        )
    assert din.model_cid(task) == cid("genesis")
    assert info.model_digest == cid_digest(cid("genesis"))


def test_gas_budgets_hold_for_every_call(deployed):
    """Per-call gas budgets (benchmarks/gas.py measures them at 100 participants x 10 validators)."""
    chain, dev, dep = deployed
    used: dict[str, list[int]] = {}
    by_sender: dict[tuple[str, str], int] = {}
    send = chain.send

    def recording(account, fn, **kw):
        receipt = send(account, fn, **kw)
        name, gas = getattr(fn, "fn_name", "?"), int(receipt["gasUsed"])
        used.setdefault(name, []).append(gas)
        by_sender[(name, receipt["from"])] = gas
        return receipt

    chain.send = recording
    try:
        w = World(
            chain,
            dev,
            dep,
            n_participants=6,
            n_validators=6,
            subgroup_size=3,
            validators_per_subgroup=3,
            max_rounds=1,
        )
        w.start()
        w.train(1)
        w.aggregate(1)
    finally:
        chain.send = send
    assert max(used["joinTask"]) <= 80_000
    # registering bonds stake in the registry, which checks the validator's self-stake (its
    # share of a delegated pool): ~82k
    assert max(used["registerValidator"]) <= 90_000
    assert max(used["submitUpdate"]) <= 60_000
    # Per validator, as benchmarks/gas.py sums it. The world commits and reveals in one order, so
    # the validator whose commit ends the commit phase also reveals last and ends the reveal phase
    # (the dearest pair). Commit's gas grows with the Feistel passes of the validator's cycle walk
    # (geometric, 16/6 on average here, a seed's luck): the budget holds up to 3 passes, and each
    # pass beyond costs one more pass's gas (4 keccaks, under 1,000 gas).
    key = assignment.population_key(w.din.round_info(w.task, 1).seed, assignment.VALIDATORS)
    index = {a: i for i, a in enumerate(w.din.validators(w.task))}
    committers = [a for (n, a) in by_sender if n == "commitAggregate"]
    assert len(committers) == 6
    for a in committers:
        pair = by_sender[("commitAggregate", a)] + by_sender[("revealAggregate", a)]
        passes = assignment.feistel_passes(key, index[a], 6)
        assert pair <= 120_000 + 1_000 * max(0, passes - 3), (a, pair, passes)


def test_evaluation_nobody_reveals_pays_the_contributors_and_slashes(world):
    """No validator scores: every score is 0 and they are all slashed. Old: the owner got the whole
    deposit back (its own silent validators were a cheap way to take it). New: the contributors."""
    din, task = world.din, world.task
    world.to_evaluation(rounds=2)
    world.post_test_set()
    world.chain.advance_time(601)  # score commit expires; the empty reveal phase ends at once
    din.advance(world.dev, task)
    assert world.info().phase == "settling"
    din.settle(world.dev, task)
    assert world.info().phase == "settled"
    assigned = world.assigned(0)
    penalised = {e["args"]["validator"] for e in din.events(task, "ValidatorPenalised")}
    assert penalised == {v.address for v in assigned}
    with reverts("nothing to claim"):
        din.claim(world.owner, task)
    with reverts("nothing to claim"):  # the contributors' split waits for the records' window
        din.claim(world.parts[0], task)
    world.chain.advance_time(world.info().deadline - world.chain.now())
    paid = [din.claim(p, task) for p in world.parts]
    assert sum(paid) == DEPOSIT and max(paid) - min(paid) <= 1


# ---------------------------------------------------------------- attacks: admin powers (issue 10, item 8)


def test_nobody_can_mint_or_name_a_slasher_after_deployment(deployed):
    """Old: the token owner minted at will and the registry owner added slashers. New: only the
    registry mints (its emission schedule), and the minter, the task manager, the governor and
    the public-goods pool were named once at deployment."""
    chain, dev, dep = deployed
    from eth_account import Account

    din = Din(chain, dep)
    attacker = Account.create()
    chain.fund(attacker.address, UNIT)
    token_fns = {f.get("name") for f in din.token.abi}
    registry_fns = {f.get("name") for f in din.registry.abi}
    assert not token_fns & {"owner", "transferOwnership"}
    assert not registry_fns & {"setSlasher", "owner", "transferOwnership"}
    assert chain.call(din.token.functions.minter()) == dep["ValidatorRegistry"]
    supply = chain.call(din.token.functions.totalSupply())
    for who in (dev, attacker):  # the deployer included
        with reverts("caller is not the minter"):
            chain.send(who, din.token.functions.mint(who.address, 10**30))
        with reverts("only the deployer sets the minter"):
            chain.send(attacker, din.token.functions.setMinter(attacker.address))
    with reverts("minter already set"):
        chain.send(dev, din.token.functions.setMinter(dev.address))
    assert chain.call(din.token.functions.totalSupply()) == supply
    # the task manager was named once at deployment; nobody can name another one
    assert chain.call(din.registry.functions.tasks()) == dep["DinTasks"]
    a = attacker.address
    with reverts("only the deployer initializes"):
        chain.send(attacker, din.registry.functions.initialize(a, a, a, a))
    with reverts("already initialized"):
        chain.send(dev, din.registry.functions.initialize(a, a, a, a))
    # parameters change only through governance
    for fn in (
        din.registry.functions.setMinStake(1),
        din.registry.functions.setOffenceSlashBps(10_000),
        din.registry.functions.setFeeShares(0, 10_000),
        din.registry.functions.setInflation(10**30, 1),
    ):
        with reverts("only governance changes parameters"):
            chain.send(dev, fn)
    # only the task manager may slash, bond or unbond
    victim = Account.create()
    chain.fund(victim.address, UNIT)
    din.transfer(dev, victim.address, MIN_STAKE)
    din.stake(victim, MIN_STAKE, x25519_public())
    for who in (dev, attacker):
        with reverts("caller is not the task manager"):
            chain.send(who, din.registry.functions.slash(victim.address, MIN_STAKE))
        with reverts("caller is not the task manager"):
            chain.send(who, din.registry.functions.bond(victim.address, MIN_STAKE))
        with reverts("caller is not the task manager"):
            chain.send(who, din.registry.functions.unbond(victim.address, 0))
    assert din.validator_info(victim.address).stake == MIN_STAKE


# ---------------------------------------------------------------- attacks: bonded stake (issue 10, item 4)


def test_stake_serving_a_task_cannot_be_withdrawn_until_it_ends(deployed):
    """Old: a validator unstaked and withdrew mid-task, so a later slash burnt 0. New: its bond holds."""
    chain, dev, dep = deployed
    w = World(chain, dev, dep)
    din, task = w.din, w.task
    w.start()
    w.train(1)  # the first transaction after the start draws round 1's subgroups
    escaper = next(iter(w.assigned(1)))  # assigned in round 1, so its silence is slashable
    assert din.validator_info(escaper.address).bonded == MIN_STAKE // 10
    assert din.bonded(task, escaper.address)
    din.unstake(escaper)
    chain.advance_time(3601)  # past the unstake delay; nobody aggregated round 1
    din.advance(dev, task)
    with reverts("stake is bonded to a task in progress"):
        din.withdraw(escaper)
    with reverts("task is not settled"):
        din.release(dev, task, escaper.address)
    # it did not aggregate in round 1: slashable, and the slash burns its bond
    assert din.slash_aggregator(dev, task, 1, escaper.address) == MIN_STAKE // 10
    info = din.validator_info(escaper.address)
    assert (info.stake, info.bonded) == (MIN_STAKE - MIN_STAKE // 10, 0)


def test_bond_is_released_when_the_task_ends_and_then_withdraw_works(world):
    din, task, dev = world.din, world.task, world.dev
    v = world.vals[0]
    for q in world.vals:
        din.stake(q, MIN_STAKE, x25519_public())
        din.register_validator_for_task(q, task)
    din.unstake(v)
    world.chain.advance_time(3601)  # the join deadline passes with no participant: abandoned
    din.advance(dev, task)
    assert world.info().phase == "abandoned"
    with reverts("stake is bonded to a task in progress"):
        din.withdraw(v)
    din.release(dev, task, v.address)  # anyone may release an ended task's bond
    with reverts("no bond to release"):
        din.release(dev, task, v.address)
    assert din.validator_info(v.address).bonded == 0
    assert din.withdraw(v) == MIN_STAKE
    # claim releases the bond too, even with nothing to pay
    other = world.vals[1]
    assert din.claim(other, task) == 0
    assert din.validator_info(other.address).bonded == 0
    with reverts("nothing to claim"):
        din.claim(other, task)


def test_one_stake_cannot_back_more_tasks_than_it_covers(deployed):
    """Old: isActive was the only check, so one minimum stake backed any number of tasks."""
    chain, dev, dep = deployed
    a = World(chain, dev, dep, slash_amount=MIN_STAKE // 2)
    b = World(chain, dev, dep, slash_amount=MIN_STAKE // 2)
    c = World(chain, dev, dep, slash_amount=1)
    v = a.vals[0]
    a.din.stake(v, MIN_STAKE, x25519_public())
    a.din.register_validator_for_task(v, a.task)
    b.din.register_validator_for_task(v, b.task)
    assert a.din.validator_info(v.address).bonded == MIN_STAKE
    with reverts("free stake below the task's slash amount"):
        c.din.register_validator_for_task(v, c.task)
    a.din.stake(v, 1, x25519_public())  # one more unit of stake covers the third
    c.din.register_validator_for_task(v, c.task)


P25519 = 2**255 - 19
LOW_ORDER = [
    0,
    1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
    P25519 - 1,
]


def test_registry_refuses_low_order_and_non_canonical_hpke_keys(world):
    """Old: any non-zero 32 bytes; a low-order key makes every wrap to it a known secret.

    Every refused key is one X25519 itself rejects (all-zero shared secret) or a
    non-canonical encoding (>= p, or the top bit set) of some other point.
    """
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    din, v = world.din, world.vals[0]
    bad = [u.to_bytes(32, "little") for u in LOW_ORDER]
    bad += [(u + P25519).to_bytes(32, "little") for u in LOW_ORDER if u + P25519 < 2**256]
    bad += [bytes(31) + b"\x80", b"\xff" * 32]
    for key in bad:
        with reverts("HPKE public key is empty, low-order or not canonical"):
            din.stake(v, MIN_STAKE, key)
        assert not world.chain.call(din.registry.functions.validKey(key))
    for u in LOW_ORDER:  # the contract's list is exactly the points X25519 refuses
        with pytest.raises(ValueError):
            X25519PrivateKey.generate().exchange(
                X25519PublicKey.from_public_bytes(u.to_bytes(32, "little"))
            )
    good = x25519_public()
    assert world.chain.call(din.registry.functions.validKey(good))
    din.stake(v, MIN_STAKE, good)
    assert din.validator_info(v.address).hpke_key == good


# ---------------------------------------------------------------- attacks: every lie punishable (issue 10, item 3)


def honest_scores(w):
    score_round(w, lambda v, g, honest: honest)


def test_lie_in_a_past_round_is_slashable_until_settlement_and_forfeits_the_fee(deployed):
    """Old: committing again in the next round erased the record, so a round-1 liar escaped and
    kept its fee. New: per-round records; slashable during SETTLING even after its subgroup settled."""
    w = World(*deployed, n_participants=4, n_validators=6, validators_per_subgroup=3, max_rounds=2)
    din, task, dev = w.din, w.task, w.dev
    w.start()
    w.train(1)
    liar = next(iter(w.assigned(1)))
    w.aggregate(1, liar=liar)  # 2 of 3 honest: the honest CID is accepted, the liar is a minority
    w.globalise(1)
    w.train(2)
    w.aggregate(2)  # the liar commits again (old: "too late to slash for that round")
    w.globalise(2)
    w.post_test_set()
    honest_scores(w)
    assert w.info().phase == "settling"
    assert din.slashable_aggregators(task, 1) == [liar.address]
    liar_group = w.assigned(0)[liar]
    din.settle(dev, task, [liar_group])  # its evaluation subgroup settles first: it earned a fee
    assert w.info().good_validators == 3
    assert din.slash_aggregator(dev, task, 1, liar.address) == MIN_STAKE // 10
    assert w.info().good_validators == 2  # the fee is forfeited
    din.settle(dev, task)
    assert w.info().phase == "settled"
    with reverts("task has ended: too late to slash"):
        din.slash_aggregator(dev, task, 2, w.vals[1].address)
    with reverts("nothing to claim"):  # no fee, and no bond left: the slash burnt it
        din.claim(liar, task)
    assert din.validator_info(liar.address).bonded == 0
    paid = {liar.address: 0}
    for a in w.by_address.values():
        if din.claimable(task, a.address):
            paid[a.address] = din.claim(a, task)
    assert sum(paid.values()) == DEPOSIT
    fee = DEPOSIT * 1000 // 10000 // 5
    assert sorted(paid[v.address] for v in w.vals) == [0] + [fee] * 5


def test_rewards_settle_slashes_liars_of_every_round(tmp_path, deployed):
    """`din rewards settle` (protocol.rewards.settle) slashes round-1 liars and non-revealers."""
    from din_cli.protocol import rewards

    class Ctx:  # the slice of the protocol context settle uses
        def __init__(self, w):
            self.din, self.chain, self.account, self.address = w.din, w.chain, w.dev, w.dev.address

    w = World(*deployed, n_participants=4, n_validators=6, validators_per_subgroup=3, max_rounds=2)
    din, task = w.din, w.task
    w.start()
    w.train(1)
    liar = next(iter(w.assigned(1)))
    w.aggregate(1, liar=liar)
    w.globalise(1)
    w.train(2)
    assigned = w.assigned(2)
    silent = next(v for v in assigned if v is not liar)
    for v, g in assigned.items():
        if v is not silent:
            din.commit_aggregate(v, task, cid(f"agg-2-{g}"))
    w.chain.advance_time(601)  # the silent one never commits: the commit phase runs out
    din.advance(w.dev, task)
    for v, g in assigned.items():
        if v is not silent:
            din.reveal_aggregate(v, task, cid(f"agg-2-{g}"))
    model = cid("global-2")
    din.post_global_model(w.owner, task, model)
    for v in assigned:
        if v is not silent:
            try:
                din.attest_global(v, task, model)
            except AlreadyDone:
                pass
    w.post_test_set()
    score_round(w, lambda v, g, honest: None if v is silent else honest)
    out = rewards.settle(Ctx(w), task)
    assert {(s["validator"], s["round"]) for s in out["slashed"]} == {
        (liar.address, 1),
        (silent.address, 2),
    }
    assert w.info().phase == "settled"


def test_settling_has_a_deadline_and_unsettled_subgroups_score_zero(deployed):
    """Old: SETTLING had no deadline, so a subgroup nobody settled locked the deposit forever."""
    w = World(*deployed, max_rounds=1)
    din, task, dev = w.din, w.task, w.dev
    w.to_evaluation(rounds=1)
    w.post_test_set()
    honest_scores(w)
    info = w.info()
    assert info.phase == "settling" and info.deadline < 2**64 - 1
    din.settle(dev, task, [0])
    w.chain.advance_time(601)
    din.advance(dev, task)
    assert w.info().phase == "settled"
    rnd = din.round_info(task, 0)
    parts = din.participants(task)
    unsettled = {parts[i] for i in rnd.participant_groups[1]}
    paid = {}
    for a in w.by_address.values():
        if din.claimable(task, a.address):
            paid[a.address] = din.claim(a, task)
    assert sum(paid.values()) == DEPOSIT
    assert not unsettled & set(paid)
    assert all(paid.get(parts[i], 0) > 0 for i in rnd.participant_groups[0])


# ---------------------------------------------------------------- attacks: liveness (issue 10, item 8)


def test_sybil_joins_beyond_what_validators_cover_sit_out_instead_of_abandoning(deployed):
    """Old: joining Sybils until subgroups outnumbered validators abandoned the task at start."""
    chain, dev, dep = deployed
    w = World(
        chain,
        dev,
        dep,
        n_participants=7,
        n_validators=2,
        subgroup_size=2,
        validators_per_subgroup=1,
    )
    din, task = w.din, w.task
    for p in w.parts:
        din.join_task(p, task, os.urandom(32))
    for v in w.vals:
        din.stake(v, MIN_STAKE, x25519_public())
        din.register_validator_for_task(v, task)
    chain.advance_time(601)  # the join deadline passes: anyone's call starts the task
    din.advance(dev, task)
    info = w.info()
    assert (info.phase, info.participants, info.groups, info.per_group) == ("training", 4, 2, 1)
    assert din.participants(task) == [p.address for p in w.parts[:4]]
    for late in w.parts[4:]:
        with reverts("not a participant of this task"):
            din.submit_update(late, task, cid("sybil"))
    for p in w.parts[:4]:
        din.submit_update(p, task, cid(p.address))
    assert w.info().phase == "aggregation-commit"


def test_subgroup_sizes_are_capped_at_creation(deployed):
    chain, dev, dep = deployed
    with reverts("at most 256 participants per subgroup"):
        World(chain, dev, dep, subgroup_size=257)
    with reverts("at most 64 validators per subgroup"):
        World(chain, dev, dep, validators_per_subgroup=65)
    with reverts("slash amount must be 1..minimum stake"):  # 0 would bond nothing and slash nothing
        World(chain, dev, dep, slash_amount=0)
    assert (
        World(chain, dev, dep, subgroup_size=256, validators_per_subgroup=64).info().subgroup_size
        == 256
    )


# ---------------------------------------------------------------- attacks: the owner's test set (issue 10, item 7)


def test_owner_commits_to_its_test_set_and_wraps_k_to_exactly_the_evaluation_validators(deployed):
    """Old: postTestSet checked only that the arrays had equal lengths, so the owner could wrap K to
    nobody (or to strangers) and let the evaluation fail. New: exactly the evaluation slots, in order."""
    chain, dev, dep = deployed
    w = World(chain, dev, dep, n_validators=6, validators_per_subgroup=2, max_rounds=1)
    din, task = w.din, w.task
    assert w.info().test_set_hash == TEST_SET_HASH
    with pytest.raises(InputError, match="test set hash"):
        World(chain, dev, dep, test_set_hash=bytes(32))
    w.to_evaluation(rounds=1)
    rnd = din.round_info(task, 0)
    addrs = din.validators(task)
    slots = [addrs[i] for g in rnd.validator_groups for i in g]
    outsiders = [a for a in addrs if a not in slots]
    assert len(slots) == 4 and len(outsiders) == 2

    def post(validators, keys):
        chain.send(
            w.owner, din.tasks.functions.postTestSet(task, cid("test-set"), validators, keys)
        )

    key = os.urandom(48)
    with reverts("wrap K to exactly the evaluation validators"):
        post([], [])
    with reverts("wrap K to exactly the evaluation validators"):
        post(slots[:3], [key] * 3)
    with reverts("validator not in this evaluation slot"):
        post([slots[1], slots[0], *slots[2:]], [key] * 4)  # wrong order
    with reverts("validator not in this evaluation slot"):
        post([outsiders[0], *slots[1:]], [key] * 4)
    with reverts("wrapped key is empty"):
        post(slots, [key, key, b"", key])
    post(slots, [key] * 4)
    assert w.info().phase == "score-commit"


# ---------------------------------------------------------------- attacks: predictable subgroups (issue 10, item 9)


def test_round_one_seed_is_the_hash_of_the_block_that_started_it(deployed):
    """Old: the seed was keccak(prevrandao, id, round) of the block that started the round, a value
    the sender of the starting transaction sees before it sends (the next block's prevrandao), so
    it could wait for a block it liked. New: round 1's seed comes from the hash of the block that
    started it, which no sender into that block knows; the first transaction after it draws it."""
    from eth_abi import encode

    from din_cli.chain.assignment import keccak

    chain, dev, dep = deployed
    w = World(chain, dev, dep)
    w.start()
    started = w.din.events(w.task, "RoundStarted")[-1]
    b = started["blockNumber"]
    raw = int.from_bytes(bytes(w.din._call(w.din.tasks.functions.roundSeed(w.task, 1))), "big")
    assert raw == (1 << 255) | b  # pending: nothing about the subgroups is fixed in the start block
    assert w.din.events(w.task, "SeedDrawn") == []
    block_hash = bytes(chain.w3.eth.get_block(b)["hash"])
    want = keccak(encode(["bytes32", "uint256", "uint256"], [block_hash, w.task, 1]))
    assert w.din.round_info(w.task, 1).seed is None  # in the start block nobody can know it
    w.din.transfer(dev, dev.address, 1)  # a block later (no call on the task yet)
    assert w.din.round_info(w.task, 1).seed == want  # what the next call on the task will draw
    w.train(1)  # the first participant's submission draws it
    drawn = w.din.events(w.task, "SeedDrawn")
    assert [(int(e["args"]["round"]), bytes(e["args"]["seed"])) for e in drawn] == [(1, want)]
    assert drawn[0]["blockNumber"] > b
    assert bytes(w.din._call(w.din.tasks.functions.roundSeed(w.task, 1))) == want
    randao = bytes(chain.w3.eth.get_block(b)["mixHash"])
    assert want != keccak(encode(["bytes32", "uint256", "uint256"], [randao, w.task, 1]))


def _entropy(w) -> bytes:
    """The task's entropy recomputed from the chain: keccak(blockhash(creation - 1), id), XORed
    with keccak(salt, validator) for every aggregate reveal, salts read from the reveal calldata."""
    from eth_abi import encode

    from din_cli.chain.assignment import keccak

    created = w.din.events(w.task, "TaskCreated")[0]["blockNumber"]
    parent = bytes(w.chain.w3.eth.get_block(created - 1)["hash"])
    e = keccak(encode(["bytes32", "uint256"], [parent, w.task]))
    for ev in w.din.events(w.task, "AggregateRevealed"):
        tx = w.chain.w3.eth.get_transaction(ev["transactionHash"])
        _, args = w.din.tasks.decode_function_input(tx["input"])
        mix = keccak(encode(["bytes32", "address"], [bytes(args["salt"]), tx["from"]]))
        e = bytes(x ^ y for x, y in zip(e, mix, strict=True))
    return e


def test_later_seeds_come_from_the_validators_salts_and_no_sender_can_time_them(deployed):
    """Old: each round's seed was the prevrandao of the block that started it, so whoever sent the
    starting transaction (the last attester, or `advance` after a deadline) chose among the seeds
    of the next few blocks by choosing when to send. New: rounds 2.. and the evaluation take the
    hash chain of every aggregate salt revealed so far; each salt was committed before any was
    revealed. The seed is fixed before the starting transaction is sent: delaying it changes
    nothing."""
    from eth_abi import encode

    from din_cli.chain.assignment import keccak

    chain, dev, dep = deployed
    w = World(chain, dev, dep, max_rounds=2)
    w.start()
    w.train(1)
    w.aggregate(1)
    e = _entropy(w)
    predicted = keccak(encode(["bytes32", "uint256", "uint256"], [e, w.task, 2]))
    model = cid("global-1")
    w.din.post_global_model(w.owner, w.task, model)
    voters = list(w.assigned())
    deciding = len(voters) // 2  # the vote that makes a strict majority starts round 2
    for v in voters[:deciding]:
        w.din.attest_global(v, w.task, model)
    for _ in range(3):  # the deciding attester waits three blocks for a seed it likes
        w.din.transfer(dev, dev.address, 1)
    w.din.attest_global(voters[deciding], w.task, model)
    assert w.info().round == 2
    assert w.din.round_info(w.task, 2).seed == predicted
    w.train(2)
    w.aggregate(2)
    w.globalise(2)  # the last round: the evaluation's seed follows the same chain
    e = _entropy(w)
    evaluation = keccak(encode(["bytes32", "uint256", "uint256"], [e, w.task, 0]))
    assert w.din.round_info(w.task, 0).seed == evaluation
    assert evaluation not in (predicted, w.din.round_info(w.task, 1).seed)


def test_removed_validators_leave_the_score_majority_to_the_live_ones(deployed):
    """Three of five evaluation validators were silent in training and are slashed out before the
    scores: the two live ones decide the subgroup (before: 2 of 5, no majority, every score 0)."""
    w = World(*deployed, n_participants=2, n_validators=5, validators_per_subgroup=5, max_rounds=1)
    din, task = w.din, w.task
    w.start()
    w.train(1)
    slots = list(w.assigned())
    silent, live = slots[:3], slots[3:]
    for v in slots:
        din.commit_aggregate(v, task, cid("agg-1-0"))
    for v in live:
        din.reveal_aggregate(v, task, cid("agg-1-0"))
    w.chain.advance_time(SHORT["aggregation_reveal"] + 1)
    w.globalise(1)  # the silent three may still attest: they are not removed yet
    assert w.info().phase == "test-set"
    for v in silent:
        din.slash_aggregator(w.dev, task, 1, v.address)
        assert din.removed(task, v.address)
    w.post_test_set()
    with reverts("validator was slashed out of this task"):
        din.commit_scores(silent[0], task, [1, 2])
    honest = scores_for(w, live[0], 0)
    for v in live:
        din.commit_scores(v, task, honest)
    w.chain.advance_time(SHORT["score_commit"] + 1)  # the removed three never commit
    for v in live:
        din.reveal_scores(v, task, honest)
    assert w.info().phase == "settling"
    parts, vals, majority = din.settlement_inputs(task, 0)
    assert majority == honest
    din.settle(w.dev, task)
    assert din.settled_scores(task, w.parts[0].address) == honest
    fee = DEPOSIT * 1000 // 10000 // 2
    for v in live:
        assert din.claim(v, task) == fee


def test_the_aggregation_rule_is_fixed_at_creation_and_checked(deployed, monkeypatch):
    """Every validator aggregates with the task's rule; the contract refuses a rule or a
    parameter it does not know, so no owner can post one honest validators cannot follow."""
    import din_cli.chain.din as dinmod

    chain, dev, dep = deployed
    assert World(chain, dev, dep).info().aggregation == "mean"
    info = World(chain, dev, dep, aggregation="norm-bounded", clip_norm="2.5").info()
    assert (info.aggregation, info.aggregation_param) == ("norm-bounded", "2.5")
    assert World(chain, dev, dep, aggregation="median").info().aggregation_param == ""
    with pytest.raises(UsageError, match="needs a bound"):
        World(chain, dev, dep, aggregation="norm-bounded")
    for raw in [(1, 0), (1, 2048 * 10**6 + 1), (2, 500_000), (3, 5), (4, 0)]:
        monkeypatch.setattr(dinmod, "encode_rule", lambda *a, raw=raw, **k: raw)
        with reverts("bad aggregation rule or parameter"):
            World(chain, dev, dep)


def test_the_scoring_method_is_fixed_at_creation_and_checked(deployed, monkeypatch):
    """How participants are scored is a task parameter the contract validates: an owner cannot
    store a method honest validators cannot compute (an unknown one, or exact Shapley over more
    updates than it can enumerate)."""
    import din_cli.chain.din as dinmod

    chain, dev, dep = deployed
    assert World(chain, dev, dep).info().scoring == "gtg"  # the default: contribution
    for name in ("exact", "loo", "update"):
        assert World(chain, dev, dep, scoring=name).info().scoring == name
    assert World(chain, dev, dep, scoring="exact", subgroup_size=16).info().scoring == "exact"
    with pytest.raises(UsageError, match="exact Shapley over subgroups of 17"):
        World(chain, dev, dep, scoring="exact", subgroup_size=17)
    with pytest.raises(UsageError, match="scoring 'mean' is not one of"):
        World(chain, dev, dep, scoring="mean")
    monkeypatch.setattr(dinmod, "EXACT_MAX", 64)
    with reverts("exact Shapley needs subgroups of at most 16"):
        World(chain, dev, dep, scoring="exact", subgroup_size=17)
    monkeypatch.setattr(dinmod, "SCORINGS", (*dinmod.SCORINGS, "unknown"))
    with reverts("scoring must be 0..3"):
        World(chain, dev, dep, scoring="unknown")
