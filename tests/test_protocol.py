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


@pytest.mark.parametrize(
    ("values", "median"),
    [([], 0), ([7], 7), ([3, 1], 1), ([5, 5, 1, 9], 5), ([9, 1, 4, 4], 4), ([2, 8, 6], 6)],
)
def test_lower_median(values, median):
    assert stl.lower_median(values) == median


def test_tolerance_is_strict_and_non_revealers_are_penalised():
    medians, bad = stl.settle_group([[0, 10000], [5000, 5000], [5001, 5000], None], 5000)
    assert medians == [5000, 5000]
    assert bad == [False, False, False, True]
    _, bad = stl.settle_group([[0], [5001], [5001]], 5000)
    assert bad == [True, False, False]


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
        vectors = [None if rnd.random() < 0.2 else [rnd.choice([0, 5000, 9999, rnd.randint(0, 10000)]) for _ in parts] for _ in vals]
        groups.append((parts, vals, vectors))
    out = stl.settle_task(deposit, fee_bps, groups)
    assert out.total() == deposit


def test_abandoned_split_is_equal_and_exact():
    paid, refund = stl.abandoned_payouts(10, ["a", "b", "c"])
    assert sum(paid.values()) == 10 and refund == 0 and sorted(paid.values()) == [3, 3, 4]
    assert stl.abandoned_payouts(10, []) == ({}, 10)


# ---------------------------------------------------------------- against the contracts


@pytest.fixture(scope="module")
def tasks_contract():
    from din_cli.chain.client import connect
    from din_cli.chain.din import Din, deploy_all

    chain = connect("memory")
    dep = deploy_all(chain, chain.dev_account())
    yield chain, Din(chain, dep).tasks
    chain.close()


@given(seeds, st.integers(0, 1), st.integers(1, 2000), st.data())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_contract_assignment_equals_python(tasks_contract, seed, population, n, data):
    chain, tasks = tasks_contract
    index = data.draw(st.integers(0, n - 1))
    on_chain = chain.call(tasks.functions.assignmentPosition(seed, population, index, n))
    assert on_chain == asg.permute(asg.population_key(seed, population), index, n)


score = st.one_of(st.sampled_from([0, 4999, 5000, 5001, 10000]), st.integers(0, 10000))


@given(st.integers(1, 6), st.integers(1, 11), st.integers(0, 10000), st.data())
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_contract_medians_and_penalties_equal_python(tasks_contract, size, k, tolerance, data):
    chain, tasks = tasks_contract
    # few distinct values make ties likely; k even or odd exercises the lower median
    pool = data.draw(st.lists(score, min_size=1, max_size=3))
    vectors = [
        None if data.draw(st.booleans()) and j else data.draw(st.lists(st.sampled_from(pool) | score, min_size=size, max_size=size))
        for j in range(k)
    ]
    revealed = [v is not None for v in vectors]
    medians, penalised = chain.call(
        tasks.functions.scoreMedians([v or [] for v in vectors], revealed, size, tolerance)
    )
    ref_medians, ref_bad = stl.settle_group(vectors, tolerance)
    assert list(medians) == ref_medians
    # the contract reports only tolerance breaches; not revealing is penalised by settle itself
    assert [b or not r for b, r in zip(penalised, revealed, strict=True)] == ref_bad
