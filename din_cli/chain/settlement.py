"""Settlement: medians of validators' scores, penalties, and the exact reward split.

The Python reference of ``DinTasks.settle`` / ``claimable`` (``Settlement.sol``):

* scores are integers in basis points, ``0..10000``;
* the median of ``c`` values is the LOWER median, ``sorted(values)[(c - 1) // 2]``
  (for an even count the smaller middle value); no values give 0;
* a validator is penalised when any of its scores differs from the median by
  more than the tolerance (``abs(score - median) > tolerance``; BlockFlow: 5000);
  one that did not reveal is penalised too; neither earns a fee;
* the deposit splits into ``fees = deposit * fee_bps // 10000`` for the good
  validators and ``pool = deposit - fees`` for the participants;
* shares are exact (they sum to the pool, no dust): subgroups are settled one
  after another; a participant settled when the running total of medians was
  ``before`` gets ``pool * (before + median) // total - pool * before // total``.
  Fees go the same way with weight 1 per good validator, in the order they were
  settled. With a total of 0 (or no good validator) the pool (fees) goes back
  to the model owner;
* an abandoned task (no test set by its deadline) splits the whole deposit
  equally, the same telescoping way, among participants that submitted at least
  one update, in the order of their first submission; with none it goes back to
  the model owner.

Example:
    >>> settle_group([[9000, 1200], [8800, 1000], None], tolerance_bps=5000)
    ([8800, 1000], [False, False, True])
    >>> share(1000, [3, 0, 4])
    [428, 0, 572]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

SCALE = 10_000
BLOCKFLOW_TOLERANCE = SCALE // 2


def lower_median(values: Sequence[int]) -> int:
    """The lower median: ``sorted(values)[(len - 1) // 2]``; 0 for no values."""
    if not values:
        return 0
    return sorted(values)[(len(values) - 1) // 2]


def settle_group(
    vectors: Sequence[Sequence[int] | None], tolerance_bps: int = BLOCKFLOW_TOLERANCE
) -> tuple[list[int], list[bool]]:
    """Medians per participant and, per validator, whether it is penalised.

    ``vectors[j]`` is validator j's score vector (subgroup position order), or
    None when it did not reveal (then it is penalised).
    """
    revealed = [v for v in vectors if v is not None]
    size = len(revealed[0]) if revealed else 0
    if any(len(v) != size for v in revealed):
        raise ValueError("score vectors differ in length")
    if any(not 0 <= s <= SCALE for v in revealed for s in v):
        raise ValueError(f"scores must lie in 0..{SCALE}")
    medians = [lower_median([v[i] for v in revealed]) for i in range(size)]
    penalised = [
        v is None or any(abs(s - m) > tolerance_bps for s, m in zip(v, medians, strict=True))
        for v in vectors
    ]
    return medians, penalised


def split_deposit(deposit: int, fee_bps: int) -> tuple[int, int]:
    """``(pool, fees)``: the participants' pool and the validators' fees."""
    fees = deposit * fee_bps // SCALE
    return deposit - fees, fees


def share(amount: int, weights: Sequence[int]) -> list[int]:
    """Split ``amount`` in proportion to ``weights`` (in that order), exactly: the parts sum to it.

    With a zero total every part is 0 (the caller refunds ``amount``).
    """
    total = sum(weights)
    if total == 0:
        return [0] * len(weights)
    parts, before = [], 0
    for w in weights:
        parts.append(amount * (before + w) // total - amount * before // total)
        before += w
    return parts


@dataclass
class Settlement:
    """Everything a settled task pays, keyed by participant / validator id."""

    participants: dict = field(default_factory=dict)
    validators: dict = field(default_factory=dict)
    owner: int = 0
    medians: dict = field(default_factory=dict)
    penalised: set = field(default_factory=set)

    def total(self) -> int:
        return sum(self.participants.values()) + sum(self.validators.values()) + self.owner


def settle_task(
    deposit: int,
    fee_bps: int,
    groups: Sequence[tuple[Sequence, Sequence, Sequence[Sequence[int] | None]]],
    tolerance_bps: int = BLOCKFLOW_TOLERANCE,
    removed: frozenset | set = frozenset(),
) -> Settlement:
    """Settle subgroups in the order given; each is ``(participants, validators, vectors)``.

    ``vectors[j]`` belongs to ``validators[j]`` (None: not revealed). Validators
    in ``removed`` (slashed earlier) neither earn a fee nor count as penalised.
    """
    pool, fees = split_deposit(deposit, fee_bps)
    out = Settlement()
    order, weights, good = [], [], []
    for participants, validators, vectors in groups:
        medians, bad = settle_group(vectors, tolerance_bps)
        if not medians:
            medians = [0] * len(participants)
        if len(medians) != len(participants):
            raise ValueError("score vectors and participants differ in length")
        for p, m in zip(participants, medians, strict=True):
            out.medians[p] = m
            order.append(p)
            weights.append(m)
        for v, is_bad in zip(validators, bad, strict=True):
            if v in removed:
                continue
            if is_bad:
                out.penalised.add(v)
            else:
                good.append(v)
    for p, amount in zip(order, share(pool, weights), strict=True):
        out.participants[p] = out.participants.get(p, 0) + amount
    for v, amount in zip(good, share(fees, [1] * len(good)), strict=True):
        out.validators[v] = amount
    if sum(weights) == 0:
        out.owner += pool
    if not good:
        out.owner += fees
    return out


def abandoned_payouts(deposit: int, contributors: Sequence) -> tuple[dict, int]:
    """``({contributor: amount}, owner refund)`` for an abandoned task."""
    parts = share(deposit, [1] * len(contributors))
    return dict(zip(contributors, parts, strict=True)), (deposit if not contributors else 0)
