"""Sealed updates: a participant's update encrypted for the validators who must read it.

A sealed update (format ``din/sealed-update/v1``) is one file::

    "din-seal" (8) | version 0x01 (1) | header length N (4, big-endian)
    | header: N bytes of canonical JSON | payload: a ``din-aead`` stream

The header names where the update is valid (chain, task, round, the
participant's address), a key check, and one HPKE-wrapped copy of the
update key U per recipient (the validators of the participant's subgroup
for that round, in slot order)::

    {"format": "din/sealed-update/v1", "suite": "...", "chain_id": 1, "task": 1,
     "round": 1, "participant": "0x...", "key_check": "0x...",
     "recipients": [{"address": "0x...", "wrapped_key": "0x..."}]}

- ``binding``   = "din/sealed-update/v1" | chain id (8) | task (32) | round (8) | participant (20)
- payload key  = HKDF-SHA256(U, info="din/sealed-update/v1/payload" | binding)
- key check    = SHA-256("din/sealed-update/v1/key-check" | binding | U)
- wrapped key  = HPKE(recipient, U, info=binding | recipient address), with the
  ephemeral key pair derived from HKDF(U, "din/sealed-update/v1/ephemeral" |
  binding | recipient address | recipient key) (``hpke.seal_keyed``).

Because every wrapped key is a function of U, a reader that opened U
recomputes every other recipient's wrapped key and checks it byte for byte
(``check_wraps``). A participant who wraps garbage for one validator of its
subgroup is therefore caught by all of them alike: the one who cannot open
its copy and the ones who can all refuse the update, so honest validators
still agree (``protocol.sealing``). A copy of someone else's sealed update
names the wrong participant, and its key check and wraps fail for the
copier's binding.

Readers other than the subgroup's validators (the task's evaluation
validators, a dispute committee) get U through a key grant
(``din/key-grant/v1``): a holder of U wraps it to them; the reader checks
what it unwrapped against the key check before using it.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from din_cli.crypto import aead, hpke
from din_cli.errors import InputError, VerificationError

MAGIC = b"din-seal"
VERSION = 1
FORMAT = "din/sealed-update/v1"
GRANT_FORMAT = "din/key-grant/v1"
_PREFIX = struct.Struct(">8sBI")
_MAX_HEADER = 1 << 24
_IN_MEMORY = 16 << 20  # payloads up to this size are encrypted and decrypted in one buffer
_TAG = b"din/sealed-update/v1"


@dataclass(frozen=True)
class UpdateBinding:
    """Where a sealed update is valid: chain, task, round and the submitting participant."""

    chain_id: int
    task: int
    round: int
    participant: str

    def bytes(self) -> bytes:
        return (
            _TAG
            + int(self.chain_id).to_bytes(8, "big")
            + int(self.task).to_bytes(32, "big")
            + int(self.round).to_bytes(8, "big")
            + bytes.fromhex(self.participant.removeprefix("0x"))
        )


@dataclass(frozen=True)
class Sealed:
    """A parsed sealed update: its header fields and where the payload starts."""

    header: dict
    binding: UpdateBinding
    key_check: bytes
    recipients: list[tuple[str, bytes]]  # (address, wrapped key), in header order
    payload_offset: int


def _hkdf(key: bytes, info: bytes, length: int = 32) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(bytes(key))


def key_check(key: bytes, binding: UpdateBinding) -> bytes:
    """What the header publishes of U: a SHA-256 commitment that binds it to ``binding``."""
    return hashlib.sha256(_TAG + b"/key-check" + binding.bytes() + bytes(key)).digest()


def _addr(address: str) -> bytes:
    return bytes.fromhex(address.removeprefix("0x"))


def wrap_for(key: bytes, binding: UpdateBinding, address: str, public: bytes) -> bytes:
    """U wrapped for one recipient; the same bytes every time (see the module doc)."""
    return hpke.seal_keyed(
        public,
        key,
        info=binding.bytes() + _addr(address),
        label=_TAG + b"/ephemeral" + binding.bytes() + _addr(address) + bytes(public),
    )


def seal_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    binding: UpdateBinding,
    recipients: list[tuple[str, bytes]],
) -> bytes:
    """Encrypt ``src`` into a sealed update at ``dst`` for ``recipients`` ((address, HPKE public key)); U."""
    from din_cli.files import atomic_output

    if not recipients:
        raise InputError("a sealed update needs at least one recipient", "name its validators")
    key = aead.generate_key()
    header = {
        "format": FORMAT,
        "suite": hpke.SUITE_NAME,
        "chain_id": int(binding.chain_id),
        "task": int(binding.task),
        "round": int(binding.round),
        "participant": binding.participant,
        "key_check": "0x" + key_check(key, binding).hex(),
        "recipients": [
            {"address": a, "wrapped_key": "0x" + wrap_for(key, binding, a, pub).hex()}
            for a, pub in recipients
        ],
    }
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    with open(src, "rb") as fin, atomic_output(dst) as fout:
        fout.write(_PREFIX.pack(MAGIC, VERSION, len(raw)) + raw)
        if os.fstat(fin.fileno()).st_size <= _IN_MEMORY:  # no 32 MiB of stream buffers to fill
            fout.write(aead.encrypt_bytes(fin.read(), _payload_key(key, binding)))
        else:
            aead.encrypt_stream(fin, fout, _payload_key(key, binding))
    return key


def is_sealed(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts like a sealed update."""
    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def read_header(path: str | os.PathLike) -> Sealed:
    """Parse a sealed update's header; InputError naming what is wrong with it."""
    with open(path, "rb") as f:
        prefix = f.read(_PREFIX.size)
        if len(prefix) < _PREFIX.size:
            raise InputError("sealed update is shorter than its prefix", "it was truncated")
        magic, version, size = _PREFIX.unpack(prefix)
        if magic != MAGIC or version != VERSION:
            raise InputError("not a din sealed update (bad magic or version)", "seal it with din")
        if size > _MAX_HEADER:
            raise InputError(f"sealed update header of {size} bytes", "it was altered")
        raw = f.read(size)
    try:
        h = json.loads(raw)
        if h.get("format") != FORMAT or h.get("suite") != hpke.SUITE_NAME:
            raise ValueError("format")
        participant = str(h["participant"])
        binding = UpdateBinding(int(h["chain_id"]), int(h["task"]), int(h["round"]), participant)
        binding.bytes()  # the participant is 20 bytes of hex
        if len(_addr(participant)) != 20:
            raise ValueError("participant")
        check = bytes.fromhex(str(h["key_check"]).removeprefix("0x"))
        recipients = [
            (str(r["address"]), bytes.fromhex(str(r["wrapped_key"]).removeprefix("0x")))
            for r in h["recipients"]
        ]
        if len(check) != 32:
            raise ValueError("key check")
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise InputError(f"sealed update header is malformed ({e})", "it was altered") from None
    return Sealed(h, binding, check, recipients, _PREFIX.size + size)


def open_key(sealed: Sealed, address: str, hpke_private: bytes) -> bytes:
    """U from the copy wrapped for ``address``; VerificationError if there is none or it does not open."""
    mine = [w for a, w in sealed.recipients if a.lower() == address.lower()]
    if not mine:
        raise VerificationError(f"the update is not sealed for {address}", "ask for a key grant")
    key = hpke.unseal(hpke_private, mine[0], info=sealed.binding.bytes() + _addr(address))
    check_key(sealed, key)
    return key


def check_key(sealed: Sealed, key: bytes) -> None:
    """VerificationError unless ``key`` is the U the header's key check commits to."""
    if len(key) != 32 or key_check(key, sealed.binding) != sealed.key_check:
        raise VerificationError("the key does not match the update's key check", "it is not U")


def check_wraps(sealed: Sealed, key: bytes, publics: dict[str, bytes]) -> str | None:
    """With U known: None when every recipient's wrapped key is the one U determines, else a reason."""
    for address, wrapped in sealed.recipients:
        public = publics.get(address.lower())
        if public is None:
            return f"it is sealed for {address}, who has no HPKE key here"
        if wrap_for(key, sealed.binding, address, public) != wrapped:
            return f"the key wrapped for {address} is not the update's key"
    return None


def open_file(
    path: str | os.PathLike, dst: str | os.PathLike, key: bytes, sealed: Sealed | None = None
) -> Path:
    """Decrypt a sealed update's payload with U into ``dst`` (written only if all of it verifies)."""
    from din_cli.files import atomic_output

    sealed = sealed or read_header(path)
    check_key(sealed, key)
    with open(path, "rb") as fin, atomic_output(dst, mode=0o600) as fout:
        fin.seek(sealed.payload_offset)
        if os.fstat(fin.fileno()).st_size - sealed.payload_offset <= _IN_MEMORY:
            fout.write(aead.decrypt_bytes(fin.read(), _payload_key(key, sealed.binding)))
        else:
            aead.decrypt_stream(fin, fout, _payload_key(key, sealed.binding))
    return Path(dst)


def _payload_key(key: bytes, binding: UpdateBinding) -> bytes:
    return _hkdf(key, _TAG + b"/payload" + binding.bytes())


# -- key grants ---------------------------------------------------------------


def grant_info(chain_id: int, task: int, update_cid: str, address: str) -> bytes:
    """HPKE info of a granted key: bound to the chain, task, the sealed update's CID and the reader."""
    return (
        b"din/key-grant/v1"
        + int(chain_id).to_bytes(8, "big")
        + int(task).to_bytes(32, "big")
        + update_cid.encode()
        + b"\0"
        + _addr(address)
    )


def grant_document(
    chain_id: int,
    task: int,
    granter: str,
    keys: list[tuple[str, bytes]],
    readers: list[tuple[str, bytes]],
) -> dict:
    """Grant each (update CID, U) of ``keys`` to each (address, HPKE public key) of ``readers``."""
    entries = []
    for cid, key in keys:
        for address, public in readers:
            sealed = hpke.seal(public, key, info=grant_info(chain_id, task, cid, address))
            entries.append({"update": cid, "reader": address, "wrapped_key": "0x" + sealed.hex()})
    return {
        "format": GRANT_FORMAT,
        "suite": hpke.SUITE_NAME,
        "chain_id": int(chain_id),
        "task": int(task),
        "granter": granter,
        "keys": entries,
    }


def granted_keys(
    doc: dict, chain_id: int, task: int, address: str, hpke_private: bytes
) -> dict[str, list[bytes]]:
    """``{update CID: [candidate U, ...]}`` that a grant document gives ``address`` (unchecked)."""
    out: dict[str, list[bytes]] = {}
    if (
        not isinstance(doc, dict)
        or doc.get("format") != GRANT_FORMAT
        or (doc.get("chain_id"), doc.get("task")) != (int(chain_id), int(task))
        or not isinstance(doc.get("keys"), list)
    ):
        return out
    for e in doc["keys"]:
        try:
            if str(e["reader"]).lower() != address.lower():
                continue
            cid = str(e["update"])
            key = hpke.unseal(
                hpke_private,
                bytes.fromhex(str(e["wrapped_key"]).removeprefix("0x")),
                info=grant_info(chain_id, task, cid, address),
            )
        except (KeyError, TypeError, ValueError, AttributeError, VerificationError, InputError):
            continue
        out.setdefault(cid, []).append(key)
    return out
