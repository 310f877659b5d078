"""The admission rule: which updates an aggregate is made of, and with what weight.

Every honest validator applies this one rule to its subgroup's updates, taken
in submission order, so all of them leave out the same updates and reach the
same aggregate CID. A bad update is *excluded*, never fatal: the aggregate is
made from the admitted ones, and its metadata records the rest
(``din.excluded``). When every update is excluded the subgroup's result is
the round's starting model, as for a subgroup that received none.

The rule
--------
Inputs are checked one by one in position order; the first check an input
fails is its reason (the codes below are what ``din.excluded``,
``din verify`` and ``din round status`` show):

``unavailable``     the content store has no such CID;
``unparseable``     it is not a safetensors file (``tensorfile.read_header``);
``not-canonical``   its header is not byte for byte din's canonical encoding
                    (sorted keys, tensors in name order and back to back,
                    exactly din's metadata keys, ``din.round`` a plain
                    decimal);
``kind``            ``din.kind`` is not ``update`` (in a round; a plain
                    ``din aggregate`` without ``--base`` also takes
                    ``aggregate``);
``architecture``    ``din.arch``, tensor names, shapes or dtypes (float32)
                    differ from the starting model's (without a starting
                    model: from the first input that got this far);
``samples``         ``din.samples`` is not a plain decimal integer >= 1;
``non-finite``      a weight is NaN or infinite;
``out-of-range``    a weight is outside ``[-1024, 1024]``, the clip bound of
                    the fixed-point encoding aggregation uses;
``unchanged``       its weights are the starting model's (it trained
                    nothing, so it earns and moves nothing);
``duplicate``       its weights equal an earlier admitted input's (a second
                    copy of a CID, or a copy relabelled; the first by
                    position stays);
``over-total``      admitting it would take the admitted weights past
                    2**32, the exact range of the fixed-point sums.

An admitted input's FedAvg weight is ``min(din.samples, maxSamples)``, the cap
the task fixed at publish time: claiming 2**31 samples buys no more weight
than an honest participant at the cap has.

Example:
    verdicts = admit(paths, base="start.safetensors", max_samples=2**16, ids=cids)
    result = aggregate(paths, "out.safetensors", base="start.safetensors", max_samples=2**16)
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from din_cli.errors import DinError, InputError, UsageError

REASONS = {
    "unavailable": "the content store has no such CID",
    "not-sealed": "a plaintext update in a sealed task",
    "bad-seal": "sealed wrongly: not for this participant, round or subgroup, or a wrapped key is not its key",
    "bad-secagg": "not a valid masked update of this participant, round and subgroup (secagg)",
    "unrecoverable": "the subgroup's masked sum could not be opened: too few valid shares were revealed (secagg)",
    "unparseable": "not a safetensors file",
    "not-canonical": "its header is not din's canonical encoding",
    "kind": "not an update",
    "architecture": "not the task's architecture",
    "samples": "din.samples is not an integer >= 1",
    "non-finite": "a weight is NaN or infinite",
    "out-of-range": "a weight is outside [-1024, 1024]",
    "unchanged": "the starting model's weights, unchanged",
    "duplicate": "a copy of an earlier update's weights",
    "over-total": "the admitted samples would exceed 2**32",
}
ROUND_KINDS = ("update",)  # what a round admits
PLAIN_KINDS = ("update", "aggregate")  # `din aggregate` without --base: aggregates aggregate again
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_CHUNK = 1 << 20  # weights per read while scanning


@dataclass(frozen=True)
class Verdict:
    """One input's fate: admitted with ``weight``, or excluded for ``reason`` (a REASONS code)."""

    index: int
    cid: str  # the input's CID (as given, or computed from its bytes for an excluded file)
    admitted: bool
    weight: int  # the FedAvg weight; 0 when excluded
    reason: str = ""
    detail: str = ""  # for people: which tensor, which value

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """``#2 bafk... non-finite: tensor 'layers.0.weight' holds NaN``."""
        why = self.detail or REASONS.get(self.reason, self.reason)
        return f"#{self.index} {self.cid} {self.reason}: {why}"


@dataclass(frozen=True)
class Admission:
    """The rule's verdicts on a list of inputs, in input order."""

    verdicts: list[Verdict]

    @property
    def admitted(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.admitted]

    @property
    def excluded(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.admitted]

    def excluded_json(self) -> str:
        """The canonical ``din.excluded`` value: compact JSON, sorted by index ("" when none)."""
        rows = [{"cid": v.cid, "index": v.index, "reason": v.reason} for v in self.excluded]
        if not rows:
            return ""
        return json.dumps(rows, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    def summary(self) -> str:
        """One line for people: what was left out and why."""
        bad = self.excluded
        if not bad:
            return f"all {len(self.verdicts)} inputs admitted"
        return f"excluded {len(bad)} of {len(self.verdicts)}: " + "; ".join(
            v.describe() for v in bad
        )


@dataclass(frozen=True)
class _Reference:
    arch: str
    shapes: dict  # name -> shape, float32
    header: object = None  # the starting model's (None without one)
    fingerprint: int = 0


def _shapes(arch: str) -> dict | None:
    from din_cli.ml import zoo

    try:
        return dict(zoo.param_shapes(arch))
    except DinError:
        return None


def _fits(header, ref: _Reference) -> bool:
    if header.arch != ref.arch or set(header.tensors) != set(ref.shapes):
        return False
    return all(
        t.dtype == "F32" and tuple(t.shape) == tuple(ref.shapes[n])
        for n, t in header.tensors.items()
    )


def _weights(header, buf):
    """Yield ``(tensor name, float32 chunk)`` over the weights in name order, read into ``buf``."""
    with open(header.path, "rb", buffering=0) as f:
        for name in sorted(header.tensors):
            t = header.tensors[name]
            f.seek(t.start)
            left = t.numel
            while left:
                w = buf[: min(left, buf.size)]
                if f.readinto(memoryview(w).cast("B")) != w.nbytes:
                    raise InputError(
                        f"{header.path}: file shrank while being read", "do not modify inputs"
                    )
                left -= w.size
                yield name, w


def _scan(header) -> tuple[int, str, str]:
    """``(fingerprint of the weights, reason or "", detail)``: one pass over the data.

    The fingerprint (sum of the weights' 32-bit words) only picks candidates
    for :func:`_same_weights`, which decides; a collision costs a comparison,
    never a wrong verdict.
    """
    import numpy as np

    fingerprint = 0
    out_of_range = ""
    buf = np.empty(_CHUNK, dtype="<f4")
    try:
        for name, w in _weights(header, buf):
            fingerprint += int(w.view("<u4").sum(dtype=np.uint64))
            lo, hi = w.min(), w.max()  # NaN propagates to both
            if lo >= -1024.0 and hi <= 1024.0:
                continue
            bad = ~np.isfinite(w)
            if bad.any():
                what = "NaN" if np.isnan(w[bad]).any() else "Inf"
                return 0, "non-finite", f"tensor {name!r} holds {what}"
            if not out_of_range:
                big = float(w[np.argmax(np.abs(w) > 1024.0)])
                out_of_range = f"tensor {name!r} holds {big:g}"
    except InputError as e:
        return 0, "unparseable", e.message
    if out_of_range:
        return 0, "out-of-range", out_of_range
    return fingerprint, "", ""


def _same_weights(a, b) -> bool:
    """True when headers ``a`` and ``b`` (same architecture) hold bit-identical weights."""
    import numpy as np

    if sorted(a.tensors) != sorted(b.tensors):
        return False
    for (_, x), (_, y) in zip(
        _weights(a, np.empty(_CHUNK, dtype="<f4")),
        _weights(b, np.empty(_CHUNK, dtype="<f4")),
        strict=True,
    ):
        if x.view("<u4").tobytes() != y.view("<u4").tobytes():
            return False
    return True


def _reference(base) -> _Reference:
    """The starting model as the rule's yardstick; InputError when it is not a din model itself."""
    from din_cli.ml import tensorfile

    h = tensorfile.read_header(base)
    shapes = _shapes(h.arch) if h.arch else None
    ref = _Reference(h.arch, shapes or {})
    if shapes is None or not _fits(h, ref):
        raise InputError(
            f"{h.path}: the starting model is not a din model of a known architecture",
            "give the round's global model as --base",
        )
    fingerprint, reason, detail = _scan(h)
    if reason:
        raise InputError(
            f"{h.path}: the starting model is damaged ({detail or reason})",
            "give the round's global model as --base",
        )
    return _Reference(h.arch, shapes, h, fingerprint)


def file_cid(path) -> str:
    """The CIDv1 ``din ipfs add`` gives ``path`` (names an excluded local file canonically)."""
    from din_cli.store.unixfs import StreamHasher

    hasher = StreamHasher(1)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            hasher.write(chunk)
    return str(hasher.finish())


def admit(
    paths: Sequence[str | os.PathLike | None],
    *,
    base: str | os.PathLike | None = None,
    max_samples: int | None = None,
    kinds: tuple[str, ...] | None = None,
    ids: Sequence[str | None] | None = None,
) -> Admission:
    """Apply the rule to ``paths`` (None: the CID was not in the store; a ``sealing.Refused``:
    a sealed update every reader refuses, with its reason), in order.

    ``base``: the round's starting model (architecture yardstick, and the
    ``unchanged`` check); ``max_samples``: the task's weight cap (None: no
    cap); ``kinds``: the admitted ``din.kind`` values (default: updates only
    with a base, updates and aggregates without); ``ids``: each input's CID
    text as the chain has it (default: computed from the bytes of excluded
    inputs).
    """
    from din_cli.ml import tensorfile
    from din_cli.ml.aggregate import MAX_TOTAL_SAMPLES

    if max_samples is not None and int(max_samples) < 1:
        raise ValueError("max_samples must be at least 1")
    if kinds is None:
        kinds = ROUND_KINDS if base is not None else PLAIN_KINDS
    ids = list(ids) if ids is not None else [None] * len(paths)
    if len(ids) != len(paths):
        raise ValueError("one id per input")
    ref = _reference(base) if base is not None else None
    seen: dict[int, list] = {}  # fingerprint -> [(index, header)] of admitted inputs
    total = 0
    verdicts: list[Verdict] = []

    def out(i: int, reason: str, detail: str = "") -> None:
        cid = ids[i] or (file_cid(paths[i]) if paths[i] is not None else "")
        verdicts.append(Verdict(i, cid, False, 0, reason, detail))

    for i, path in enumerate(paths):
        if path is None:
            out(i, "unavailable")
            continue
        if hasattr(path, "reason"):  # refused before it was read (protocol.sealing.Refused)
            out(i, path.reason, path.detail)
            continue
        try:
            h = tensorfile.read_header(path)
        except DinError as e:
            out(i, "unparseable", e.message.removeprefix(f"{path}: "))
            continue
        if not tensorfile.is_canonical(h) or not _DECIMAL.fullmatch(h.metadata["din.round"]):
            out(i, "not-canonical")
            continue
        if h.kind not in kinds:
            if ref is not None and ref.header is not None and _same_file(path, base):
                out(i, "unchanged", "the starting model itself")
                continue
            out(i, "kind", f"din.kind is {h.kind!r}, the round takes {' or '.join(kinds)}")
            continue
        if ref is None:  # no starting model: the first input that got here sets the architecture
            shapes = _shapes(h.arch)
            if shapes is None:
                out(i, "architecture", f"unknown architecture {h.arch!r}")
                continue
            ref = _Reference(h.arch, shapes)
        if not _fits(h, ref):
            out(i, "architecture", f"{h.arch!r} or its tensors differ from {ref.arch!r}")
            continue
        declared = h.metadata["din.samples"]
        if not _DECIMAL.fullmatch(declared) or declared == "0":
            out(i, "samples", f"din.samples is {declared[:40]!r}")
            continue
        fingerprint, reason, detail = _scan(h)
        if reason:
            out(i, reason, detail)
            continue
        if (
            ref.header is not None
            and fingerprint == ref.fingerprint
            and _same_weights(h, ref.header)
        ):
            out(i, "unchanged")
            continue
        first = next((j for j, hj in seen.get(fingerprint, []) if _same_weights(h, hj)), None)
        if first is not None:
            out(i, "duplicate", f"the weights of #{first}")
            continue
        weight = int(declared) if max_samples is None else min(int(declared), int(max_samples))
        if total + weight > MAX_TOTAL_SAMPLES:
            out(i, "over-total", f"{total} + {weight} > {MAX_TOTAL_SAMPLES}")
            continue
        seen.setdefault(fingerprint, []).append((i, h))
        total += weight
        verdicts.append(Verdict(i, ids[i] or "", True, weight))
    return Admission(verdicts)


def _same_file(a, b) -> bool:
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


@dataclass(frozen=True)
class Outcome:
    """What :func:`aggregate` made: the admission, and whether the output is the starting model."""

    admission: Admission
    samples: int  # the output's din.samples
    unchanged: bool  # every input was excluded: the output is the starting model
    clipped: tuple = ()  # norm-bounded rule: (input index, L2 distance from the base) of each clipped input


def aggregate(
    paths: Sequence[str | os.PathLike | None],
    output: str | os.PathLike,
    *,
    base: str | os.PathLike | None = None,
    max_samples: int | None = None,
    kinds: tuple[str, ...] | None = None,
    ids: Sequence[str | None] | None = None,
    progress=None,
    threads: int | None = None,
    rule=None,
    device: str = "cpu",
) -> Outcome:
    """Admit ``paths`` by the rule, then FedAvg the admitted ones into ``output`` (``-``: stdout).

    ``rule`` (an ``ml.robust.Rule``; default the weighted mean) aggregates the
    admitted inputs another way. The output records the excluded inputs in ``din.excluded``. When every
    input is excluded the output is a copy of ``base`` (the round's starting
    model); without a base that is an InputError naming each reason, and
    nothing is written. ``device`` runs the weighted mean on a GPU (same
    bytes); the other rules run on the CPU.
    """
    from din_cli.ml import aggregate as agg

    if not paths:
        raise UsageError(
            "no inputs to aggregate", "pass update files or CIDs, or pipe them one per line"
        )
    admission = admit(paths, base=base, max_samples=max_samples, kinds=kinds, ids=ids)
    kept = admission.admitted
    if not kept:
        if base is None:
            raise InputError(
                f"nothing to aggregate: {admission.summary()}",
                "pass updates that pass the admission rule (see `din aggregate --help`)",
            )
        _copy(base, output)
        from din_cli.ml import tensorfile

        return Outcome(admission, tensorfile.read_header(base).samples, True)
    excluded = admission.excluded_json()
    kw = {
        "weights": [v.weight for v in kept],
        "metadata": {"din.excluded": excluded} if excluded else None,
        "progress": progress,
        "threads": threads,
    }
    inputs = [paths[v.index] for v in kept]
    if rule is None or rule.name == "mean":
        return Outcome(admission, agg.aggregate(inputs, output, device=device, **kw).samples, False)
    from din_cli.ml import robust

    result = robust.aggregate(inputs, output, rule=rule, base=base, **kw)
    clipped = tuple((kept[i].index, norm) for i, norm in result.clipped)
    return Outcome(admission, result.samples, False, clipped)


def _copy(src, output) -> None:
    import sys

    from din_cli.files import atomic_output, is_stdio

    with open(src, "rb") as f:
        if is_stdio(output):
            shutil.copyfileobj(f, sys.stdout.buffer, 1 << 20)
            sys.stdout.buffer.flush()
            return
        with atomic_output(output) as o:
            shutil.copyfileobj(f, o, 1 << 20)


def recorded_exclusions(path: str | os.PathLike) -> list[dict]:
    """The ``din.excluded`` list an aggregate file carries (``[]`` when none or unreadable)."""
    from din_cli.ml import tensorfile

    try:
        raw = tensorfile.read_header(path).metadata.get("din.excluded", "")
        rows = json.loads(raw) if raw else []
    except (DinError, ValueError):
        return []
    return rows if isinstance(rows, list) else []
