"""CAR v1 (Content Addressable aRchive) reading and writing, streamed.

Layout: varint(len(header)) + dag-cbor ``{"roots": [CID…], "version": 1}``,
then sections ``varint(len(cid)+len(block)) + cid + block``. Every block read
is checked against its CID before it is handed on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import BinaryIO

from din_cli.errors import InputError, VerificationError
from din_cli.store.cid import CID, cid_from_bytes, encode_varint

MAX_SECTION = 8 << 20  # refuse sections above 8 MiB (IPFS blocks are at most 2-4 MiB)


# ------------------------------------------------------ minimal dag-cbor codec
def _cbor_head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes((major << 5 | n,))
    for add, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * width):
            return bytes((major << 5 | add,)) + n.to_bytes(width, "big")
    raise ValueError("integer too large")


def _cbor_text(s: str) -> bytes:
    b = s.encode()
    return _cbor_head(3, len(b)) + b


def encode_header(roots: list[CID]) -> bytes:
    """dag-cbor ``{"roots": [...], "version": 1}`` (keys in dag-cbor canonical order)."""
    out = _cbor_head(5, 2) + _cbor_text("roots") + _cbor_head(4, len(roots))
    for r in roots:
        link = b"\x00" + r.to_bytes()
        out += b"\xd8\x2a" + _cbor_head(2, len(link)) + link
    return out + _cbor_text("version") + b"\x01"


def _cbor_decode(buf: bytes, pos: int = 0, depth: int = 0):
    if depth > 16:
        raise ValueError("CBOR nested too deep")
    if pos >= len(buf):
        raise ValueError("truncated CBOR")
    ib = buf[pos]
    pos += 1
    major, add = ib >> 5, ib & 31
    if add < 24:
        n = add
    elif add in (24, 25, 26, 27):
        width = 1 << (add - 24)
        if pos + width > len(buf):
            raise ValueError("truncated CBOR")
        n = int.from_bytes(buf[pos : pos + width], "big")
        pos += width
    else:
        raise ValueError("indefinite-length CBOR is not dag-cbor")
    if major == 0:
        return n, pos
    if major == 1:
        return -1 - n, pos
    if major in (2, 3):
        if pos + n > len(buf):
            raise ValueError("truncated CBOR")
        raw = buf[pos : pos + n]
        return (raw if major == 2 else raw.decode()), pos + n
    if major == 4:
        items = []
        for _ in range(n):
            v, pos = _cbor_decode(buf, pos, depth + 1)
            items.append(v)
        return items, pos
    if major == 5:
        d = {}
        for _ in range(n):
            k, pos = _cbor_decode(buf, pos, depth + 1)
            v, pos = _cbor_decode(buf, pos, depth + 1)
            d[k] = v
        return d, pos
    if major == 6:
        v, pos = _cbor_decode(buf, pos, depth + 1)
        if n == 42:
            if not isinstance(v, bytes) or not v.startswith(b"\x00"):
                raise ValueError("bad CID link in CBOR")
            cid, end = cid_from_bytes(v, 1)
            if end != len(v):
                raise ValueError("trailing bytes in CID link")
            return cid, pos
        return v, pos
    if major == 7:
        simple = {20: False, 21: True, 22: None}
        if add in simple:
            return simple[add], pos
        raise ValueError("floats are not expected in a CAR header")
    raise ValueError("bad CBOR")


def decode_header(buf: bytes) -> list[CID]:
    value, end = _cbor_decode(buf, 0)
    if end != len(buf) or not isinstance(value, dict):
        raise ValueError("header is not a single CBOR map")
    if value.get("version") != 1:
        raise ValueError(f"CAR version {value.get('version')!r} (din reads CAR v1)")
    roots = value.get("roots")
    if not isinstance(roots, list) or not all(isinstance(r, CID) for r in roots):
        raise ValueError("header roots are not a list of CIDs")
    return roots


# ---------------------------------------------------------------- write / read
def write_car(out: BinaryIO, roots: list[CID], blocks: Iterable[tuple[CID, bytes]]) -> int:
    """Write a CAR v1 to ``out``; return the number of blocks written."""
    header = encode_header(roots)
    out.write(encode_varint(len(header)) + header)
    count = 0
    for cid, block in blocks:
        cb = cid.to_bytes()
        out.write(encode_varint(len(cb) + len(block)) + cb)
        out.write(block)
        count += 1
    return count


def _read_exact(f: BinaryIO, n: int, what: str, name: str) -> bytes:
    data = f.read(n)
    if data is None or len(data) != n:
        got = 0 if not data else len(data)
        raise InputError(
            f"{name}: CAR is truncated ({what}: wanted {n} bytes, got {got})",
            "export or download it again",
        )
    return data


def _read_varint(f: BinaryIO, name: str, *, eof_ok: bool) -> int | None:
    value = shift = 0
    for i in range(10):
        b = f.read(1)
        if not b:
            if i == 0 and eof_ok:
                return None
            raise InputError(
                f"{name}: CAR is truncated (inside a length prefix)", "export or download it again"
            )
        value |= (b[0] & 0x7F) << shift
        if b[0] < 0x80:
            return value
        shift += 7
    raise InputError(f"{name}: not a CAR file (bad length prefix)", "pass a CAR v1 file")


class CarReader:
    """Iterate a CAR v1's blocks, each verified against its CID.

    ``roots`` is available after construction; iterating yields (CID, block).
    Raises InputError for a truncated or malformed file and VerificationError
    for a block whose bytes do not match its CID.
    """

    def __init__(self, f: BinaryIO, name: str = "CAR"):
        self.f = f
        self.name = name
        n = _read_varint(f, name, eof_ok=True)
        if n is None:
            raise InputError(f"{name}: empty input, not a CAR file", "pass a CAR v1 file")
        if n == 0 or n > 1 << 20:
            raise InputError(f"{name}: not a CAR file (header length {n})", "pass a CAR v1 file")
        header = _read_exact(f, n, "header", name)
        try:
            self.roots = decode_header(header)
        except (ValueError, UnicodeDecodeError) as e:
            raise InputError(f"{name}: not a CAR v1 file ({e})", "pass a CAR v1 file") from None

    def __iter__(self) -> Iterator[tuple[CID, bytes]]:
        f, name = self.f, self.name
        while True:
            n = _read_varint(f, name, eof_ok=True)
            if n is None:
                return
            if n == 0 or n > MAX_SECTION:
                raise InputError(
                    f"{name}: bad CAR section length {n}", "the file is corrupt; export it again"
                )
            section = _read_exact(f, n, "block", name)
            try:
                cid, pos = cid_from_bytes(section, 0)
            except ValueError as e:
                raise InputError(
                    f"{name}: bad CID in CAR section ({e})", "the file is corrupt; export it again"
                ) from None
            block = section[pos:]
            if not cid.matches(block):
                raise VerificationError(
                    f"{name}: block {cid} does not match its CID (corrupt or tampered CAR)",
                    "get the CAR again from a source you trust",
                )
            yield cid, block
