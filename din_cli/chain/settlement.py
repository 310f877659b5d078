"""Settlement: strict-majority score vectors, penalties, and the exact reward split.

The Python reference of ``DinTasks.settle`` / ``claimable`` (``Settlement.sol``):

* scores are integers in basis points, ``0..10000``; evaluation is deterministic,
  so honest validators reveal the very same vector;
* a subgroup's score vector is the one revealed by MORE than half of its ``k``
  evaluation validators (non-revealers count in ``k``); every validator that
  revealed another vector, or none, is penalised (slashed, no fee). With no
  strict majority every participant of the subgroup scores 0, only the
  validators that did not reveal are penalised, and nobody earns a fee. There
  is no tolerance: a constant or copied vector is simply a minority;
* fees: each good validator gets ``deposit * fee_bps // 10000 // good``; the
  participants' pool is the rest of the deposit (fee dust included);
* shares are exact (they sum to the pool, no dust): subgroups are settled one
  after another; a participant settled when the running total of scores was
  ``before`` gets ``pool * (before + score) // total - pool * before // total``.
  A subgroup nobody settled before the settling deadline scores 0;
* a validator that cannot use the owner's test set (K does not unwrap, the
  signature or ciphertext fails, the plaintext is not the committed one)
  reveals the empty vector ``[]``: a rejection. It is a vector like any other:
  when a strict majority of a subgroup revealed it, those validators earn their
  fee and the others are penalised; a lone rejection where the majority scored
  is a minority vector. One subgroup's accepted rejection rejects the test set
  for the whole task (it is one object, and scores made elsewhere on it must not
  let the owner steer the pool away from the subgroup it sabotaged);
* with a total score of 0, or a rejected test set, the pool goes to the
  contributors (participants that submitted at least one update, equally, in
  the order of their first submission), as in an abandoned task (no test set by
  its deadline); the model owner gets the deposit back only when nobody
  contributed.

Example:
    >>> settle_group([[9000, 1200], [9000, 1200], None])
    ([9000, 1200], [False, False, True], [True, True, False])
    >>> share(1000, [3, 0, 4])
    [428, 0, 572]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

SCALE = 10_000


def majority(
    vectors: Sequence[Sequence[int] | None], live: int | None = None
) -> tuple[list[int] | None, int | None]:
    """``(vector, index)`` of the first holder of a vector more than ``live / 2`` of ``vectors`` share.

    ``(None, None)`` when there is none. None entries are validators that did not
    reveal (they count in ``live``) or were removed from the task (they do not);
    ``live`` defaults to ``len(vectors)``.
    """
    live = len(vectors) if live is None else live
    for a, v in enumerate(vectors):
        if v is None:
            continue
        if 2 * sum(1 for w in vectors if w is not None and list(w) == list(v)) > live:
            return list(v), a
    return None, None


def settle_group(
    vectors: Sequence[Sequence[int] | None], size: int | None = None
) -> tuple[list[int], list[bool], list[bool]]:
    """``(scores, penalised, earns_fee)`` of one subgroup.

    ``vectors[j]`` is validator j's revealed score vector (subgroup position order),
    ``[]`` when it rejected the test set, or None when it did not reveal. ``size``
    (participants) sizes the all-zero vector of a subgroup without a majority
    (default: the longest revealed length, or 0). ``scores`` is ``[]`` when the
    majority rejected the test set.
    """
    revealed = [v for v in vectors if v is not None]
    if any(not 0 <= s <= SCALE for v in revealed for s in v):
        raise ValueError(f"scores must lie in 0..{SCALE}")
    winner, _ = majority(vectors)
    if winner is None:
        if size is None:
            size = max((len(v) for v in revealed), default=0)
        return [0] * size, [v is None for v in vectors], [False] * len(vectors)
    bad = [v is None or list(v) != winner for v in vectors]
    return winner, bad, [not b for b in bad]


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
    scores: dict = field(default_factory=dict)
    penalised: set = field(default_factory=set)
    rejected: bool = False  # a subgroup's majority rejected the test set

    def total(self) -> int:
        return sum(self.participants.values()) + sum(self.validators.values()) + self.owner


def settle_task(
    deposit: int,
    fee_bps: int,
    groups: Sequence[tuple[Sequence, Sequence, Sequence[Sequence[int] | None]]],
    removed: frozenset | set = frozenset(),
    contributors: Sequence = (),
    records: Sequence[tuple] = (),
) -> Settlement:
    """Settle subgroups in the order given; each is ``(participants, validators, vectors)``.

    ``vectors[j]`` belongs to ``validators[j]`` (None: not revealed). Validators
    in ``removed`` (slashed earlier) neither earn a fee nor count as penalised.
    When every score is 0 or a subgroup's majority rejected the test set
    (``out.rejected``), the pool goes to the contributors: by ``records``
    (``(participant, rounds proven)`` in proof order, ``proveRecord``), or
    equally among ``contributors`` (first-submission order) when nobody proved one.
    """
    out = Settlement()
    order, weights, good = [], [], []
    for participants, validators, vectors in groups:
        scores, bad, earns = settle_group(vectors, len(participants))
        if participants and not scores:  # the majority rejected the test set
            out.rejected = True
            scores = [0] * len(participants)
        if len(scores) != len(participants):
            raise ValueError("score vectors and participants differ in length")
        for p, m in zip(participants, scores, strict=True):
            out.scores[p] = m
            order.append(p)
            weights.append(m)
        for v, is_bad, fee in zip(validators, bad, earns, strict=True):
            if v in removed:
                continue
            if is_bad:
                out.penalised.add(v)
            elif fee:
                good.append(v)
    pool = deposit
    if good:
        fee = deposit * fee_bps // SCALE // len(good)
        pool -= fee * len(good)
        out.validators = {v: fee for v in good}
    if sum(weights) and not out.rejected:
        for p, amount in zip(order, share(pool, weights), strict=True):
            out.participants[p] = out.participants.get(p, 0) + amount
    elif contributors or records:
        for p, amount in _contributors(pool, contributors, records).items():
            out.participants[p] = out.participants.get(p, 0) + amount
    else:
        out.owner += pool
    return out


def _contributors(pool: int, contributors: Sequence, records: Sequence[tuple]) -> dict:
    """The contributors' split: by proven records, else equally by first submission."""
    if records:
        return dict(zip([p for p, _ in records], share(pool, [n for _, n in records]), strict=True))
    return dict(zip(contributors, share(pool, [1] * len(contributors)), strict=True))


def abandoned_payouts(
    deposit: int, contributors: Sequence, records: Sequence[tuple] = ()
) -> tuple[dict, int]:
    """``({contributor: amount}, owner refund)`` for an abandoned task (see ``settle_task``)."""
    if not contributors and not records:
        return {}, deposit
    return _contributors(deposit, contributors, records), 0
