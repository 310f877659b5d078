"""CID text <-> the binary CIDs the contracts store in events.

The chain keeps CIDs as raw bytes (binary CIDv1, or a CIDv0 multihash);
users and the content store speak text (``bafy…`` / ``Qm…``).

Example:
    raw = to_bytes("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")
    assert to_text(raw).startswith("bafk")
"""

from __future__ import annotations

from din_cli.errors import InputError


def to_bytes(text: str) -> bytes:
    """The binary form of CID ``text`` (UsageError when it is not a CID)."""
    from din_cli.store.cid import parse_cid

    return parse_cid(str(text).strip()).to_bytes()


def to_text(raw: bytes) -> str:
    """The text form of a binary CID read from the chain (InputError when it does not parse)."""
    from din_cli.store.cid import cid_from_bytes

    raw = bytes(raw)
    try:
        cid, end = cid_from_bytes(raw)
    except ValueError as e:
        raise InputError(
            f"0x{raw.hex()} on chain is not a binary CID ({e})", "the task's record is damaged"
        ) from None
    if end != len(raw):
        raise InputError(
            f"0x{raw.hex()} on chain has bytes after its CID", "the task's record is damaged"
        )
    return cid.encode()
