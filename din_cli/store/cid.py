"""CIDs, multihashes, unsigned varints and the two multibases Kubo prints.

Written here rather than taken from py-cid/py-multibase: the subset IPFS
content addressing needs is small (sha2-256, identity; raw, dag-pb, dag-cbor;
base32 and base58btc text), and owning it keeps the importer's hot path free of
per-block object churn and keeps the store free of loosely maintained packages.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from din_cli.errors import InputError, UsageError, VerificationError

# multicodec codes
RAW = 0x55
DAG_PB = 0x70
DAG_CBOR = 0x71
SHA2_256 = 0x12
IDENTITY = 0x00

CODEC_NAMES = {RAW: "raw", DAG_PB: "dag-pb", DAG_CBOR: "dag-cbor"}
HASH_NAMES = {SHA2_256: "sha2-256", IDENTITY: "identity"}

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}


# --------------------------------------------------------------------- varint
def encode_varint(n: int) -> bytes:
    """Encode an unsigned LEB128 varint (multiformats, protobuf, CAR)."""
    if n < 0:
        raise ValueError("varint must be non-negative")
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def decode_varint(buf: bytes | memoryview, pos: int = 0) -> tuple[int, int]:
    """Decode a varint at ``pos``; return (value, next position). Raises ValueError."""
    value = 0
    shift = 0
    n = len(buf)
    while True:
        if pos >= n:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 9 bytes")


# ------------------------------------------------------------------ multibase
def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    n = 0
    for c in text:
        try:
            n = n * 58 + _B58_INDEX[c]
        except KeyError:
            raise ValueError(f"{c!r} is not a base58btc character") from None
    pad = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * pad + body


def b32encode(data: bytes) -> str:
    """RFC 4648 base32, lower case, no padding (multibase ``b``)."""
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def b32decode(text: str) -> bytes:
    text = text.upper()
    return base64.b32decode(text + "=" * (-len(text) % 8))


# ------------------------------------------------------------------------ CID
@dataclass(frozen=True, slots=True)
class CID:
    """A content identifier: version, codec and multihash (bytes)."""

    version: int
    codec: int
    multihash: bytes

    # -- construction
    @classmethod
    def v1(cls, codec: int, digest: bytes, hash_code: int = SHA2_256) -> CID:
        return cls(1, codec, encode_varint(hash_code) + encode_varint(len(digest)) + digest)

    @classmethod
    def v0(cls, digest: bytes) -> CID:
        return cls(0, DAG_PB, b"\x12\x20" + digest)

    # -- views
    @property
    def hash_code(self) -> int:
        return decode_varint(self.multihash, 0)[0]

    @property
    def digest(self) -> bytes:
        _, p = decode_varint(self.multihash, 0)
        size, p = decode_varint(self.multihash, p)
        return self.multihash[p : p + size]

    def to_bytes(self) -> bytes:
        """Binary form: the bare multihash for v0, version+codec+multihash for v1."""
        if self.version == 0:
            return self.multihash
        return encode_varint(1) + encode_varint(self.codec) + self.multihash

    def to_v1(self) -> CID:
        return self if self.version == 1 else CID(1, self.codec, self.multihash)

    def encode(self) -> str:
        """Text form: base58btc ``Qm…`` for v0, base32 ``b…`` for v1 (as Kubo prints)."""
        if self.version == 0:
            return b58encode(self.multihash)
        return "b" + b32encode(self.to_bytes())

    def __str__(self) -> str:
        return self.encode()

    def __repr__(self) -> str:
        return f"CID({self.encode()})"

    # -- verification
    def verify(self, data: bytes | memoryview) -> None:
        """Raise VerificationError unless ``data`` hashes to this CID."""
        if not self.matches(data):
            raise VerificationError(
                f"block {self} does not match its CID (corrupted or tampered)",
                "delete it and fetch or import the content again",
            )

    def matches(self, data: bytes | memoryview) -> bool:
        code, p = decode_varint(self.multihash, 0)
        size, p = decode_varint(self.multihash, p)
        digest = self.multihash[p:]
        if code == SHA2_256:
            return size == 32 and hashlib.sha256(data).digest() == digest
        if code == IDENTITY:
            return bytes(data) == digest
        raise InputError(
            f"CID {self} uses hash function 0x{code:x}, which din does not support",
            "use sha2-256 CIDs (the IPFS default)",
        )


def sha256_cid(data: bytes | memoryview, *, version: int = 1, codec: int = RAW) -> CID:
    digest = hashlib.sha256(data).digest()
    return CID.v0(digest) if version == 0 else CID.v1(codec, digest)


def _check_multihash(mh: bytes) -> None:
    code, p = decode_varint(mh, 0)
    size, p = decode_varint(mh, p)
    if len(mh) - p != size:
        raise ValueError("multihash length does not match its digest")


def cid_from_bytes(buf: bytes | memoryview, pos: int = 0) -> tuple[CID, int]:
    """Read a binary CID starting at ``pos``; return (CID, next position). Raises ValueError."""
    if len(buf) - pos >= 2 and buf[pos] == 0x12 and buf[pos + 1] == 0x20:
        end = pos + 34
        if end > len(buf):
            raise ValueError("truncated CIDv0")
        return CID(0, DAG_PB, bytes(buf[pos:end])), end
    version, p = decode_varint(buf, pos)
    if version != 1:
        raise ValueError(f"unsupported CID version {version}")
    codec, p = decode_varint(buf, p)
    start = p
    _, p = decode_varint(buf, p)
    size, p = decode_varint(buf, p)
    end = p + size
    if end > len(buf):
        raise ValueError("truncated multihash")
    return CID(1, codec, bytes(buf[start:end])), end


def parse_cid(text: str | CID) -> CID:
    """Parse a CID's text (``Qm…``, ``b…``, ``B…``, ``z…``, ``f…``); raise UsageError naming it."""
    if isinstance(text, CID):
        return text
    s = str(text).strip()
    try:
        if len(s) == 46 and s.startswith("Qm"):
            mh = b58decode(s)
            if len(mh) != 34 or mh[:2] != b"\x12\x20":
                raise ValueError("not a sha2-256 multihash")
            return CID(0, DAG_PB, mh)
        if not s:
            raise ValueError("empty")
        prefix, body = s[0], s[1:]
        if prefix in "bB":
            raw = b32decode(body)
        elif prefix == "z":
            raw = b58decode(body)
        elif prefix in "fF":
            raw = bytes.fromhex(body)
        else:
            raise ValueError(f"unknown multibase prefix {prefix!r}")
        cid, end = cid_from_bytes(raw, 0)
        if cid.version == 0 or end != len(raw):
            raise ValueError("trailing bytes")
        _check_multihash(cid.multihash)
        return cid
    except (ValueError, TypeError) as e:
        shown = s if len(s) <= 80 else s[:77] + "..."
        raise UsageError(
            f"{shown!r} is not a valid CID ({e})",
            "pass a CID as printed by `din ipfs add` (Qm... or bafy...)",
        ) from None
