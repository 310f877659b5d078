"""Contribution scores: what each update of a subgroup added to the round's model.

A validator already holds its subgroup's admitted updates and the round's test
rows. It scores participant ``i`` by the value of its update to coalitions of
the others, where a coalition's *utility* is the score (``ml.evaluate``,
integer basis points) of the coalition's FedAvg model on the test rows, and
the empty coalition's utility is the round's starting model's score.

Coalition models are din's bit-exact aggregate
----------------------------------------------
Each update is quantised once, exactly as ``ml.aggregate`` does
(``q = rint(clip(w * 2^20, -2^30, 2^30))``, round-half-even, in float64), and
kept as int32. A coalition's model is ``float32(float64(X) / float64(N *
2^20))`` with ``X = sum q_i * n_i`` summed in int64 over its members (exact,
so order-free) and ``N = sum n_i``: the very bytes ``din aggregate`` writes
for those updates with those weights, on any machine and thread count. The
logits are ``ml.evaluate``'s bit-exact forward pass, so every utility is the
same integer at every honest validator, and so is every score below.

Methods
-------
``loo``     leave-one-out: ``U(all) - U(all without i)``; ``n + 2``
            evaluations. Cheap, but with many participants each marginal
            is near the metric's resolution, and two similar updates hide
            each other.
``exact``   exact Shapley value over all ``2^n`` coalitions (subgroups of
            at most :data:`EXACT_MAX` updates; a Gray-code walk adds or
            removes one update per coalition):
            ``phi_i = sum_S |S|! (n-|S|-1)! / n! * (U(S + i) - U(S))``.
``gtg``     GTG-Shapley (Liu et al. 2022), the default: guided, truncated
            Monte-Carlo permutations. *Guided*: each pass puts every
            participant first once (in an order drawn from the seed), the
            rest in a random order; each permutation is also walked
            backwards (an antithetic pair, so every participant is seen
            last as often as first). *Within-permutation truncation*: once
            a prefix's utility is within ``tolerance_bps`` of ``U(all)``,
            the remaining members' marginals are taken as 0 and not
            evaluated. *Between-round truncation* is the same test on the
            empty prefix: when ``|U(all) - U(empty)| < tolerance_bps`` the
            round's values are all 0 and nothing else is evaluated.
            Utilities are cached, and the estimate uses every known pair
            ``(S, S + i)`` -- both utilities cached by any walk, or
            truncated -- stratified by ``|S|``: ``phi_i`` is the mean over
            coalition sizes of the mean marginal at that size (Shapley's
            own weighting), which measured half the error of the plain
            permutation average for the same evaluations. It stops after a
            pass whose estimates moved by at most ``convergence`` of their
            absolute sum (at least :data:`MIN_PASSES` passes), or before
            the permutation pair that would start past ``max_evaluations``
            coalition evaluations (so it never runs more than
            ``max_evaluations + 2n``), or at ``max_permutations``. When all
            ``2^n`` coalitions fit in ``max_evaluations`` (``n <= 9`` by
            default) it computes the exact values instead, which cost no
            more.

Determinism of the estimate. Permutations come from a 32-byte seed (the
round's seed) through SHA-256 in counter mode:
``block_k = SHA-256("din/contribution-perm/v1" || seed || k as 8 bytes
big-endian)``, each block read as four 64-bit big-endian integers; a draw
below ``m`` rejects values at or above the largest multiple of ``m`` below
2^64 and takes the rest modulo ``m``; a shuffle is Fisher-Yates from the last
position down (``j = draw(i + 1)``, swap ``i`` and ``j``). No library RNG
takes part, so the permutations are the same everywhere.

Rounding. Every value is an exact rational: utilities are integers and the
estimates are means of integers over integer counts (``exact``: over ``n!``). The
revealed score is that rational rounded half up in integer arithmetic
(``floor(v + 1/2)``), then floored at 0: a harmful update scores 0, never a
negative number. ``Contributions.values`` keeps the unrounded rationals.

What the caller does. Pass the admitted updates only, with their admitted
FedAvg weights (``protocol.admission``): copies and unchanged models are
excluded there and score 0 without being evaluated. That exclusion is
needed: Shapley values alone do not zero them. A byte copy is worth exactly
what its original is worth (symmetry), and a resubmitted starting model can
earn a real share -- averaging the start back in damps updates that
overshoot (in ``benchmarks/contribution.py`` such a free-rider took 129 of a
667 bps gain). A free-rider who adds small noise to the starting model
escapes the ``unchanged`` test; what it earns is then its Shapley value as a
damping update, which the norm-bounded aggregation rules keep small. A
poisoner that drags the aggregate down so far that ``U(all)`` is within the
tolerance of the starting score truncates the whole round to zeros under
``gtg``: the honest lose that round's contribution too, which is why the
aggregation rule bounds each update's influence before scoring.

Example:
    c = contributions(paths, "start.safetensors", test, rows=rows, seed=round_seed)
    c.scores   # [3120, 0, 845, ...] basis points, one per update
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from din_cli.errors import InputError, UsageError

METHODS = ("loo", "exact", "gtg")
DEFAULT_METHOD = "gtg"
EXACT_MAX = 16  # 2^16 coalition evaluations: the most exact Shapley takes on
DOMAIN = b"din/contribution-perm/v1"
MAX_EVALUATIONS = 600  # gtg: 100 updates of a 105k-parameter model on 360 rows: ~40 s on one core
TOLERANCE_BPS = 30  # gtg truncation: a prefix within 0.3 point (~one row of 360) of U(all)
CONVERGENCE = Fraction(1, 100)  # gtg: stop once a pass moves the estimates by <= 1 %
MIN_PASSES = 2


@dataclass(frozen=True)
class Contributions:
    """One subgroup's contribution scores, in update order."""

    method: str
    scores: list[int]  # basis points, rounded half up, floored at 0: the revealed vector
    values: list[Fraction]  # the exact unrounded values (negative for harmful updates)
    empty: int  # utility of the starting model
    full: int  # utility of the aggregate of every update
    evaluations: int  # coalition models evaluated (cache misses, the two above included)
    permutations: int = 0  # gtg: permutations walked

    def normalised(self) -> list[float]:
        """``scores`` divided by their sum (all zeros when they sum to 0): the payout shares."""
        total = sum(self.scores)
        return [s / total if total else 0.0 for s in self.scores]


@dataclass
class _Model:
    """What ``ml.evaluate.logits`` needs of a model: its architecture and weights."""

    arch: str
    weights: dict


@dataclass
class CoalitionGame:
    """Utility of any coalition of one subgroup's updates, cached by member bit mask.

    Build it with :meth:`load`. ``utility(mask)`` is the integer score of the
    bit-exact FedAvg of the updates whose bits are set (bit ``i``: update
    ``i``), or of the starting model for ``mask == 0``.
    """

    arch: str
    shapes: dict  # name -> shape, sorted names: the canonical flat layout
    start: dict  # the starting model's float32 weights
    q: list  # per update: int32 flat quantised weights
    n: list[int]  # per update: its FedAvg weight
    x: object  # test rows (float32) and labels
    y: object
    metric: str = "accuracy"
    evaluations: int = 0
    cache: dict = field(default_factory=dict)
    device: str = "cpu"  # where coalition models are scored (the same scores on either)

    @classmethod
    def load(
        cls,
        updates: Sequence[str | os.PathLike],
        start: str | os.PathLike,
        test,
        *,
        rows: Sequence[int] | None = None,
        weights: Sequence[int] | None = None,
        metric: str = "accuracy",
        device: str = "cpu",
    ) -> CoalitionGame:
        """Read and quantise ``updates`` against the starting model ``start``.

        ``test`` is a data store path or an ``ml.data.Dataset``; ``rows`` the
        round's row indices into it (repeats allowed; all rows when None).
        ``weights`` replaces the updates' ``din.samples`` as FedAvg weights
        (the admission rule's capped weights). ``device`` is where coalition
        models are scored (``ml.evaluate.logits``: the same scores on either).
        """
        import numpy as np

        from din_cli.ml import aggregate as agg
        from din_cli.ml import data as data_mod
        from din_cli.ml import evaluate, models, zoo
        from din_cli.ml.train import check_features

        if metric not in evaluate.METRICS:
            raise UsageError(
                f"metric {metric!r} is not one of {', '.join(evaluate.METRICS)}",
                "pick accuracy, f1 or loss",
            )
        if weights is not None and len(weights) != len(updates):
            raise UsageError(
                f"{len(weights)} weights for {len(updates)} updates", "pass one weight per update"
            )
        base = models.read_model(start)
        arch = base.arch
        shapes = {k: tuple(v) for k, v in sorted(zoo.param_shapes(arch).items())}
        ds = test if isinstance(test, data_mod.Dataset) else data_mod.load_store(test)
        if rows is not None:
            ds = data_mod.select_rows(ds, rows)
        check_features(arch, ds, ds.source or "test rows")
        qs, ns = [], []
        for k, path in enumerate(updates):
            mf = models.read_model(path, arch=arch)
            n = int(mf.header.samples if weights is None else weights[k])
            if n <= 0:
                raise InputError(
                    f"{mf.header.path}: FedAvg weight {n}, so it has no place in a coalition",
                    "score trained updates with positive sample counts",
                )
            flat = np.concatenate([mf.weights[name].reshape(-1) for name in shapes])
            t = flat.astype(np.float64)
            t *= 2.0**agg.SCALE_BITS
            np.clip(t, -agg.Q_MAX, agg.Q_MAX, out=t)
            np.rint(t, out=t)
            qs.append(t.astype(np.int32))
            ns.append(n)
        if sum(ns) > agg.MAX_TOTAL_SAMPLES:
            raise InputError(
                f"{sum(ns)} samples in all exceed the exact range ({agg.MAX_TOTAL_SAMPLES})",
                "score subgroups of fewer samples",
            )
        return cls(arch, shapes, base.weights, qs, ns, ds.x, ds.y, metric, device=device)

    @property
    def size(self) -> int:
        return len(self.q)

    @property
    def full_mask(self) -> int:
        return (1 << self.size) - 1

    def weighted_sum(self, mask: int):
        """``(X, N)``: the int64 sum of ``q_i * n_i`` and of ``n_i`` over the members of ``mask``."""
        import numpy as np

        acc = np.zeros(self.q[0].shape if self.q else 0, dtype=np.int64)
        total = 0
        for i in range(self.size):
            if mask >> i & 1:
                self.add(acc, i, +1)
                total += self.n[i]
        return acc, total

    def add(self, acc, i: int, sign: int) -> None:
        """``acc += sign * q_i * n_i`` in int64 (exact: ``|X| < 2^62``)."""
        import numpy as np

        step = self.q[i].astype(np.int64)
        step *= sign * self.n[i]
        acc += step

    def model(self, mask: int) -> dict:
        """The coalition's float32 weights by name (``mask == 0``: the starting model)."""
        if mask == 0:
            return dict(self.start)
        acc, total = self.weighted_sum(mask)
        return self._finalize(acc, total)

    def _finalize(self, acc, total: int) -> dict:
        """``float32(float64(X) / float64(N * 2^20))``: ``ml.aggregate``'s one division, split by tensor."""
        import numpy as np

        from din_cli.ml import aggregate as agg

        flat = (acc.astype(np.float64) / (float(total) * float(2**agg.SCALE_BITS))).astype(
            np.float32
        )
        out, pos = {}, 0
        for name, shape in self.shapes.items():
            size = math.prod(shape)
            out[name] = flat[pos : pos + size].reshape(shape)
            pos += size
        return out

    def utility(self, mask: int, acc=None, total: int | None = None) -> int:
        """The coalition's score in basis points (cached); ``acc``/``total`` its sums when known."""
        hit = self.cache.get(mask)
        if hit is not None:
            return hit
        if mask == 0:
            weights = self.start
        elif acc is None:
            weights = self.model(mask)
        else:
            weights = self._finalize(acc, total)
        value = self._score(weights)
        self.cache[mask] = value
        return value

    def _score(self, weights: dict) -> int:
        from din_cli.ml import evaluate

        self.evaluations += 1
        z = evaluate.logits(_Model(self.arch, weights), self.x, device=self.device)
        return evaluate.score(self.metric, z, self.y).score_bps


# --- deterministic permutations ---


class PermutationStream:
    """Draws and shuffles from SHA-256 in counter mode over ``DOMAIN || seed`` (see module doc)."""

    def __init__(self, seed: bytes | int):
        if isinstance(seed, int):
            if not 0 <= seed < 1 << 256:
                raise UsageError("the seed must fit in 32 bytes", "pass the round's 32-byte seed")
            seed = seed.to_bytes(32, "big")
        seed = bytes(seed)
        if len(seed) != 32:
            raise UsageError(
                f"the seed is {len(seed)} bytes, not 32", "pass the round's 32-byte seed"
            )
        self._seed = seed
        self._counter = 0
        self._words: list[int] = []

    def _next64(self) -> int:
        if not self._words:
            block = hashlib.sha256(DOMAIN + self._seed + self._counter.to_bytes(8, "big")).digest()
            self._counter += 1
            self._words = [int.from_bytes(block[o : o + 8], "big") for o in (24, 16, 8, 0)]
        return self._words.pop()  # words 0, 1, 2, 3 of the block, in order

    def below(self, m: int) -> int:
        """An unbiased integer in ``range(m)``."""
        limit = (1 << 64) - (1 << 64) % m
        while True:
            v = self._next64()
            if v < limit:
                return v % m

    def shuffle(self, items: list) -> list:
        """Fisher-Yates in place, from the last position down; returns ``items``."""
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]
        return items


# --- methods ---


def _round_half_up(v: Fraction) -> int:
    return math.floor(v + Fraction(1, 2))


def _result(method: str, game: CoalitionGame, values, empty: int, full: int, perms: int = 0):
    values = [Fraction(v) for v in values]
    scores = [max(0, _round_half_up(v)) for v in values]
    return Contributions(method, scores, values, empty, full, game.evaluations, perms)


def leave_one_out(game: CoalitionGame) -> Contributions:
    """``U(all) - U(all without i)`` for every update ``i``."""
    n = game.size
    empty = game.utility(0)
    total_acc, total_n = game.weighted_sum(game.full_mask)
    full = game.utility(game.full_mask, total_acc, total_n)
    values = []
    for i in range(n):
        mask = game.full_mask & ~(1 << i)
        acc = total_acc.copy()
        game.add(acc, i, -1)
        values.append(full - game.utility(mask, acc, total_n - game.n[i]))
    return _result("loo", game, values, empty, full)


def exact_shapley(game: CoalitionGame) -> Contributions:
    """Exact Shapley values over all ``2^n`` coalitions, walked in Gray-code order."""
    import numpy as np

    n = game.size
    if n > EXACT_MAX:
        raise UsageError(
            f"exact Shapley over {n} updates needs 2^{n} model evaluations",
            f"use it for subgroups of at most {EXACT_MAX}, else the gtg estimate",
        )
    empty = game.utility(0)
    acc = np.zeros(game.q[0].shape if game.q else 0, dtype=np.int64)
    mask, total = 0, 0
    for k in range(1, 1 << n):
        i = (k & -k).bit_length() - 1  # the bit that flips between Gray codes k-1 and k
        sign = -1 if mask >> i & 1 else +1
        game.add(acc, i, sign)
        mask ^= 1 << i
        total += sign * game.n[i]
        game.utility(mask, acc, total)
    u = game.cache
    # phi_i * n! = sum over S without i of |S|! (n-|S|-1)! (U(S + i) - U(S))
    coef = [math.factorial(s) * math.factorial(n - s - 1) for s in range(n)]
    values = []
    for i in range(n):
        bit = 1 << i
        acc_i = 0
        for s_mask in range(1 << n):
            if not s_mask & bit:
                acc_i += coef[s_mask.bit_count()] * (u[s_mask | bit] - u[s_mask])
        values.append(Fraction(acc_i, math.factorial(n)))
    return _result("exact", game, values, empty, u[game.full_mask] if n else empty)


def gtg_shapley(
    game: CoalitionGame,
    seed: bytes | int,
    *,
    max_evaluations: int = MAX_EVALUATIONS,
    max_permutations: int | None = None,
    tolerance_bps: int = TOLERANCE_BPS,
    convergence: Fraction = CONVERGENCE,
) -> Contributions:
    """GTG-Shapley: guided, truncated Monte-Carlo permutations drawn from ``seed`` (module doc)."""
    import numpy as np

    n = game.size
    stream = PermutationStream(seed)
    if 1 << n <= max_evaluations:  # every coalition fits the budget: no need to estimate
        return dataclasses.replace(exact_shapley(game), method="gtg")
    empty = game.utility(0)
    total_acc, total_n = game.weighted_sum(game.full_mask)
    full = game.utility(game.full_mask, total_acc, total_n) if n else empty
    if n == 0 or abs(full - empty) < tolerance_bps:  # between-round truncation
        return _result("gtg", game, [0] * n, empty, full)
    truncated: set[tuple[int, int]] = set()  # (i, S): U(S + i) - U(S) taken as 0, not evaluated

    def walk(order: list[int]) -> None:
        acc = np.zeros_like(total_acc)
        mask, weight, before = 0, 0, empty
        for j in order:
            if abs(full - before) < tolerance_bps:  # within-permutation truncation
                truncated.add((j, mask))
            else:
                game.add(acc, j, +1)
                weight += game.n[j]
                before = game.utility(mask | 1 << j, acc, weight)
            mask |= 1 << j

    perms = passes = 0
    prev: list[Fraction] | None = None
    while True:
        for first in stream.shuffle(list(range(n))):
            if perms and (
                game.evaluations >= max_evaluations
                or (max_permutations is not None and perms >= max_permutations)
            ):
                return _result("gtg", game, _stratified(game, truncated), empty, full, perms)
            order = [first, *stream.shuffle([j for j in range(n) if j != first])]
            walk(order)
            walk(order[::-1])  # antithetic: the same order backwards
            perms += 2
        passes += 1
        now = _stratified(game, truncated)
        if prev is not None and passes >= MIN_PASSES:
            moved = max(abs(a - b) for a, b in zip(now, prev, strict=True))
            if moved <= convergence * sum(abs(v) for v in now):
                return _result("gtg", game, now, empty, full, perms)
        prev = now


def _stratified(game: CoalitionGame, truncated: set[tuple[int, int]]) -> list[Fraction]:
    """``phi_i``: the mean over strata ``s`` of the mean marginal over every known pair with ``|S| = s``.

    A known pair is ``(S, S + i)`` with both utilities cached (from any walk),
    or a truncated one (marginal 0). Strata with no known pair for ``i`` are
    left out of its mean.
    """
    n, u = game.size, game.cache
    strata: list[dict[int, list[int]]] = [{} for _ in range(n)]

    def take(i: int, size: int, marginal: int) -> None:
        cell = strata[i].setdefault(size, [0, 0])
        cell[0] += marginal
        cell[1] += 1

    for s_mask, value in u.items():
        for i in range(n):
            with_i = s_mask | 1 << i
            if with_i != s_mask and with_i in u:
                take(i, s_mask.bit_count(), u[with_i] - value)
    for i, s_mask in truncated:
        if s_mask | 1 << i not in u or s_mask not in u:  # an evaluated pair already counted
            take(i, s_mask.bit_count(), 0)
    return [
        sum((Fraction(t, c) for t, c in cells.values()), Fraction(0)) / max(1, len(cells))
        for cells in strata
    ]


def contributions(
    updates: Sequence[str | os.PathLike],
    start: str | os.PathLike,
    test,
    *,
    rows: Sequence[int] | None = None,
    weights: Sequence[int] | None = None,
    method: str = DEFAULT_METHOD,
    metric: str = "accuracy",
    seed: bytes | int | None = None,
    max_evaluations: int = MAX_EVALUATIONS,
    tolerance_bps: int = TOLERANCE_BPS,
    device: str = "cpu",
) -> Contributions:
    """Score each of a subgroup's ``updates`` by its contribution, in basis points.

    ``start`` is the round's starting model; ``test``, ``rows``, ``weights``
    and ``metric`` as in :meth:`CoalitionGame.load`; ``seed`` (the round's 32
    bytes) drives ``gtg``'s permutations and is required for it. ``device``
    is where coalition models are scored: the same scores on either.
    """
    if method not in METHODS:
        raise UsageError(
            f"contribution method {method!r} is not one of {', '.join(METHODS)}",
            f"pick one of them ({DEFAULT_METHOD} is the default)",
        )
    if method == "gtg" and seed is None:
        raise UsageError("gtg needs the round's seed", "pass seed=<32 bytes>")
    if method == "exact" and len(updates) > EXACT_MAX:
        raise UsageError(
            f"exact Shapley over {len(updates)} updates needs 2^{len(updates)} model evaluations",
            f"use it for subgroups of at most {EXACT_MAX}, else the gtg estimate",
        )
    game = CoalitionGame.load(
        updates, start, test, rows=rows, weights=weights, metric=metric, device=device
    )
    if method == "loo":
        return leave_one_out(game)
    if method == "exact":
        return exact_shapley(game)
    return gtg_shapley(game, seed, max_evaluations=max_evaluations, tolerance_bps=tolerance_bps)
