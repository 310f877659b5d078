"""Robust aggregation rules on din's fixed-point grid: norm-bounded mean, trimmed mean, median.

The weighted mean of ``ml.aggregate`` lets one update move the aggregate
anywhere within the clip bound: its pull grows with its size and its
claimed samples. These rules bound that pull. Each is computed on the same
grid as the mean and gives the same bytes on any machine and thread count.

The grid
--------
Every input (and the starting model, for ``norm-bounded``) is quantised
exactly as ``ml.aggregate`` does -- with its own kernel:
``q = rint(clip(w * 2^20, -2^30, 2^30))``, round-half-to-even in float64 --
so ``q`` is the same integer everywhere. The rules below work on these
integers in int64 (or Python integers) only; the one floating-point step is
the final ``float32(float64(X) / float64(D))`` of an exact integer ``X`` by
an exact integer ``D``: one correctly rounded IEEE division, then one
rounding to float32, as in ``ml.aggregate``.

Rules
-----
``mean``          the sample-weighted mean: ``ml.aggregate`` itself, bytes
                  unchanged, no ``din.rule`` key.
``norm-bounded``  each update's delta from the round's starting model
                  ``d_i = q_i - q_base`` is clipped to the L2 bound ``B``
                  (``--clip-norm``, in weight units; on the grid
                  ``Bq = rint(B * 2^20)``), then the sample-weighted mean is
                  taken. The squared norm ``S_i = sum d_i^2`` is an exact
                  integer. When ``S_i <= Bq^2`` the update is used as is;
                  otherwise with ``R_i = ceil(sqrt(S_i))`` (``math.isqrt``)
                  every coordinate becomes
                  ``c = sign(d) * floor(|d| * Bq / R_i)`` -- the exact
                  rational factor ``Bq / R_i <= Bq / sqrt(S_i)``, rounded
                  toward zero, so the clipped delta's norm never exceeds
                  ``B`` -- and the update is ``q_base + c``. The mean is then
                  ``float32(sum(n_i * q'_i) / (N * 2^20))``: an update within
                  the bound contributes exactly what it does to ``mean``, so
                  with no update clipped the tensors equal ``mean``'s bit for
                  bit. ``din.rule`` lists the clipped inputs (output order).
``trimmed-mean``  coordinate-wise: of the ``n`` values of a coordinate the
                  ``k = floor(f * n)`` largest and ``k`` smallest are dropped
                  (``f`` = ``--trim``, ``0 <= f < 1/2``, read as the exact
                  decimal of its shortest float repr, ``0.1`` = 1/10) and the rest averaged
                  **unweighted**: ``float32(sum / ((n - 2k) * 2^20))``.
                  Sample counts are not weights here: a poisoner's claimed
                  samples would buy it back the influence the trim removes.
``median``        coordinate-wise, **unweighted**: the middle value for odd
                  ``n``; for even ``n`` the mean of the two middle values,
                  ``float32((a + b) / 2^21)`` (one division of an exact
                  integer, so the midpoint is rounded once, to nearest even).

The output's ``din.samples`` is the total weight of the inputs under every
rule, so a robust aggregate can itself be aggregated.

Streaming. Output is computed in blocks of :data:`BLOCK` weights: each
input's slice is read (``preadv``) and quantised into one ``n x BLOCK`` int64
matrix, so memory is ``n * BLOCK * 8`` bytes per worker whatever the model's
size. ``norm-bounded`` makes one extra pass first, for the squared norms
(summed per block in int64 from a 16-bit split of each delta, so no product
overflows, and across blocks as Python integers). Blocks are spread over
worker threads (``DIN_THREADS``) and written in order; each block's value
depends only on its own integers, so the thread count never changes the
bytes. NaN or Inf in an input is reported naming the file and tensor;
nothing is written.

Example:
    aggregate(paths, "next.safetensors", rule="median")
    aggregate(paths, "next.safetensors", rule="norm-bounded", base="start.safetensors", clip_norm=2.0)
"""

from __future__ import annotations

import json
import math
import os
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import BinaryIO

from din_cli.errors import InputError, UsageError
from din_cli.ml import aggregate as agg

RULES = ("mean", "norm-bounded", "trimmed-mean", "median")
DEFAULT_RULE = "mean"
BLOCK = 1 << 13  # weights per block: 100 inputs x 8 Ki x 8 bytes = 6.5 MiB per worker
MAX_CLIP_NORM = 2.0**11  # Bq < 2^31, so |d| * Bq < 2^62 fits int64


@dataclass
class RobustResult(agg.AggregateResult):
    rule: str = DEFAULT_RULE
    rule_params: dict = field(default_factory=dict)  # the din.rule object
    clipped: list[tuple[int, float]] = field(default_factory=list)  # norm-bounded: (input, L2 norm)


@dataclass(frozen=True)
class Rule:
    """A rule and its checked parameters; :meth:`describe` is the ``din.rule`` value's base."""

    name: str
    clip_q: int = 0  # norm-bounded: the bound on the grid, rint(B * 2^20)
    clip_norm: str = ""  # as given
    trim: Fraction = Fraction(0)
    trim_text: str = ""

    def trimmed(self, n: int) -> int:
        """``k = floor(f * n)``: values dropped at each end of a coordinate."""
        return math.floor(self.trim * n)


def make_rule(
    name: str, *, clip_norm: float | str | None = None, trim: float | str | None = None
) -> Rule:
    """Check a rule's name and parameters; raise UsageError naming the bad one."""
    if name not in RULES:
        raise UsageError(f"rule {name!r} is not one of {', '.join(RULES)}", "pick one of them")
    if clip_norm is not None and name != "norm-bounded":
        raise UsageError(
            f"--clip-norm applies to the norm-bounded rule, not {name}",
            "drop --clip-norm or pass --rule norm-bounded",
        )
    if trim is not None and name != "trimmed-mean":
        raise UsageError(
            f"--trim applies to the trimmed-mean rule, not {name}",
            "drop --trim or pass --rule trimmed-mean",
        )
    if name == "norm-bounded":
        if clip_norm is None:
            raise UsageError(
                "the norm-bounded rule needs a bound", "pass --clip-norm X (an L2 norm, e.g. 1.0)"
            )
        b = _number(clip_norm, "--clip-norm")
        q = round(b * 2**agg.SCALE_BITS)  # round-half-even, like the grid
        if not (q >= 1 and b <= MAX_CLIP_NORM):
            raise UsageError(
                f"--clip-norm {clip_norm} is outside (0, {int(MAX_CLIP_NORM)}]",
                f"pass a bound of at least 2^-20 and at most {int(MAX_CLIP_NORM)}",
            )
        return Rule(name, clip_q=q, clip_norm=repr(b))
    if name == "trimmed-mean":
        if trim is None:
            raise UsageError(
                "the trimmed-mean rule needs a fraction to trim",
                "pass --trim F (0 <= F < 0.5, e.g. 0.1)",
            )
        text = repr(_number(trim, "--trim"))
        f = Fraction(text)
        if not (0 <= f < Fraction(1, 2)):
            raise UsageError(
                f"--trim {trim} is outside [0, 0.5)",
                "pass the fraction dropped at each end, e.g. 0.1",
            )
        return Rule(name, trim=f, trim_text=text)
    return Rule(name)


def _number(value, flag: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{flag} {value!r} is not a number", f"pass {flag} as a decimal") from None
    if not math.isfinite(v):
        raise UsageError(f"{flag} {value!r} is not finite", f"pass {flag} as a finite decimal")
    return v


# --- the rules on one block: q is an (n, m) int64 matrix, rows in input order ---


def median_block(q, out) -> None:
    """Coordinate-wise median of ``q``'s rows into float32 ``out`` (even n: midpoint of the middles)."""
    import numpy as np

    n = q.shape[0]
    if n % 2:
        mid = np.partition(q, n // 2, axis=0)[n // 2]
        out[:] = np.divide(mid.astype(np.float64), float(2**agg.SCALE_BITS))
    else:
        p = np.partition(q, [n // 2 - 1, n // 2], axis=0)
        s = p[n // 2 - 1] + p[n // 2]  # |s| <= 2^31: exact
        out[:] = np.divide(s.astype(np.float64), float(2 ** (agg.SCALE_BITS + 1)))


def trimmed_block(q, k: int, out) -> None:
    """Coordinate-wise mean of ``q``'s rows without the ``k`` largest and ``k`` smallest."""
    import numpy as np

    n = q.shape[0]
    if k:
        q = np.partition(q, [k, n - k - 1], axis=0)[k : n - k]  # the middle multiset, any order
    s = q.sum(axis=0, dtype=np.int64)  # |s| <= n * 2^30: exact
    out[:] = np.divide(s.astype(np.float64), float(n - 2 * k) * float(2**agg.SCALE_BITS))


def squared_norm(d) -> int:
    """``sum(d^2)`` of an int64 vector with ``|d| <= 2^31`` and at most 2^13 entries, exactly.

    ``d = hi * 2^16 + lo`` with ``0 <= lo < 2^16``: each of the three partial
    sums stays below 2^46, so int64 never overflows.
    """
    import numpy as np

    assert d.shape[0] <= BLOCK
    hi = d >> 16
    lo = d & 0xFFFF
    a = int(np.dot(hi, hi))
    b = int(np.dot(hi, lo))
    c = int(np.dot(lo, lo))
    return (a << 32) + (b << 17) + c


def clip_delta(d, clip_q: int, root: int):
    """``sign(d) * floor(|d| * clip_q / root)`` in int64 (``|d| < 2^31``, ``clip_q < 2^31``)."""
    import numpy as np

    mag = np.abs(d)
    mag *= clip_q
    mag //= root
    return np.where(d < 0, -mag, mag)


def clip_root(s: int, clip_q: int) -> int:
    """``ceil(sqrt(s))`` when ``s > clip_q^2`` (the update is clipped), else 0."""
    if s <= clip_q * clip_q:
        return 0
    r = math.isqrt(s)
    return r if r * r == s else r + 1


# --- streaming ---


@dataclass
class _Job:
    plan: agg._Plan
    rule: Rule
    segments: list  # (name, count, starts: one per input, then the base's when there is one)
    base: agg._Input | None
    weights: list[int]
    roots: list[int] = field(default_factory=list)  # norm-bounded: per input, 0 = not clipped

    def blocks(self):
        for seg_name, count, starts in self.segments:
            for a in range(0, count, BLOCK):
                yield seg_name, starts, a, min(BLOCK, count - a)


class _Slot:
    def __init__(self, n: int):
        import numpy as np

        self.qf = np.zeros((n + 1, BLOCK), dtype=np.float64)
        self.tmp = np.empty(BLOCK, dtype=np.float64)
        self.buf = np.empty(BLOCK, dtype="<f4")
        self.out = np.empty(BLOCK, dtype="<f4")


def _quantised(job: _Job, slot: _Slot, seg_name: str, starts, a: int, m: int):
    """The block's ``(n [+ 1 base], m)`` int64 grid values; NaN/Inf raise naming file and tensor."""
    import numpy as np

    kern = agg._kernels()
    inputs = job.plan.inputs + ([job.base] if job.base is not None else [])
    qf = slot.qf[: len(inputs), :m]
    qf.fill(0.0)
    for i, inp in enumerate(inputs):
        kern.accumulate(qf[i], agg._read(inp, starts[i] + 4 * a, slot.buf[:m]), 1.0, slot.tmp)
    if math.isnan(qf.sum()):
        if job.base is not None and math.isnan(qf[-1].sum()):
            raise InputError(
                f"{job.base.path}: the starting model contains NaN or Inf",
                "pass the round's real starting model as --base",
            )
        agg._name_culprit(job.plan, seg_name, starts, a, m)
    return qf.astype(np.int64)


def _block(job: _Job, slot: _Slot, seg_name: str, starts, a: int, m: int):
    import numpy as np

    q = _quantised(job, slot, seg_name, starts, a, m)
    out = slot.out[:m]
    name = job.rule.name
    if name == "median":
        median_block(q, out)
    elif name == "trimmed-mean":
        trimmed_block(q, job.rule.trimmed(q.shape[0]), out)
    else:  # norm-bounded
        base = q[-1]
        acc = np.zeros(m, dtype=np.int64)
        for i, w in enumerate(job.weights):
            root = job.roots[i]
            row = q[i] if not root else base + clip_delta(q[i] - base, job.rule.clip_q, root)
            acc += row * w  # |sum| <= 2^30 * 2^32: exact
        out[:] = np.divide(acc.astype(np.float64), job.plan.divisor)
    return out


def _norms(job: _Job, nthreads: int) -> list[int]:
    """Exact squared L2 norms of every input's delta from the base, over the whole model."""
    totals = [0] * len(job.plan.inputs)

    def one(slot, seg_name, starts, a, m):
        q = _quantised(job, slot, seg_name, starts, a, m)
        return [squared_norm(q[i] - q[-1]) for i in range(len(totals))]

    for parts in _in_order(job, nthreads, one):
        for i, s in enumerate(parts):
            totals[i] += s
    return totals


def _in_order(job: _Job, nthreads: int, fn: Callable):
    """``fn(slot, *block)`` for every block, yielded in block order, on ``nthreads`` workers."""
    n = len(job.plan.inputs)
    if nthreads == 1:
        slot = _Slot(n)
        for blk in job.blocks():
            yield fn(slot, *blk)
        return
    from concurrent.futures import ThreadPoolExecutor

    free = [_Slot(n) for _ in range(2 * nthreads)]
    pending: deque = deque()
    pool = ThreadPoolExecutor(nthreads, thread_name_prefix="din-robust")
    try:
        for blk in job.blocks():
            if not free:
                future, slot = pending.popleft()
                yield future.result()
                free.append(slot)
            slot = free.pop()
            pending.append((pool.submit(fn, slot, *blk), slot))
        while pending:
            future, slot = pending.popleft()
            yield future.result()
            free.append(slot)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _segments(plan: agg._Plan, base_header) -> list:
    if base_header is None:
        return plan.segments
    if plan.canonical and agg._is_canonical(base_header, plan.names):
        ((name, count, starts),) = plan.segments
        return [(name, count, [*starts, base_header.tensors[plan.names[0]].start])]
    return [
        (
            n,
            plan.sizes[n],
            [i.header.tensors[n].start for i in plan.inputs] + [base_header.tensors[n].start],
        )
        for n in plan.names
    ]


def _base_header(base, plan: agg._Plan):
    from din_cli.ml import tensorfile, zoo

    h = tensorfile.read_header(base)
    expected = zoo.param_shapes(plan.result.arch)
    if (
        h.arch != plan.result.arch
        or set(h.tensors) != set(expected)
        or any(
            h.tensors[n].dtype != "F32" or tuple(h.tensors[n].shape) != tuple(expected[n])
            for n in expected
        )
    ):
        raise InputError(
            f"{h.path}: the starting model is not a {plan.result.arch} model like the updates",
            "pass the round's starting model as --base",
        )
    return h


def rule_metadata(rule: Rule, n: int, clipped: Sequence[int] = ()) -> dict:
    """The ``din.rule`` object: the rule, its parameters and what it did."""
    if rule.name == "norm-bounded":
        return {"clip_norm": rule.clip_norm, "clipped": list(clipped), "rule": rule.name}
    if rule.name == "trimmed-mean":
        return {"k": rule.trimmed(n), "rule": rule.name, "trim": rule.trim_text}
    return {"rule": rule.name}


def aggregate_to(
    paths: Sequence[str | os.PathLike],
    out: BinaryIO,
    *,
    rule: Rule,
    base: str | os.PathLike | None = None,
    progress: Callable[[int], None] | None = None,
    threads: int | None = None,
    weights: Sequence[int] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> RobustResult:
    """Aggregate model files ``paths`` into ``out`` by ``rule`` (not ``mean``), canonically.

    ``base`` (the round's starting model) is required by ``norm-bounded``.
    ``weights`` replaces the inputs' ``din.samples`` (``norm-bounded``'s mean
    weights; every rule's output ``din.samples``). ``threads`` changes the
    speed, never the bytes.
    """
    from din_cli.ml import tensorfile

    if rule.name == "mean":
        raise ValueError("the mean is ml.aggregate's")
    if rule.name == "norm-bounded" and base is None:
        raise UsageError(
            "the norm-bounded rule measures updates from the starting model",
            "pass --base FILE|CID",
        )
    nthreads = max(1, int(threads if threads is not None else agg.default_threads()))
    plan = agg._plan(paths, weights, metadata)
    n = len(plan.inputs)
    bh = _base_header(base, plan) if rule.name == "norm-bounded" else None
    job = _Job(
        plan,
        rule,
        _segments(plan, bh),
        agg._Input(bh.path, 0, bh) if bh is not None else None,
        [i.samples for i in plan.inputs],
    )
    clipped: list[tuple[int, float]] = []
    with agg._opened(plan.inputs + ([job.base] if job.base is not None else [])):
        if rule.name == "norm-bounded":
            sq = _norms(job, nthreads)
            job.roots = [clip_root(s, rule.clip_q) for s in sq]
            clipped = [
                (i, math.sqrt(s) / 2**agg.SCALE_BITS) for i, s in enumerate(sq) if job.roots[i]
            ]
        doc = json.loads(plan.header[8:].decode("ascii"))
        meta = doc.pop("__metadata__")
        meta[tensorfile.RULE_KEY] = json.dumps(
            rule_metadata(rule, n, [i for i, _ in clipped]), sort_keys=True, separators=(",", ":")
        )
        specs = {name: (t["dtype"], tuple(t["shape"])) for name, t in doc.items()}
        out.write(tensorfile.encode_header(meta, specs))
        for values in _in_order(job, nthreads, lambda slot, *blk: _block(job, slot, *blk).copy()):
            out.write(memoryview(values).cast("B"))
            if progress:
                progress(values.shape[0])
    r = plan.result
    return RobustResult(
        r.arch,
        r.samples,
        r.inputs,
        r.params,
        r.round,
        r.task,
        rule=rule.name,
        rule_params=rule_metadata(rule, n, [i for i, _ in clipped]),
        clipped=clipped,
    )


def aggregate(
    paths: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    rule: Rule | str = DEFAULT_RULE,
    base: str | os.PathLike | None = None,
    clip_norm: float | str | None = None,
    trim: float | str | None = None,
    progress: Callable[[int], None] | None = None,
    threads: int | None = None,
    weights: Sequence[int] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> agg.AggregateResult:
    """Aggregate ``paths`` into the file ``output`` (``-``: stdout) by ``rule``, atomically.

    ``rule="mean"`` is ``ml.aggregate.aggregate`` (same bytes). Bad rule
    parameters raise UsageError before anything is read or written.
    """
    if isinstance(rule, str):
        rule = make_rule(rule, clip_norm=clip_norm, trim=trim)
    kw = {"progress": progress, "threads": threads, "weights": weights, "metadata": metadata}
    if rule.name == "mean":
        return agg.aggregate(paths, output, **kw)
    import shutil
    import sys
    import tempfile

    from din_cli.files import atomic_output, is_stdio

    if is_stdio(output):
        with tempfile.TemporaryFile() as tmp:
            result = aggregate_to(paths, tmp, rule=rule, base=base, **kw)
            tmp.seek(0)
            shutil.copyfileobj(tmp, sys.stdout.buffer, 1 << 20)
            sys.stdout.buffer.flush()
        return result
    with atomic_output(output) as f:
        return aggregate_to(paths, f, rule=rule, base=base, **kw)
