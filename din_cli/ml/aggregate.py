"""Bit-exact, streaming, sample-weighted FedAvg.

Validators agree on an aggregate by comparing CIDs, so the output bytes must
not depend on input order, thread count, CPU model or accelerator. Floating
point sums do (they are not associative); integer sums do not. So:

Encoding ``fixedpoint-s20-c1024``
---------------------------------
1. **Clip and quantise.** Each float32 weight ``w`` is clipped to
   ``[-1024, 1024]`` and quantised to the grid ``2^-20``:
   ``q = rint(clip(w, -C, C) * 2^20)`` with round-half-to-even, so
   ``|q| <= 2^30``. Scaling by a power of two is exact and ``rint`` is exact,
   so ``q`` is the same integer on every IEEE-754 machine.
2. **Weight.** ``q * n`` where ``n`` is the input's ``din.samples``.
3. **Sum exactly.** The products are integers; they are summed in float64,
   where every integer below ``2^53`` is exact, so any order, any vector
   width and any FMA contraction gives the same value. The bound holds by
   construction: inputs are taken in groups whose sample counts add up to at
   most ``2^23`` (``2^30 * 2^23 = 2^53``); an input with more samples is
   split into several passes with weights summing to ``n`` (exact: integer
   distributivity). After each group the float64 partial sums are folded
   into an int64 accumulator (exact up to ``2^63``: total samples up to
   ``2^32``). With fewer than ``2^23`` samples in all -- the usual case -- no
   folding happens at all.
4. **Divide once.** ``mean = float32(float64(X) / float64(N * 2^20))`` where
   ``X`` is the exact integer sum and ``N`` the total samples: one correctly
   rounded IEEE division and one rounding to float32, identical everywhere.

The output carries ``din.samples = N``, so aggregates are valid inputs: the
global model is the aggregate of subgroup aggregates weighted by their
samples.

Why this scale and clip. ``2^-20`` (about 1e-6) is below the noise of one SGD
step yet leaves 10 bits of integer range; at ``|w| >= 8`` float32 weights are
already multiples of ``2^-20`` so quantisation loses nothing there. A clip of
1024 is far above the weights of the zoo's models (and of normal networks
trained with weight decay), while bounding what one malicious update can
contribute. ``s20/c1024`` makes ``|q| <= 2^30``, the largest range that keeps
2^23 (8.4 million) samples per exact float64 group.

Error bound against a float64 reference ``sum(n_i * w_i) / sum(n_i)`` of
unclipped weights: ``|aggregate - reference| <= 2^-21 + 2^-24 * |reference|``
(quantisation error averages to at most half a grid step; then one float32
rounding). Aggregating subgroup aggregates (two levels) at most doubles it:
``<= 2^-20 + 2^-23 * |reference|``.

Streaming and speed. The output is produced in blocks of 64 Ki weights. For
each block every input's slice is read (``preadv``) into one reused buffer
and folded into a float64 accumulator; both stay in the CPU cache. The block
is then divided and written. Nothing is memory-mapped (a mapped file's pages
would count as resident memory), so resident memory is a few MiB per worker
thread whatever the number and size of the inputs. Blocks are spread over
worker threads (``DIN_THREADS``, default: the CPUs available); each block's
value depends only on its own exact integer sums, so the thread count
changes the speed, never the bytes. The fused quantise-weight-add kernel
(four inputs per pass, about 10 GB/s of float32 per core here) is compiled by
numba when it is installed; without numba a numpy kernel computes the very
same bits, several times more slowly.

On a GPU (``device="cuda"``, ``din aggregate --device cuda``) the same
integers are summed by torch in int64, which is exact for every input the
CPU accepts (``|q * n| <= 2^30 * 2^32``), and the block is finalised with the
same two IEEE roundings (int64 to float64, one true division by a float64
tensor -- never a scalar, which torch would turn into a multiplication by its
reciprocal -- and float64 to float32), so the bytes are the CPU's. Inputs
stream through a few pinned host buffers of ``TORCH_CHUNK`` weights, read by
worker threads while the GPU works on the previous chunk: GPU and host
memory stay bounded whatever the number and size of the inputs. The same
torch kernel runs on the CPU (``device="torch-cpu"``), which is how the CPU
suite checks it against the numba kernel without a GPU.
NaN or Inf in an input is detected in the same pass (``w - w`` is NaN for
them and poisons the block's accumulator) and reported naming the file and
tensor; nothing is written.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from din_cli.errors import InputError, UsageError

SCALE_BITS = 20
CLIP = 1024.0
Q_MAX = 2.0**30  # CLIP * 2^SCALE_BITS
GROUP_SAMPLES = 2**23  # Q_MAX * GROUP_SAMPLES = 2^53: exact float64 integers
MAX_TOTAL_SAMPLES = 2**32  # Q_MAX * 2^32 = 2^62 < 2^63: exact int64
ENCODING = f"fixedpoint-s{SCALE_BITS}-c{int(CLIP)}"
BLOCK = 1 << 16
TORCH_CHUNK = 1 << 22  # weights per output chunk on the torch path (16 MiB of float32 per input)
# device="auto" aggregates files on a GPU from 256 GiB of inputs. Measured on an H200 host
# (benchmarks/aggregate.py --cli): files go through at ~16 GB/s on the CPU and ~22 GB/s
# through the GPU, and starting CUDA costs a fresh process ~2.7 s: even at 150 GB it barely pays.
AUTO_CUDA_BYTES = 1 << 38
ERROR_BOUND_ABS = 2.0**-21
ERROR_BOUND_REL = 2.0**-24


@dataclass
class AggregateResult:
    arch: str
    samples: int
    inputs: int
    params: int
    round: int
    task: str


# --- kernels ---
# accumulate(acc, w, n, tmp): acc += rint(clip(w * 2^S)) * n, and NaN where w is NaN/Inf
# finalize(acc, out, divisor) -> bad: out = float32(acc / divisor); acc = 0; bad if any NaN


def _numpy_accumulate(acc, w, n, tmp):
    import numpy as np

    t = tmp[: acc.shape[0]]
    np.multiply(w, 2.0**SCALE_BITS, out=t, dtype=np.float64)
    np.clip(t, -Q_MAX, Q_MAX, out=t)
    np.rint(t, out=t)
    np.multiply(t, n, out=t)
    np.add(acc, t, out=acc)
    if not np.isfinite(w).all():
        acc[0] = np.nan  # poison: the caller names the culprit


def _numpy_finalize(acc, out, divisor):
    import numpy as np

    bad = math.isnan(acc.sum())
    out[:] = np.divide(acc, divisor)
    acc.fill(0.0)
    return bad


@dataclass(frozen=True)
class _Kernels:
    name: str
    accumulate: Callable
    finalize: Callable
    accumulate4: Callable | None = None  # four inputs per pass (less accumulator traffic)
    accumulate2: Callable | None = None  # the remainder of two or three inputs, in one pass
    accumulate3: Callable | None = None


NUMPY_KERNELS = _Kernels("numpy", _numpy_accumulate, _numpy_finalize)
_KERNELS: _Kernels | None = None


# Below this much input, numpy's kernels finish before numba would have loaded its cached
# machine code (importing numba and initialising its code generator cost ~1.2 s per process;
# numpy sums ~0.7 GB/s, numba ~10 GB/s here): a one-shot `din aggregate` of small updates
# starts as fast as a plain numpy script. The bytes are the same either way.
NUMBA_MIN_BYTES = 1 << 30


def _kernels(size: int | None = None) -> _Kernels:
    """numba-compiled kernels when numba is importable (and DIN_NO_NUMBA unset), else numpy ones.

    ``size`` (bytes of input) below NUMBA_MIN_BYTES takes numpy's kernels unless
    this process has loaded numba's already.
    """
    global _KERNELS
    if _KERNELS is not None:
        return _KERNELS
    if size is not None and size < NUMBA_MIN_BYTES:
        return NUMPY_KERNELS
    if os.environ.get("DIN_NO_NUMBA"):
        _KERNELS = NUMPY_KERNELS
        return _KERNELS
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(cache_home, "din", "numba"))
    try:
        from din_cli.ml import _numba_kernels as k
    except ImportError:
        _KERNELS = NUMPY_KERNELS
        return _KERNELS
    assert k.SCALE == 2.0**SCALE_BITS and k.QMAX == Q_MAX  # one grid for both kernels

    def call(acc, w, n, tmp):
        k.accumulate(acc, w, n)

    _KERNELS = _Kernels("numba", call, k.finalize, k.accumulate4, k.accumulate2, k.accumulate3)
    return _KERNELS


def kernel_name() -> str:
    return _kernels().name


# --- inputs ---


@dataclass
class _Input:
    path: str
    samples: int
    header: object
    fd: int | None = None


def _open_inputs(
    paths: Sequence[str | os.PathLike], weights: Sequence[int] | None = None
) -> tuple[list[_Input], str, dict]:
    from din_cli.ml import tensorfile, zoo

    if not paths:
        raise UsageError(
            "no inputs to aggregate", "pass update files or CIDs, or pipe them one per line"
        )
    if weights is not None and len(weights) != len(paths):
        raise ValueError("one weight per input")
    inputs: list[_Input] = []
    arch = None
    expected: dict = {}
    for k, p in enumerate(paths):
        h = tensorfile.read_header(p)
        if arch is None:
            if not h.arch:
                raise InputError(
                    f"{h.path}: no din.arch metadata",
                    "aggregate files written by din train or din aggregate",
                )
            arch = h.arch
            expected = zoo.param_shapes(arch)
        elif h.arch != arch:
            raise InputError(
                f"{h.path}: architecture {h.arch!r} differs from {arch!r} of {inputs[0].path}",
                "aggregate updates of one task only",
            )
        tensorfile.check_model(h, expected, arch=arch, kinds=("update", "aggregate", "model"))
        samples = h.samples if weights is None else int(weights[k])
        if samples <= 0:
            raise InputError(
                f"{h.path}: din.samples is 0, so it has no weight in FedAvg",
                "aggregate trained updates (din train sets the sample count)",
            )
        inputs.append(_Input(str(h.path), samples, h))
    total = sum(i.samples for i in inputs)
    if total > MAX_TOTAL_SAMPLES:
        raise InputError(
            f"{total} samples in all exceed the exact range ({MAX_TOTAL_SAMPLES})",
            "aggregate in subgroups of fewer samples",
        )
    return inputs, arch, expected


def _passes(inputs: list[_Input]) -> list[list[tuple[int, float]]]:
    """Groups of (input index, weight) whose weights sum to at most GROUP_SAMPLES."""
    groups: list[list[tuple[int, float]]] = [[]]
    room = GROUP_SAMPLES
    for i, inp in enumerate(inputs):
        left = inp.samples
        while left:
            if room == 0:
                groups.append([])
                room = GROUP_SAMPLES
            take = min(left, room)
            groups[-1].append((i, float(take)))
            room -= take
            left -= take
    return groups


@dataclass
class _Plan:
    """What :func:`aggregate_to` computes, fixed before the first block is read.

    ``segments`` cut the output's flat float32 space into runs that are
    contiguous in every input, each with every input's byte offset (canonical
    inputs -- sorted, contiguous -- collapse to one run); ``groups`` are the
    exact-sum passes of :func:`_passes`.
    """

    inputs: list[_Input]
    result: AggregateResult
    header: bytes
    names: list[str]
    sizes: dict[str, int]
    canonical: bool
    segments: list[tuple[str, int, list[int]]]
    groups: list[list[tuple[int, float]]]
    divisor: float

    @property
    def multi(self) -> bool:
        """More than one pass: partial sums are folded into an int64 accumulator."""
        return len(self.groups) > 1

    def blocks(self):
        """``(segment name, input offsets, first weight, count)`` of every output block, in order."""
        for seg_name, count, starts in self.segments:
            for a in range(0, count, BLOCK):
                yield seg_name, starts, a, min(BLOCK, count - a)


def _plan(
    paths: Sequence[str | os.PathLike],
    weights: Sequence[int] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> _Plan:
    """Open and check the inputs' headers; the output header, blocks and passes."""
    import numpy as np

    from din_cli.ml import tensorfile

    inputs, arch, expected = _open_inputs(paths, weights)
    names = sorted(expected)
    sizes = {name: int(np.prod(expected[name], dtype=np.int64)) for name in names}
    total = sum(i.samples for i in inputs)
    rounds = max(i.header.round for i in inputs)
    tasks = {i.header.task for i in inputs}
    task = tasks.pop() if len(tasks) == 1 else ""
    meta = tensorfile.make_metadata(
        arch=arch, kind="aggregate", samples=total, round=rounds, task=task, encoding=ENCODING
    )
    meta.update(metadata or {})
    header = tensorfile.encode_header(meta, {n: ("F32", expected[n]) for n in names})
    params = sum(sizes.values())
    canonical = all(_is_canonical(i.header, names) for i in inputs)
    if canonical:
        segments = [
            (names[0] if names else "", params, [i.header.tensors[names[0]].start for i in inputs])
        ]
    else:
        segments = [(n, sizes[n], [i.header.tensors[n].start for i in inputs]) for n in names]
    result = AggregateResult(
        arch=arch, samples=total, inputs=len(inputs), params=params, round=rounds, task=task
    )
    return _Plan(
        inputs=inputs,
        result=result,
        header=header,
        names=names,
        sizes=sizes,
        canonical=canonical,
        segments=segments,
        groups=_passes(inputs),
        divisor=float(total) * float(2**SCALE_BITS),
    )


def _fold_group(kern: _Kernels, inputs, group, starts, offset: int, slot: _Slot, blk, m: int):
    """``blk += rint(clip(w * 2^S)) * n`` over one pass's inputs, for the block at byte ``offset``.

    Four inputs per kernel call, then a remainder of two or three in one call,
    then one at a time (the numpy kernels take one at a time only).
    """
    k = 0
    if kern.accumulate4 is not None:
        bufs = slot.bufs
        full = len(group) - len(group) % 4
        for k in range(0, full, 4):
            (i0, n0), (i1, n1), (i2, n2), (i3, n3) = group[k : k + 4]
            kern.accumulate4(
                blk,
                _read(inputs[i0], starts[i0] + offset, bufs[0][:m]),
                _read(inputs[i1], starts[i1] + offset, bufs[1][:m]),
                _read(inputs[i2], starts[i2] + offset, bufs[2][:m]),
                _read(inputs[i3], starts[i3] + offset, bufs[3][:m]),
                n0,
                n1,
                n2,
                n3,
            )
        k = full
        rest = group[full:]
        if len(rest) == 3:
            (i0, n0), (i1, n1), (i2, n2) = rest
            kern.accumulate3(
                blk,
                _read(inputs[i0], starts[i0] + offset, bufs[0][:m]),
                _read(inputs[i1], starts[i1] + offset, bufs[1][:m]),
                _read(inputs[i2], starts[i2] + offset, bufs[2][:m]),
                n0,
                n1,
                n2,
            )
            k = len(group)
        elif len(rest) == 2:
            (i0, n0), (i1, n1) = rest
            kern.accumulate2(
                blk,
                _read(inputs[i0], starts[i0] + offset, bufs[0][:m]),
                _read(inputs[i1], starts[i1] + offset, bufs[1][:m]),
                n0,
                n1,
            )
            k = len(group)
    for i, weight in group[k:]:
        kern.accumulate(blk, _read(inputs[i], starts[i] + offset, slot.buf[:m]), weight, slot.tmp)


def _block(plan: _Plan, kern: _Kernels, slot: _Slot, seg_name: str, starts, a: int, m: int):
    """The output block of ``m`` weights from weight ``a`` of a segment: float32, in ``slot.out``.

    Each pass is summed exactly in float64; with several passes the sums are
    folded into int64 in between. NaN/Inf in an input poisons the sum and
    raises InputError naming the file and tensor.
    """
    import numpy as np

    blk = slot.acc[:m]  # all zeros: fresh, or reset by finalize
    o = slot.out[:m]
    multi = plan.multi
    if multi:
        slot.iacc[:m] = 0
    for group in plan.groups:
        _fold_group(kern, plan.inputs, group, starts, 4 * a, slot, blk, m)
        if multi:
            if math.isnan(blk.sum()):  # NaN/Inf inputs poison the sum (acc itself is bounded)
                blk.fill(0.0)
                _name_culprit(plan, seg_name, starts, a, m)
            slot.iacc[:m] += blk.astype(np.int64)
            blk.fill(0.0)
    if multi:
        r = slot.res[:m]
        r[:] = slot.iacc[:m]
        kern.finalize(r, o, plan.divisor)
    elif kern.finalize(blk, o, plan.divisor):
        _name_culprit(plan, seg_name, starts, a, m)
    return o


def _write_blocks(plan: _Plan, out: BinaryIO, nthreads: int, progress) -> None:
    """Compute every block and write it to ``out`` in order, on ``nthreads`` worker threads."""
    kern = _kernels(4 * plan.result.params * len(plan.inputs))
    slots = [_Slot(plan.multi) for _ in range(2 * nthreads if nthreads > 1 else 1)]
    if nthreads == 1:
        for seg_name, starts, a, m in plan.blocks():
            out.write(memoryview(_block(plan, kern, slots[0], seg_name, starts, a, m)).cast("B"))
            if progress:
                progress(m)
        return
    from concurrent.futures import ThreadPoolExecutor

    # Workers take blocks as they come (no lock-step), at most len(slots) in
    # flight; results are written in block order as they complete.
    free = list(slots)
    pending: deque = deque()

    def write_oldest():
        future, slot, m = pending.popleft()
        out.write(memoryview(future.result()).cast("B"))
        free.append(slot)
        if progress:
            progress(m)

    pool = ThreadPoolExecutor(nthreads, thread_name_prefix="din-aggregate")
    try:
        for seg_name, starts, a, m in plan.blocks():
            if not free:
                write_oldest()
            slot = free.pop()
            future = pool.submit(_block, plan, kern, slot, seg_name, starts, a, m)
            pending.append((future, slot, m))
        while pending:
            write_oldest()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _torch_fold(acc, w, n: int, t, ti, finite, *, first: bool) -> None:
    """``acc (+)= rint(clip(w * 2^S)) * n`` in int64 on ``w``'s device; ``finite &= all finite``.

    ``t`` (float64) and ``ti`` (int64) are scratch of ``w``'s length.
    """
    import torch

    finite.logical_and_(torch.isfinite(w).all())
    t.copy_(w).mul_(2.0**SCALE_BITS).clamp_(-Q_MAX, Q_MAX).round_()  # round half to even
    ti.copy_(t).mul_(n)
    if first:
        acc.copy_(ti)
    else:
        acc.add_(ti)


def _torch_finish(acc, divisor, t, out) -> None:
    """``out = float32(float64(acc) / divisor)``: the CPU's two roundings (``divisor`` a full tensor)."""
    import torch

    t.copy_(acc)  # int64 -> float64, rounded to nearest as numpy's cast
    torch.div(t, divisor, out=t)  # a true division: a scalar divisor would become a reciprocal
    out.copy_(t)  # float64 -> float32, rounded to nearest


def aggregate_tensors(states: Sequence[Mapping], samples: Sequence[int]) -> dict:
    """FedAvg of updates already in memory as float32 torch tensors (on a GPU, or the CPU).

    ``states`` are state dicts of one architecture on one device, ``samples``
    their positive FedAvg weights. Returns float32 tensors on that device
    holding exactly the values :func:`aggregate` writes for the same weights
    and samples (the same integer sums, the same two roundings), computed
    ``TORCH_CHUNK`` weights at a time so the scratch memory stays bounded.
    NaN/Inf is refused naming the input and tensor, as in files.
    """
    import torch

    if not states or len(states) != len(samples):
        raise UsageError("one sample count per state dict, and at least one", "pass both lists")
    names = sorted(states[0])
    first = states[0]
    for k, st in enumerate(states):
        if sorted(st) != names or any(
            st[n].shape != first[n].shape
            or st[n].dtype != torch.float32
            or st[n].device != first[n].device
            for n in names
        ):
            raise InputError(
                f"input {k}: tensors differ from input 0's in names, shapes, dtype or device",
                "aggregate float32 updates of one architecture on one device",
            )
    ns = [int(n) for n in samples]
    if min(ns) <= 0 or sum(ns) > MAX_TOTAL_SAMPLES:
        raise InputError(
            f"sample counts must be positive and sum to at most {MAX_TOTAL_SAMPLES}",
            "pass each update's din.samples",
        )
    dev = first[names[0]].device
    size = min(TORCH_CHUNK, max(first[n].numel() for n in names))
    t = torch.empty(size, dtype=torch.float64, device=dev)
    ti = torch.empty(size, dtype=torch.int64, device=dev)
    acc = torch.empty(size, dtype=torch.int64, device=dev)
    divisor = torch.full(
        (size,), float(sum(ns)) * float(2**SCALE_BITS), dtype=torch.float64, device=dev
    )
    out = {}
    for name in names:
        count = first[name].numel()
        flat = torch.empty(count, dtype=torch.float32, device=dev)
        finite = torch.ones((), dtype=torch.bool, device=dev)
        for a in range(0, count, size):
            m = min(size, count - a)
            for i, st in enumerate(states):
                w = st[name].reshape(-1)[a : a + m]
                _torch_fold(acc[:m], w, ns[i], t[:m], ti[:m], finite, first=i == 0)
            _torch_finish(acc[:m], divisor[:m], t[:m], flat[a : a + m])
        if not bool(finite):
            for i, st in enumerate(states):
                bad = ~torch.isfinite(st[name])
                if bool(bad.any()):
                    what = "NaN" if bool(torch.isnan(st[name]).any()) else "Inf"
                    raise InputError(
                        f"input {i}: tensor {name!r} contains {what}",
                        "the update is corrupt; leave it out of the aggregate",
                    )
        out[name] = flat.reshape(first[name].shape)
    return out


@contextlib.contextmanager
def _opened(inputs: list[_Input]):
    """Keep as many inputs open as the descriptor limit allows (the rest are opened per read)."""
    try:
        for inp in inputs[: _fd_budget(len(inputs))]:
            inp.fd = os.open(inp.path, os.O_RDONLY)
        yield
    finally:
        for inp in inputs:
            if inp.fd is not None:
                os.close(inp.fd)
                inp.fd = None


def aggregate_to(
    paths: Sequence[str | os.PathLike],
    out: BinaryIO,
    *,
    progress: Callable[[int], None] | None = None,
    threads: int | None = None,
    weights: Sequence[int] | None = None,
    metadata: Mapping[str, str] | None = None,
    device: str = "cpu",
) -> AggregateResult:
    """Aggregate model files ``paths`` into ``out`` (a binary file object), canonically.

    ``threads`` (default: :func:`default_threads`) changes the speed, never the bytes.
    ``weights`` (one positive integer per input) replaces the inputs' declared
    ``din.samples`` as their FedAvg weights (the admission rule's capped
    weights); ``metadata`` adds keys to the output's (``din.excluded``).
    ``device`` (``cpu``, ``cuda``, ``auto``; ``torch-cpu`` runs the CUDA
    path's torch kernel on the CPU) changes the speed, never the bytes.
    """
    plan = _plan(paths, weights, metadata)
    engine = _engine(device, plan)
    nthreads = max(1, int(threads if threads is not None else default_threads()))
    with _opened(plan.inputs):
        out.write(plan.header)
        if engine == "cpu":
            _write_blocks(plan, out, nthreads, progress)
        else:
            _write_chunks_torch(plan, out, engine, nthreads, progress)
    return plan.result


def _engine(device: str, plan: _Plan) -> str:
    """``cpu`` (numba/numpy kernels), or the torch device of the torch path.

    ``auto`` takes the GPU only for inputs of ``AUTO_CUDA_BYTES`` or more:
    below that, starting CUDA in a fresh process costs more than the GPU
    saves on data read from files (see ``benchmarks/aggregate.py --cli``).
    """
    if device == "torch-cpu":
        return "cpu-torch"
    from din_cli.ml.device import cuda_available, resolve

    if device == "auto":
        size = 4 * plan.result.params * len(plan.inputs)
        return "cuda" if size >= AUTO_CUDA_BYTES and cuda_available() else "cpu"
    return resolve(device)


def _write_chunks_torch(plan: _Plan, out: BinaryIO, engine: str, nthreads: int, progress) -> None:
    """The torch path: every chunk's exact int64 sums on ``engine`` (``cuda`` or ``cpu-torch``).

    Worker threads read each input's slice of the chunk into one of a few
    (pinned, on CUDA) host buffers, ahead of the device; the device copies
    it, quantises and weights it into the int64 accumulator, and after the
    last input finalises the chunk, which is copied back and written.
    """
    from concurrent.futures import ThreadPoolExecutor

    import torch

    cuda = engine == "cuda"
    dev = torch.device("cuda" if cuda else "cpu")
    chunks = [
        (seg_name, starts, a, min(TORCH_CHUNK, count - a))
        for seg_name, count, starts in plan.segments
        for a in range(0, count, TORCH_CHUNK)
    ]
    if not chunks:
        return
    size = max(m for *_, m in chunks)
    depth = max(1, nthreads) + 2  # host buffers in flight: one per reader, and the device's
    staging = [torch.empty(size, dtype=torch.float32, pin_memory=cuda) for _ in range(depth)]
    copied: list = [None] * depth  # CUDA event: the buffer's copy to the device is done
    w = torch.empty(size, dtype=torch.float32, device=dev)
    t = torch.empty(size, dtype=torch.float64, device=dev)
    ti = torch.empty(size, dtype=torch.int64, device=dev)
    acc = torch.empty(size, dtype=torch.int64, device=dev)
    res = torch.empty(size, dtype=torch.float32, device=dev)
    divisor = torch.full((size,), plan.divisor, dtype=torch.float64, device=dev)
    finite = torch.ones((), dtype=torch.bool, device=dev)
    host = torch.empty(size, dtype=torch.float32, pin_memory=cuda)
    inputs = plan.inputs
    jobs = [(c, i) for c in range(len(chunks)) for i in range(len(inputs))]

    def read(job: int, slot: int):
        c, i = jobs[job]
        _, starts, a, m = chunks[c]
        _read(inputs[i], starts[i] + 4 * a, staging[slot].numpy()[:m])

    pool = ThreadPoolExecutor(max(1, nthreads), thread_name_prefix="din-aggregate-read")
    pending: deque = deque()
    try:
        ahead = 0
        for job, (c, i) in enumerate(jobs):
            while ahead < len(jobs) and ahead < job + depth:
                slot = ahead % depth
                if copied[slot] is not None:
                    copied[slot].synchronize()  # its last copy has left the buffer
                pending.append(pool.submit(read, ahead, slot))
                ahead += 1
            pending.popleft().result()
            slot = job % depth
            seg_name, starts, a, m = chunks[c]
            wv, tv, iv, av = w[:m], t[:m], ti[:m], acc[:m]
            wv.copy_(staging[slot][:m], non_blocking=cuda)
            if cuda:
                copied[slot] = torch.cuda.Event()
                copied[slot].record()
            _torch_fold(av, wv, inputs[i].samples, tv, iv, finite, first=i == 0)
            if i == len(inputs) - 1:
                _torch_finish(av, divisor[:m], tv, res[:m])
                host[:m].copy_(res[:m])
                if not bool(finite):
                    _name_culprit(plan, seg_name, starts, a, m)
                out.write(memoryview(host.numpy()[:m]).cast("B"))
                if progress:
                    progress(m)
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def write_sums(
    sums,
    total: int,
    output: str | os.PathLike,
    *,
    base: str | os.PathLike,
    round_: int,
    task: str,
    metadata: Mapping[str, str] | None = None,
) -> AggregateResult:
    """Write the FedAvg whose exact fixed-point sums are known: ``sums`` (int64, every weight of
    ``base``'s architecture in name order) holds ``sum(rint(clip(w * 2^S)) * n)`` over inputs of
    ``total`` samples in all.

    The weights are the ones :func:`aggregate` writes for those inputs, byte
    for byte: the same int64-to-float64 rounding, the same true division by
    ``total * 2^S``, the same float64-to-float32 rounding. Secure aggregation
    (``protocol.secagg``) learns only these sums.
    """
    import numpy as np

    from din_cli.files import atomic_output
    from din_cli.ml import tensorfile, zoo

    arch = tensorfile.read_header(base).arch
    expected = zoo.param_shapes(arch)
    names = sorted(expected)
    sizes = [int(np.prod(expected[n], dtype=np.int64)) for n in names]
    sums = np.asarray(sums, dtype=np.int64).reshape(-1)
    if sums.size != sum(sizes) or not 0 < int(total) <= MAX_TOTAL_SAMPLES:
        raise InputError(
            f"{sums.size} sums for {sum(sizes)} weights, over {total} samples",
            "pass one sum per weight of the architecture and a positive sample total",
        )
    meta = tensorfile.make_metadata(
        arch=arch, kind="aggregate", samples=total, round=round_, task=task, encoding=ENCODING
    )
    meta.update(metadata or {})
    header = tensorfile.encode_header(meta, {n: ("F32", expected[n]) for n in names})
    divisor = float(total) * float(2**SCALE_BITS)
    with atomic_output(output) as f:
        f.write(header)
        for a in range(0, sums.size, BLOCK):
            block = np.divide(sums[a : a + BLOCK].astype(np.float64), divisor)
            f.write(block.astype("<f4").tobytes())
    return AggregateResult(
        arch=arch, samples=int(total), inputs=0, params=int(sums.size), round=round_, task=task
    )


def aggregate(
    paths: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    progress: Callable[[int], None] | None = None,
    threads: int | None = None,
    weights: Sequence[int] | None = None,
    metadata: Mapping[str, str] | None = None,
    device: str = "cpu",
) -> AggregateResult:
    """Aggregate model files ``paths`` into the file ``output`` (``-``: stdout), atomically.

    With ``-`` the result is assembled in a temporary file first, so a bad
    input found half-way leaves stdout empty. ``weights``, ``metadata`` and
    ``device`` as in :func:`aggregate_to`.
    """
    kw = {
        "progress": progress,
        "threads": threads,
        "weights": weights,
        "metadata": metadata,
        "device": device,
    }
    import shutil
    import sys
    import tempfile

    from din_cli.files import atomic_output, is_stdio

    if is_stdio(output):
        with tempfile.TemporaryFile() as tmp:
            result = aggregate_to(paths, tmp, **kw)
            tmp.seek(0)
            shutil.copyfileobj(tmp, sys.stdout.buffer, 1 << 20)
            sys.stdout.buffer.flush()
        return result
    with atomic_output(output) as f:
        return aggregate_to(paths, f, **kw)


class _Slot:
    """One worker's reusable, cache-sized buffers."""

    def __init__(self, multi: bool):
        import numpy as np

        self.acc = np.zeros(BLOCK, dtype=np.float64)
        self.iacc = np.zeros(BLOCK, dtype=np.int64) if multi else None
        self.tmp = np.empty(BLOCK, dtype=np.float64)
        self.res = np.empty(BLOCK, dtype=np.float64)
        self.out = np.empty(BLOCK, dtype="<f4")
        self.bufs = [np.empty(BLOCK, dtype="<f4") for _ in range(4)]
        self.buf = self.bufs[0]


def default_threads() -> int:
    """Worker threads: ``DIN_THREADS``, else the CPUs available (at most 8)."""
    env = os.environ.get("DIN_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise UsageError(
                f"DIN_THREADS={env!r} is not a number", "set it to a positive integer"
            ) from None
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def _is_canonical(header, names: list[str]) -> bool:
    pos = header.data_start
    for n in names:
        t = header.tensors[n]
        if t.start != pos:
            return False
        pos = t.end
    return True


def _fd_budget(n: int) -> int:
    """How many inputs may stay open at once (raising the soft limit when allowed)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = n + 64
        if soft != resource.RLIM_INFINITY and soft < want:
            new = want if hard == resource.RLIM_INFINITY else min(want, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        return n if soft == resource.RLIM_INFINITY else max(0, min(n, soft - 64))
    except (ImportError, ValueError, OSError):  # pragma: no cover - not POSIX
        return min(n, 200)


def _read(inp: _Input, offset: int, buf):
    """Read ``buf.size`` little-endian float32 values at ``offset`` into the reused ``buf``."""
    want = buf.nbytes
    fd = inp.fd if inp.fd is not None else os.open(inp.path, os.O_RDONLY)
    try:
        got = (
            os.preadv(fd, [buf], offset) if hasattr(os, "preadv") else _pread_into(fd, buf, offset)
        )
    finally:
        if inp.fd is None:
            os.close(fd)
    if got != want:
        raise InputError(
            f"{inp.path}: file shrank while being read", "do not modify inputs during aggregation"
        )
    return buf


def _pread_into(fd: int, buf, offset: int) -> int:  # pragma: no cover - platforms without preadv
    data = os.pread(fd, buf.nbytes, offset)
    memoryview(buf).cast("B")[: len(data)] = data
    return len(data)


def _name_culprit(plan: _Plan, seg_name: str, starts, a: int, m: int):
    """Raise InputError naming the first input and tensor with NaN/Inf in this block."""
    import numpy as np

    for i, inp in enumerate(plan.inputs):
        w = _read(inp, starts[i] + 4 * a, np.empty(m, dtype="<f4"))
        bad = ~np.isfinite(w)
        if bad.any():
            k = int(np.argmax(bad))
            tensor = seg_name
            if plan.canonical:
                pos = a + k
                for n in plan.names:
                    if pos < plan.sizes[n]:
                        tensor = n
                        break
                    pos -= plan.sizes[n]
            what = "NaN" if np.isnan(w[k]) else "Inf"
            raise InputError(
                f"{inp.path}: tensor {tensor!r} contains {what}",
                "the update is corrupt; leave it out of the aggregate",
            )
    raise InputError(
        "aggregation produced a non-finite value", "report this as a bug"
    )  # pragma: no cover


def reference_mean(paths: Sequence[str | os.PathLike]) -> dict:
    """Float64 FedAvg of the files (no quantisation): the yardstick for the error bound."""
    import numpy as np

    from din_cli.ml import models

    total = 0
    acc: dict = {}
    for p in paths:
        mf = models.read_model(p)
        n = mf.header.samples
        total += n
        for k, v in mf.weights.items():
            acc[k] = acc.get(k, 0.0) + v.astype(np.float64) * n
    return {k: v / total for k, v in acc.items()}
