"""dag-pb nodes (PBNode/PBLink) and UnixFS ``Data`` messages, encoded as Kubo does.

Field order matches go-merkledag's canonical form: a PBNode's Links (field 2)
come before its Data (field 1); a link carries Hash, an empty Name and Tsize.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from din_cli.store.cid import CID, cid_from_bytes, decode_varint, encode_varint

# UnixFS Data.Type
T_RAW, T_DIRECTORY, T_FILE, T_METADATA, T_SYMLINK, T_HAMT = 0, 1, 2, 3, 4, 5
TYPE_NAMES = {0: "raw", 1: "directory", 2: "file", 3: "metadata", 4: "symlink", 5: "hamt-shard"}


@dataclass(slots=True)
class Link:
    cid: CID
    name: str | None
    tsize: int | None


@dataclass(slots=True)
class UnixFSData:
    type: int
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: list[int] = field(default_factory=list)


def _len_field(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + encode_varint(len(payload)) + payload


def encode_link(cid_bytes: bytes, tsize: int, name: str = "") -> bytes:
    body = (
        _len_field(0x0A, cid_bytes)
        + _len_field(0x12, name.encode())
        + b"\x18"
        + encode_varint(tsize)
    )
    return _len_field(0x12, body)


def encode_node(encoded_links: list[bytes], data: bytes | None) -> bytes:
    """A PBNode from links already encoded by :func:`encode_link` and optional Data."""
    out = b"".join(encoded_links)
    if data is not None:
        out += _len_field(0x0A, data)
    return out


def encode_file_data(
    filesize: int, blocksizes: list[int] | None = None, data: bytes | None = None
) -> bytes:
    """UnixFS Data{Type: File, Data?, filesize, blocksizes*}."""
    out = b"\x08\x02"
    if data is not None:
        out += _len_field(0x12, data)
    out += b"\x18" + encode_varint(filesize)
    for bs in blocksizes or ():
        out += b"\x20" + encode_varint(bs)
    return out


def leaf_wrapping(size: int) -> tuple[bytes, bytes]:
    """(prefix, suffix) that turn ``size`` bytes into a CIDv0 dag-pb leaf (no copy of the data)."""
    inner_prefix = b"\x08\x02\x12" + encode_varint(size)
    suffix = b"\x18" + encode_varint(size)
    inner_len = len(inner_prefix) + size + len(suffix)
    return b"\x0a" + encode_varint(inner_len) + inner_prefix, suffix


# ------------------------------------------------------------------- decoding
def _fields(buf: bytes | memoryview):
    """Yield (field number, wire type, value) of a protobuf message; raises ValueError."""
    pos, n = 0, len(buf)
    while pos < n:
        key, pos = decode_varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, pos = decode_varint(buf, pos)
        elif wt == 2:
            size, pos = decode_varint(buf, pos)
            if pos + size > n:
                raise ValueError("truncated field")
            v = buf[pos : pos + size]
            pos += size
        elif wt == 1:
            v, pos = buf[pos : pos + 8], pos + 8
        elif wt == 5:
            v, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wt}")
        if pos > n:
            raise ValueError("truncated field")
        yield num, wt, v


def decode_node(block: bytes | memoryview) -> tuple[list[Link], bytes | None]:
    """Decode a dag-pb block into (links, data). Raises ValueError if malformed."""
    links: list[Link] = []
    data = None
    for num, wt, v in _fields(block):
        if num == 2 and wt == 2:
            cid = name = tsize = None
            for lnum, lwt, lv in _fields(v):
                if lnum == 1 and lwt == 2:
                    cid, end = cid_from_bytes(lv, 0)
                    if end != len(lv):
                        raise ValueError("trailing bytes after link CID")
                elif lnum == 2 and lwt == 2:
                    name = bytes(lv).decode("utf-8", "replace")
                elif lnum == 3 and lwt == 0:
                    tsize = lv
            if cid is None:
                raise ValueError("link without a hash")
            links.append(Link(cid, name, tsize))
        elif num == 1 and wt == 2:
            data = bytes(v)
        else:
            raise ValueError(f"unexpected PBNode field {num}")
    return links, data


def decode_unixfs(data: bytes | memoryview) -> UnixFSData:
    """Decode a UnixFS Data message. Raises ValueError if malformed."""
    out = UnixFSData(type=-1)
    for num, wt, v in _fields(data):
        if num == 1 and wt == 0:
            out.type = v
        elif num == 2 and wt == 2:
            out.data = bytes(v)
        elif num == 3 and wt == 0:
            out.filesize = v
        elif num == 4 and wt == 0:
            out.blocksizes.append(v)
        elif num == 4 and wt == 2:  # packed, tolerated
            p = 0
            while p < len(v):
                bs, p = decode_varint(v, p)
                out.blocksizes.append(bs)
    if out.type < 0:
        raise ValueError("UnixFS data without a type")
    return out
