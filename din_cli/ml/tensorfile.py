"""Canonical safetensors files: the same tensors and metadata always give the same bytes.

Layout (the safetensors format, written by hand so every byte is pinned):

- 8 bytes: little-endian u64, the length of the JSON header;
- the JSON header: ``{"__metadata__": {...}, "<name>": {"dtype", "shape",
  "data_offsets"}, ...}`` with keys sorted at every level, no spaces, ASCII
  only, padded with spaces to a multiple of 8 bytes;
- the data: each tensor's little-endian bytes, in sorted name order, back to
  back.

Metadata schema (all values are strings; every key is always present):

===============  =========================================================
``din.arch``     architecture string, e.g. ``mlp:64-128-10``
``din.encoding`` ``f32`` (plain float32 weights) or the aggregation
                 encoding that produced them, e.g. ``fixedpoint-s20-c1024``
``din.kind``     ``model`` | ``update`` | ``aggregate``
``din.round``    training round (decimal integer, ``0`` for genesis)
``din.samples``  training samples behind the weights (decimal integer)
``din.task``     task id, or empty
===============  =========================================================

Aggregates may carry two more keys, each present only when it applies:

===============  =========================================================
``din.excluded`` compact JSON list, sorted by index, of the inputs left
                 out by the admission rule (``din_cli.protocol.admission``):
                 ``[{"cid":"bafk...","index":2,"reason":"non-finite"}]``
``din.rule``     compact JSON object naming a robust aggregation rule and
                 its parameters (``din_cli.ml.robust``), absent for the
                 weighted mean: ``{"k":1,"rule":"trimmed-mean","trim":"0.1"}``
===============  =========================================================

Reading never trusts the file: the header must parse, offsets must be
contiguous and inside the file, and :func:`check_model` compares names,
shapes, dtype and (optionally) finiteness with what the architecture expects,
failing on the first mismatch with a one-line :class:`~din_cli.errors.InputError`.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from din_cli.errors import InputError, NotFoundError

KINDS = ("model", "update", "aggregate")
META_KEYS = ("din.arch", "din.encoding", "din.kind", "din.round", "din.samples", "din.task")
EXCLUDED_KEY = "din.excluded"  # aggregates only, when inputs were left out
RULE_KEY = "din.rule"  # aggregates only, made by a rule other than the weighted mean
SECAGG_KEY = "din.secagg"  # secure aggregation: a masked update's shares and checks, an aggregate's summed inputs
MAX_HEADER = 100 * 1024 * 1024

# numpy dtype name -> safetensors dtype
_DTYPES = {
    "float32": "F32",
    "float64": "F64",
    "float16": "F16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "uint64": "U64",
    "bool": "BOOL",
}
_ITEMSIZE = {
    "F32": 4,
    "F64": 8,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "U64": 8,
    "BOOL": 1,
}
_NP_OF = {v: k for k, v in _DTYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives in a safetensors file."""

    name: str
    dtype: str  # safetensors dtype, e.g. "F32"
    shape: tuple[int, ...]
    start: int  # absolute file offset of the first byte
    end: int  # absolute file offset past the last byte

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class Header:
    """A parsed safetensors header: metadata and tensor locations."""

    path: str
    metadata: dict[str, str]
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    data_start: int = 0
    file_size: int = 0

    @property
    def kind(self) -> str:
        return self.metadata.get("din.kind", "")

    @property
    def arch(self) -> str:
        return self.metadata.get("din.arch", "")

    @property
    def samples(self) -> int:
        return _int_meta(self.path, self.metadata, "din.samples", 0)

    @property
    def round(self) -> int:
        return _int_meta(self.path, self.metadata, "din.round", 0)

    @property
    def task(self) -> str:
        return self.metadata.get("din.task", "")

    @property
    def params(self) -> int:
        return sum(t.numel for t in self.tensors.values())


def _int_meta(path: str, meta: Mapping[str, str], key: str, default: int) -> int:
    value = meta.get(key)
    if value in (None, ""):
        return default
    try:
        n = int(value)
    except ValueError:
        raise InputError(
            f"{path}: metadata {key}={value!r} is not an integer", "rewrite the file with din"
        ) from None
    if n < 0:
        raise InputError(f"{path}: metadata {key}={n} is negative", "rewrite the file with din")
    return n


def make_metadata(
    *, arch: str, kind: str, samples: int = 0, round: int = 0, task: str = "", encoding: str = "f32"
) -> dict[str, str]:
    """The fixed din metadata block (every key present, all strings)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    return {
        "din.arch": str(arch),
        "din.encoding": str(encoding),
        "din.kind": kind,
        "din.round": str(int(round)),
        "din.samples": str(int(samples)),
        "din.task": str(task),
    }


def encode_header(
    metadata: Mapping[str, str], specs: Mapping[str, tuple[str, tuple[int, ...]]]
) -> bytes:
    """The canonical 8-byte length + padded JSON header for tensors ``specs`` (name -> dtype, shape)."""
    doc: dict[str, Any] = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}}
    offset = 0
    for name in sorted(specs):
        dtype, shape = specs[name]
        n = _ITEMSIZE[dtype]
        for d in shape:
            n *= int(d)
        doc[name] = {
            "data_offsets": [offset, offset + n],
            "dtype": dtype,
            "shape": [int(d) for d in shape],
        }
        offset += n
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def iter_canonical(tensors: Mapping[str, Any], metadata: Mapping[str, str]):
    """Yield the canonical file's bytes in pieces (header, then each tensor in name order)."""
    import numpy as np

    arrays = {}
    specs = {}
    for name, value in tensors.items():
        a = np.asarray(value)
        if a.dtype.name not in _DTYPES:
            raise InputError(f"tensor {name}: dtype {a.dtype} is not supported", "use float32")
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        arrays[name] = a
        specs[name] = (_DTYPES[a.dtype.name], tuple(a.shape))
    yield encode_header(metadata, specs)
    for name in sorted(arrays):
        yield arrays[name].reshape(-1).view(np.uint8).data if arrays[name].size else b""


def dumps(tensors: Mapping[str, Any], metadata: Mapping[str, str]) -> bytes:
    """Serialise ``tensors`` (name -> numpy array) canonically."""
    return b"".join(bytes(p) for p in iter_canonical(tensors, metadata))


def write(path: str | os.PathLike, tensors: Mapping[str, Any], metadata: Mapping[str, str]) -> None:
    """Write a canonical safetensors file atomically (``-`` is stdout)."""
    from din_cli.files import atomic_output

    with atomic_output(path) as f:
        for piece in iter_canonical(tensors, metadata):
            f.write(piece)


def read_header(path: str | os.PathLike) -> Header:
    """Parse and validate the header of the safetensors file at ``path``."""
    p = str(path)
    try:
        size = os.path.getsize(p)
        with open(p, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise InputError(
                    f"{p}: not a safetensors file (too short)", "pass a model file written by din"
                )
            (n,) = struct.unpack("<Q", head)
            if n == 0 or n > MAX_HEADER or 8 + n > size:
                raise InputError(
                    f"{p}: not a safetensors file (bad header length)",
                    "pass a model file written by din",
                )
            raw = f.read(n)
    except FileNotFoundError:
        raise NotFoundError(f"{p}: no such file", "check the path") from None
    except IsADirectoryError:
        raise InputError(
            f"{p}: is a folder, not a model file", "name a .safetensors file"
        ) from None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (
        UnicodeDecodeError,
        json.JSONDecodeError,
        RecursionError,
    ):  # nesting too deep is not JSON either
        raise InputError(
            f"{p}: not a safetensors file (header is not JSON)", "pass a model file written by din"
        ) from None
    if not isinstance(doc, dict):
        raise InputError(
            f"{p}: not a safetensors file (header is not an object)",
            "pass a model file written by din",
        )
    meta = doc.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise InputError(
            f"{p}: safetensors metadata must map strings to strings", "rewrite the file with din"
        )
    header = Header(path=p, metadata=meta, data_start=8 + n, file_size=size)
    spans = []
    for name, info in doc.items():
        try:
            dtype = info["dtype"]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except (TypeError, KeyError, ValueError):
            raise InputError(
                f"{p}: tensor {name!r} has a malformed header entry", "rewrite the file with din"
            ) from None
        if dtype not in _ITEMSIZE:
            raise InputError(f"{p}: tensor {name!r} has unknown dtype {dtype}", "use float32")
        t = TensorInfo(name, dtype, shape, header.data_start + begin, header.data_start + end)
        if (
            begin < 0
            or end < begin
            or t.end > size
            or end - begin != t.numel * _ITEMSIZE[dtype]
            or min(shape, default=1) < 0
        ):
            raise InputError(
                f"{p}: tensor {name!r} has inconsistent offsets or shape (truncated file?)",
                "fetch or write the file again",
            )
        header.tensors[name] = t
        spans.append((begin, end))
    spans.sort()
    pos = 0
    for begin, end in spans:
        if begin != pos:
            raise InputError(f"{p}: tensors overlap or leave gaps", "rewrite the file with din")
        pos = end
    if header.data_start + pos != size:
        raise InputError(
            f"{p}: file size does not match its header (truncated or padded)",
            "fetch or write the file again",
        )
    return header


def is_canonical(header: Header) -> bool:
    """True when the file's header is byte for byte what :func:`encode_header` writes.

    That is: keys sorted, no spaces, ASCII, padded to 8 bytes, tensors in
    sorted name order and back to back, and the metadata exactly din's schema
    (:data:`META_KEYS`, plus :data:`EXCLUDED_KEY`, :data:`RULE_KEY` and :data:`SECAGG_KEY` on
    an aggregate, :data:`SECAGG_KEY` on a masked update).
    """
    keys = set(header.metadata)
    schema = set(META_KEYS)
    if (
        keys != schema
        and not (
            header.kind == "aggregate"
            and schema < keys <= schema | {EXCLUDED_KEY, RULE_KEY, SECAGG_KEY}
        )
        and not (header.kind == "update" and keys == schema | {SECAGG_KEY})
    ):
        return False
    specs = {n: (t.dtype, t.shape) for n, t in header.tensors.items()}
    try:
        want = encode_header(header.metadata, specs)
    except (KeyError, ValueError):
        return False
    if len(want) != header.data_start:
        return False
    with open(header.path, "rb") as f:
        return f.read(len(want)) == want


def load_arrays(header: Header, *, names: list[str] | None = None) -> dict:
    """Read tensors as numpy arrays (copies, native byte order)."""
    import numpy as np

    out = {}
    with open(header.path, "rb") as f:
        for name in names if names is not None else sorted(header.tensors):
            t = header.tensors[name]
            f.seek(t.start)
            buf = f.read(t.end - t.start)
            if t.dtype == "BF16":
                raise InputError(
                    f"{header.path}: tensor {name}: bfloat16 is not supported",
                    "save float32 weights",
                )
            a = np.frombuffer(buf, dtype=np.dtype(_NP_OF[t.dtype]).newbyteorder("<")).reshape(
                t.shape
            )
            out[name] = a.astype(a.dtype.newbyteorder("="), copy=True)
    return out


def check_model(
    header: Header,
    expected: Mapping[str, tuple[int, ...]],
    *,
    arch: str | None = None,
    kinds: tuple[str, ...] = KINDS,
) -> None:
    """Fail on the first difference between ``header`` and the expected float32 parameters."""
    p = header.path
    if header.kind not in kinds:
        found = header.kind or "no din.kind"
        raise InputError(
            f"{p}: din.kind is {found!r}, expected one of {', '.join(kinds)}",
            "pass a file written by `din model init`, `din train` or `din aggregate`",
        )
    if arch is not None and header.arch != arch:
        raise InputError(
            f"{p}: architecture {header.arch!r} does not match {arch!r}",
            "use files from the same task",
        )
    missing = sorted(set(expected) - set(header.tensors))
    if missing:
        raise InputError(
            f"{p}: tensor {missing[0]!r} is missing for {header.arch}",
            "the file does not hold this architecture's weights",
        )
    extra = sorted(set(header.tensors) - set(expected))
    if extra:
        raise InputError(
            f"{p}: unexpected tensor {extra[0]!r} for {header.arch}",
            "the file does not hold this architecture's weights",
        )
    for name in sorted(expected):
        t = header.tensors[name]
        if tuple(t.shape) != tuple(expected[name]):
            raise InputError(
                f"{p}: tensor {name!r} has shape {list(t.shape)}, {header.arch} needs {list(expected[name])}",
                "the file holds another architecture",
            )
        if t.dtype != "F32":
            raise InputError(
                f"{p}: tensor {name!r} is {t.dtype}, expected F32", "save float32 weights"
            )
    header.samples  # noqa: B018 - validates din.samples / din.round
    header.round  # noqa: B018


def check_finite(header: Header, arrays: Mapping[str, Any]) -> None:
    """Fail if any weight is NaN or infinite, naming the first such tensor."""
    import numpy as np

    for name in sorted(arrays):
        a = arrays[name]
        if not np.isfinite(a).all():
            bad = "NaN" if np.isnan(a).any() else "Inf"
            raise InputError(
                f"{header.path}: tensor {name!r} contains {bad}",
                "the update is corrupt; discard it",
            )
