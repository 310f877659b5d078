"""The Python reference of assignment and settlement, alone and against the contracts.

``din_cli.chain.assignment`` / ``settlement`` must give exactly what the
contracts compute (Hypothesis, random inputs, ties and even counts included);
the contracts' own answers come from eth_call on the embedded chain.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from din_cli.chain import assignment as asg
from din_cli.chain import settlement as stl

seeds = st.binary(min_size=32, max_size=32)


# ---------------------------------------------------------------- pure Python


@given(seeds, st.integers(1, 300))
@settings(max_examples=40, deadline=None)
def test_permutation_is_a_bijection(seed, n):
    key = asg.population_key(seed, asg.PARTICIPANTS)
    assert sorted(asg.permute(key, i, n) for i in range(n)) == list(range(n))


@given(seeds, st.integers(1, 200), st.integers(1, 30))
@settings(max_examples=40, deadline=None)
def test_subgroups_partition_participants_in_balanced_blocks(seed, n, size):
    g = asg.group_count(n, size)
    groups = asg.participant_groups(seed, n, g)
    assert sorted(i for grp in groups for i in grp) == list(range(n))
    sizes = [len(grp) for grp in groups]
    assert max(sizes) - min(sizes) <= 1 and max(sizes) <= size
    for group, members in enumerate(groups):
        for offset, i in enumerate(members):
            assert asg.participant_group(seed, i, n, g) == (group, offset)


@given(seeds, st.integers(1, 60), st.integers(1, 5), st.integers(1, 12))
@settings(max_examples=40, deadline=None)
def test_validators_fill_each_subgroup_with_distinct_members(seed, nv, groups, k):
    per = asg.per_group(nv, groups, k)
    vg = asg.validator_groups(seed, nv, groups, per)
    flat = [v for grp in vg for v in grp]
    assert len(flat) == len(set(flat)) == groups * per <= nv
    for group, members in enumerate(vg):
        for slot, v in enumerate(members):
            assert asg.validator_slot(seed, v, nv, groups, per) == (group, slot)


def test_seed_changes_the_assignment():
    a = asg.participant_groups(b"\x01" * 32, 50, 5)
    b = asg.participant_groups(b"\x02" * 32, 50, 5)
    assert a != b


def test_strict_majority_accepts_one_vector_and_slashes_every_other():
    honest = [9000, 1200, 7000]
    lazy = [5000, 5000, 5000]  # the old tolerance rule never penalised a constant 5000
    scores, bad, fee = stl.settle_group([honest, honest, lazy, None, honest])
    assert scores == honest
    assert bad == [False, False, True, True, False]
    assert fee == [True, True, False, False, True]
    # a copied vector is the majority's only when it is the right one; a near copy is a lie
    near = [9000, 1200, 7001]
    _, bad, _ = stl.settle_group([honest, near, honest])
    assert bad == [False, True, False]


def test_no_strict_majority_scores_zero_and_slashes_only_the_silent():
    a, b = [9000, 100], [100, 9000]
    scores, bad, fee = stl.settle_group([a, a, b, b])  # 2 of 4 is not more than half
    assert scores == [0, 0] and bad == [False] * 4 and fee == [False] * 4
    scores, bad, fee = stl.settle_group([a, a, None, None], size=2)
    assert scores == [0, 0] and bad == [False, False, True, True] and not any(fee)
    assert stl.settle_group([None, None], size=3) == ([0, 0, 0], [True, True], [False, False])


@given(st.integers(0, 10**30), st.lists(st.integers(0, 10000), max_size=40))
def test_share_sums_exactly(amount, weights):
    parts = stl.share(amount, weights)
    if sum(weights):
        assert sum(parts) == amount
        for w, p in zip(weights, parts, strict=True):  # each part within 1 of its exact share
            assert abs(p - Fraction(amount * w, sum(weights))) < 1
    else:
        assert parts == [0] * len(weights)


@given(
    st.integers(1, 10**24),
    st.integers(0, 10000),
    st.lists(
        st.tuples(st.integers(1, 5), st.integers(1, 4), st.randoms(use_true_random=False)),
        min_size=1,
        max_size=4,
    ),
)
@settings(max_examples=60, deadline=None)
def test_settled_task_pays_the_deposit_exactly(deposit, fee_bps, shapes):
    groups, pid, vid = [], 0, 0
    for size, k, rnd in shapes:
        parts = list(range(pid, pid + size))
        vals = [f"v{j}" for j in range(vid, vid + k)]
        pid, vid = pid + size, vid + k
        honest = [rnd.choice([0, 5000, 9999, rnd.randint(0, 10000)]) for _ in parts]
        vectors = [
            None
            if rnd.random() < 0.2
            else []  # a rejection of the test set
            if rnd.random() < 0.1
            else honest
            if rnd.random() < 0.6
            else [rnd.randint(0, 10000) for _ in parts]
            for _ in vals
        ]
        groups.append((parts, vals, vectors))
    contributors = list(range(pid)) if shapes[0][0] % 2 else []
    out = stl.settle_task(deposit, fee_bps, groups, contributors=contributors)
    assert out.total() == deposit
    if out.owner:  # the owner gets anything back only when every score is 0 and nobody contributed
        assert not contributors and (out.rejected or not any(out.scores.values()))
    if out.rejected and contributors:  # a rejected test set: the contributors split the pool
        assert sorted(out.participants) == contributors and not out.owner


def test_a_rejected_test_set_pays_the_rejecting_majority_and_the_contributors():
    """Old: an empty vector was not a result (the contract refused it). New: it is the rejection of
    the owner's test set: a strict majority of it earns fees, a lone rejecter is a minority, and one
    rejected subgroup sends the whole pool to the contributors, nothing to the owner."""
    scores, bad, fee = stl.settle_group([[], [], [7000, 100]], size=2)
    assert (scores, bad, fee) == ([], [False, False, True], [True, True, False])
    scores, bad, _ = stl.settle_group([[7000, 100], [], [7000, 100]])
    assert scores == [7000, 100] and bad == [False, True, False]
    groups = [(["a", "b"], ["v0"], [[]]), (["c", "d"], ["v1"], [[9000, 8000]])]
    out = stl.settle_task(1000, 1000, groups, contributors=["d", "a", "b", "c"])
    assert out.rejected and out.validators == {"v0": 50, "v1": 50} and out.owner == 0
    assert out.participants == {"d": 225, "a": 225, "b": 225, "c": 225}


def test_abandoned_split_is_equal_and_exact():
    paid, refund = stl.abandoned_payouts(10, ["a", "b", "c"])
    assert sum(paid.values()) == 10 and refund == 0 and sorted(paid.values()) == [3, 3, 4]
    assert stl.abandoned_payouts(10, []) == ({}, 10)
    # by proven records (proof order), whoever else submitted: (2 + 1) shares of 10
    assert stl.abandoned_payouts(10, ["a", "b", "c"], records=[("b", 2), ("a", 1)]) == (
        {"b": 6, "a": 4},
        0,
    )


# ---------------------------------------------------------------- against the contracts


@pytest.fixture(scope="module")
def tasks_contract():
    from din_cli.chain.client import connect
    from din_cli.chain.din import Din, deploy_all

    chain = connect("memory")
    dep = deploy_all(chain, chain.dev_account())
    yield (
        chain,
        Din(chain, dep).disputes,
    )  # the pure helpers live in DinDisputes (DinTasks is at its size limit)
    chain.close()


@given(seeds, st.integers(0, 1), st.integers(1, 2000), st.data())
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_contract_assignment_equals_python(tasks_contract, seed, population, n, data):
    chain, tasks = tasks_contract
    index = data.draw(st.integers(0, n - 1))
    on_chain = chain.call(tasks.functions.assignmentPosition(seed, population, index, n))
    assert on_chain == asg.permute(asg.population_key(seed, population), index, n)


@given(st.integers(1, 9), st.data())
@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_contract_majority_equals_python(tasks_contract, k, data):
    """Few distinct vectors make ties, exact halves and near-majorities likely; some validators
    are removed (no vector, out of the denominator)."""
    chain, tasks = tasks_contract
    pool = data.draw(
        st.lists(st.lists(st.integers(0, 10000), min_size=2, max_size=2), min_size=1, max_size=3)
    )
    removed = data.draw(st.lists(st.booleans(), min_size=k, max_size=k))
    vectors = [None if r else data.draw(st.none() | st.sampled_from(pool)) for r in removed]
    live = k - sum(removed)
    from din_cli.chain.din import scores_digest

    hashes = [bytes(20) if v is None else scores_digest(v)[:20] for v in vectors]
    winner = chain.call(tasks.functions.scoreMajority(hashes, live))
    ref, index = stl.majority(vectors, live)
    assert winner == (0 if ref is None else index + 1)
    if live == k:  # nobody removed: the default denominator
        assert stl.majority(vectors) == (ref, index)


def test_removed_validators_leave_the_score_majority():
    """Two honest of five, three removed: the two decide; had the three stayed, nobody would."""
    honest = [1, 2]
    vectors = [honest, None, None, honest, None]
    assert stl.majority(vectors, live=2) == (honest, 0)
    assert stl.majority(vectors) == (None, None)


@pytest.mark.parametrize(
    "rule, kw, stored, shown",
    [
        ("mean", {}, (0, 0), ""),
        ("median", {}, (3, 0), ""),
        ("norm-bounded", {"clip_norm": "2048"}, (1, 2_048_000_000), "2048"),
        ("norm-bounded", {"clip_norm": 0.000001}, (1, 1), "0.000001"),
        ("trimmed-mean", {"trim": "0"}, (2, 0), "0"),
        ("trimmed-mean", {"trim": 0.1}, (2, 100_000), "0.1"),
    ],
)
def test_a_tasks_aggregation_rule_round_trips_through_its_chain_encoding(rule, kw, stored, shown):
    """What the owner publishes is what every validator reads back: millionths, no exponent."""
    from din_cli.chain.din import decode_rule, encode_rule

    assert encode_rule(rule, **kw) == stored
    assert decode_rule(*stored) == (rule, shown)
