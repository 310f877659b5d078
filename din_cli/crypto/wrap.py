"""The test-set key exchange of the DIN auditing protocol (paper section 5.2).

The model owner encrypts the test set under a fresh key K, then:

- ``wrap_key``: seals K to every validator's HPKE key, with the HPKE ``info``
  bound to the chain, task and round (``Binding.info``), so a wrapped key
  opens only in the context it was made for; the HPKE ephemeral key is
  derived from K (``wrap_for``), so each wrapped key is a function of K;
- ``sign_cid``: signs the test set's CID with the owner's Ethereum key
  (EIP-191 ``personal_sign`` over ``cid_message``) and encrypts signature and
  CID under a key derived from K: ``encryptedCID = Enc(K, Sign(owner_sk, CID))``.

A validator runs ``unwrap_key`` with its HPKE secret, then
``open_signed_cid`` with K and the owner's address taken from the task; a
signature by anyone else is a VerificationError, never a CID.

Recomputable wraps. An owner could wrap garbage (or another key) to one
validator of a subgroup and K to the rest: the one validator honestly
rejects, is outvoted and slashed, and no contract can tell a bad wrap from a
lazy rejection. So a wrapped key is not random: it is ``hpke.seal_keyed``
with the ephemeral key pair derived from HKDF(K, "din/test-key/v1/ephemeral"
| binding info | recipient address (20 bytes; none when unknown) | recipient
key), the derandomise-and-re-encrypt check of the Fujisaki-Okamoto
transform, as ``crypto.seal`` does for update keys. Whoever opened K
recomputes every recipient's wrapped key and compares byte for byte
(``check_wraps``, run by ``open_test_key``); a difference is a
``WrapMismatch``. The validator that got garbage cannot open its copy, the
others see the garbage: every honest validator rejects alike.

A recipient with no usable HPKE key (none registered, e.g. deleted by
``withdraw``, or a low-order X25519 point) is wrapped ``NO_KEY_WRAP``: 80 zero
bytes, whose ``enc`` is the zero point that no HPKE sender produces and
``unseal`` refuses. It carries nothing, and every validator expects exactly
it, so an honest owner can still post and a dishonest one gains nothing.
On chain the recipients' keys are not posted: ``document_from_chain`` takes
them from a resolver (the validator registry as it stood when the test set
was posted, ``protocol.evaluation.chain_resolver``), so validators check
against the keys every one of them reads alike.

``wrap_test_key`` / ``open_test_key`` do both steps and produce or read the
JSON document (``din/test-key/v1``) that ``din keys wrap`` prints::

    {"format": "din/test-key/v1", "suite": "...", "chain_id": 0, "task": 1, "round": 0,
     "owner": "0x..." | null, "encrypted_cid": "0x..." | null,
     "recipients": [{"address": "0x..." | null, "hpke_public": "0x...", "wrapped_key": "0x..."}]}

Each ``wrapped_key`` is HPKE's ``enc || ciphertext`` (80 bytes) and
``hpke_public`` is null for a recipient wrapped ``NO_KEY_WRAP``; the
encrypted CID is ``nonce(12) || AES-256-GCM(HKDF(K, "din/test-cid/v1"),
signature(65) || cid)`` with the binding as associated data.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from din_cli.crypto import hpke
from din_cli.errors import InputError, NotFoundError, UsageError, VerificationError

FORMAT = "din/test-key/v1"
_INFO = b"din/test-key/v1"
_EPHEMERAL = b"din/test-key/v1/ephemeral"
NO_KEY_WRAP = bytes(hpke.ENC_LEN + 32 + hpke.TAG_LEN)
"""The wrapped key of a recipient with no usable HPKE key: 80 zero bytes (see the module doc)."""
_CID_INFO = b"din/test-cid/v1"
_SIG_LEN = 65
_HEX_ADDR = re.compile(r"^0x[0-9a-fA-F]{40}$")
_HEX_KEY = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")

Resolver = Callable[[str], "bytes | None"]
"""Maps a checksum address to its registered HPKE public key (or None): the chain plugs in here."""


@dataclass(frozen=True)
class Binding:
    """Where a wrapped key is valid: chain id, task id and round."""

    chain_id: int
    task: int
    round: int

    def __post_init__(self):
        for name, value, bits in (
            ("chain id", self.chain_id, 64),
            ("task", self.task, 256),
            ("round", self.round, 64),
        ):
            if not isinstance(value, int) or not 0 <= value < 1 << bits:
                raise UsageError(
                    f"{name} {value!r} is out of range", f"give an integer in 0..2^{bits}-1"
                )

    def info(self) -> bytes:
        """HPKE info: ``"din/test-key/v1" || chain_id (8) || task (32) || round (8)``, big-endian."""
        return (
            _INFO
            + self.chain_id.to_bytes(8, "big")
            + self.task.to_bytes(32, "big")
            + self.round.to_bytes(8, "big")
        )

    def to_json(self) -> dict[str, int]:
        return {"chain_id": self.chain_id, "task": self.task, "round": self.round}


@dataclass(frozen=True)
class Recipient:
    """A validator to wrap K for: its HPKE public key (None: it has none) and, when known, its address."""

    hpke_public: bytes | None
    address: str | None = None


@dataclass(frozen=True)
class OpenedKey:
    """What a validator recovers: K and, when the document carries one, the verified CID."""

    key: bytes
    cid: str | None


class WrapMismatch(VerificationError):
    """A recipient's wrapped key is not the one K determines: the owner wrapped something else."""


# -- primitives ---------------------------------------------------------------


def wrap_for(
    key: bytes, binding: Binding, public: bytes | None, address: str | None = None
) -> bytes:
    """K wrapped for one recipient: the same bytes every time (module doc); ``NO_KEY_WRAP`` when ``public`` is None.

    A low-order ``public`` is an InputError: pass None for a recipient without a usable key.
    """
    _check_k(key)
    if public is None:
        return NO_KEY_WRAP
    addr = bytes.fromhex(_checksum(address)[2:]) if address else b""
    return hpke.seal_keyed(
        public, key, info=binding.info(), label=_EPHEMERAL + binding.info() + addr + bytes(public)
    )


def wrap_key(key: bytes, recipients: Iterable[bytes | Recipient], binding: Binding) -> list[bytes]:
    """Seal K to each recipient's HPKE public key; return the wrapped keys in the same order."""
    out = []
    for r in recipients:
        if isinstance(r, Recipient):
            if r.hpke_public is None and r.address is None:
                raise UsageError(
                    "a recipient has neither an HPKE key nor an address", "name each validator"
                )
            out.append(wrap_for(key, binding, r.hpke_public, r.address))
        else:
            out.append(wrap_for(key, binding, r))
    return out


def check_wraps(doc: dict, key: bytes, binding: Binding) -> None:
    """With K opened: WrapMismatch naming the first recipient whose wrapped key is not ``wrap_for``'s.

    Each entry is recomputed from K, the binding, its address and its
    ``hpke_public`` (null: ``NO_KEY_WRAP``) and compared byte for byte.
    """
    for e in _entries(doc):
        who = e.get("address") or e.get("hpke_public")
        try:
            public = _unhex(e["hpke_public"]) if e.get("hpke_public") else None
            good = wrap_for(key, binding, public, e.get("address") or None) == _unhex(
                e.get("wrapped_key") or ""
            )
        except (InputError, UsageError, TypeError, AttributeError):  # malformed, or a low-order key
            good = False
        if not good:
            raise WrapMismatch(
                f"the owner's wrap to {who} does not recompute from K",
                "the owner wrapped another key (or garbage) to it: refuse this test set",
            )


def unwrap_key(wrapped: bytes, hpke_private: bytes, binding: Binding) -> bytes:
    """Recover K from a wrapped key; VerificationError if it is not ours or not for this binding."""
    key = hpke.unseal(hpke_private, wrapped, info=binding.info())
    _check_k(key)
    return key


def cid_message(cid: str, binding: Binding) -> str:
    """The text the owner signs (EIP-191 personal message) for a test set CID."""
    return f"din test set\nchain: {binding.chain_id}\ntask: {binding.task}\nround: {binding.round}\ncid: {cid}"


def sign_cid(key: bytes, cid: str, owner, binding: Binding) -> bytes:
    """Sign ``cid`` with ``owner`` (an Identity or eth-account LocalAccount) and encrypt it under K.

    Returns ``encryptedCID``: nonce || AES-256-GCM(signature || cid).
    """
    from eth_account.messages import encode_defunct

    _check_k(key)
    _check_cid(cid)
    account = getattr(owner, "account", owner)
    signature = bytes(
        account.sign_message(encode_defunct(text=cid_message(cid, binding))).signature
    )
    nonce = os.urandom(12)
    return nonce + _cid_cipher(key).encrypt(nonce, signature + cid.encode(), binding.info())


def cid_opens(key: bytes, encrypted_cid: bytes, binding: Binding) -> bool:
    """Whether ``encryptedCID`` decrypts under ``key`` in this binding (authenticated: only the
    owner's K does), whatever it holds; how a reader tells a granted K from a bogus one."""
    if len(key) != 32 or len(encrypted_cid) < 12 + 16:
        return False
    try:
        _cid_cipher(key).decrypt(encrypted_cid[:12], encrypted_cid[12:], binding.info())
    except Exception:  # InvalidTag
        return False
    return True


def open_signed_cid(key: bytes, encrypted_cid: bytes, owner_address: str, binding: Binding) -> str:
    """Decrypt ``encryptedCID`` and return the CID if ``owner_address`` signed it; else VerificationError."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    _check_k(key)
    if len(encrypted_cid) < 12 + _SIG_LEN + 16:
        raise VerificationError("encrypted CID is too short", "it was truncated or altered")
    try:
        plain = _cid_cipher(key).decrypt(encrypted_cid[:12], encrypted_cid[12:], binding.info())
    except Exception:  # InvalidTag
        raise VerificationError(
            "encrypted CID does not open with K in this context",
            "it was altered, or belongs to another task/round",
        ) from None
    signature, raw = plain[:_SIG_LEN], plain[_SIG_LEN:]
    try:
        cid = raw.decode("ascii")
        _check_cid(cid)
        signer = Account.recover_message(
            encode_defunct(text=cid_message(cid, binding)), signature=signature
        )
    except Exception:
        raise VerificationError(
            "signed CID is malformed", "the owner's tool wrote a bad document"
        ) from None
    owner = _checksum(owner_address)
    if signer != owner:
        raise VerificationError(
            f"test set CID is signed by {signer}, not by the task owner {owner}",
            "do not use this test set; ask the task owner to publish it again",
        )
    return cid


# -- recipients ---------------------------------------------------------------


def parse_recipient(spec: str, *, keystore=None, resolver: Resolver | None = None) -> Recipient:
    """Turn ``spec`` into a Recipient.

    ``spec`` is an HPKE public key (64 hex digits, optional 0x), an address
    (0x + 40 hex digits) looked up with ``resolver`` (the chain's registry)
    and then in ``keystore``, ``ADDRESS:HPKE_PUBLIC``, or a local key name.
    """
    spec = spec.strip()
    if ":" in spec:
        addr, _, pub = spec.partition(":")
        if not _HEX_ADDR.match(addr) or not _HEX_KEY.match(pub):
            raise UsageError(
                f"recipient {spec!r} is not ADDRESS:HPKE_PUBLIC",
                "give 0x+40 hex digits, a colon, then 64 hex digits",
            )
        return Recipient(_unhex(pub), _checksum(addr))
    if _HEX_KEY.match(spec):
        return Recipient(_unhex(spec))
    if _HEX_ADDR.match(spec):
        address = _checksum(spec)
        if resolver is not None:
            public = resolver(address)
            if public:
                return Recipient(bytes(public), address)
        if keystore is not None:
            info = keystore.find(address)
            if info is not None:
                return Recipient(info.hpke_public, address)
        raise NotFoundError(
            f"no HPKE key known for {address}",
            "give its HPKE public key (ADDRESS:HPKE_PUBLIC) or have it registered on chain",
        )
    if keystore is not None and spec:
        from din_cli.crypto.keystore import _NAME

        if _NAME.match(spec):
            info = keystore.show(spec)
            return Recipient(info.hpke_public, info.address)
    raise UsageError(
        f"recipient {spec!r} is neither an address, an HPKE public key nor a key name",
        "see `din keys wrap --help`",
    )


def resolve_recipients(
    specs: Iterable[str], *, keystore=None, resolver: Resolver | None = None
) -> list[Recipient]:
    """Parse every spec (see ``parse_recipient``); drop exact duplicates, refuse conflicting ones."""
    out: list[Recipient] = []
    seen_pub: dict[bytes, Recipient] = {}
    seen_addr: dict[str, Recipient] = {}
    for spec in specs:
        if not spec.strip():
            continue
        r = parse_recipient(spec, keystore=keystore, resolver=resolver)
        if r.hpke_public in seen_pub:
            if seen_pub[r.hpke_public] == r:
                continue
            raise UsageError(
                f"HPKE key {r.hpke_public.hex()} is given twice with different addresses",
                "list each validator once",
            )
        if r.address and r.address in seen_addr:
            raise UsageError(
                f"{r.address} is given twice with different HPKE keys", "list each validator once"
            )
        seen_pub[r.hpke_public] = r
        if r.address:
            seen_addr[r.address] = r
        out.append(r)
    if not out:
        raise UsageError("no recipients", "name validators with --to (or one per line on stdin)")
    return out


# -- the document ------------------------------------------------------------


def wrap_test_key(
    key: bytes,
    recipients: Iterable[Recipient],
    binding: Binding,
    *,
    cid: str | None = None,
    owner=None,
) -> dict:
    """Build the ``din/test-key/v1`` document: K wrapped for each recipient, plus the signed CID if given."""
    recipients = list(recipients)
    if cid is not None and owner is None:
        raise UsageError(
            "a CID to sign but no owner key", "choose the owner's key with --signer NAME"
        )
    wrapped = wrap_key(key, recipients, binding)
    encrypted_cid = sign_cid(key, cid, owner, binding) if cid is not None else None
    return {
        "format": FORMAT,
        "suite": hpke.SUITE_NAME,
        **binding.to_json(),
        "owner": getattr(owner, "address", None) if cid is not None else None,
        "encrypted_cid": "0x" + encrypted_cid.hex() if encrypted_cid is not None else None,
        "recipients": [
            {
                "address": r.address,
                "hpke_public": "0x" + r.hpke_public.hex() if r.hpke_public is not None else None,
                "wrapped_key": "0x" + w.hex(),
            }
            for r, w in zip(recipients, wrapped, strict=True)
        ],
    }


def find_entry(
    doc: dict, *, hpke_public: bytes | None = None, address: str | None = None
) -> dict | None:
    """The recipient entry for this HPKE key (preferred) or address, if the document has one."""
    entries = _entries(doc)
    if hpke_public is not None:
        for e in entries:
            if _unhex(e.get("hpke_public") or "") == hpke_public:
                return e
    if address is not None:
        want = address.lower()
        for e in entries:
            if (e.get("address") or "").lower() == want:
                return e
    return None


def open_test_key(
    doc: dict, identity, binding: Binding, *, owner_address: str | None = None
) -> OpenedKey:
    """Recover K from ``doc`` as ``identity`` (an Identity); with ``owner_address``, also the verified CID.

    The binding is the validator's own idea of where it stands (chain, task,
    round): a document made for anything else is refused, whatever it claims.
    Every recipient's wrapped key must recompute from K (``check_wraps``),
    else WrapMismatch: a validator never uses a K that others were not given.
    """
    if doc.get("format") != FORMAT:
        raise InputError(
            f"not a {FORMAT} document (format {doc.get('format')!r})",
            "give the JSON written by `din keys wrap`",
        )
    claimed = (doc.get("chain_id"), doc.get("task"), doc.get("round"))
    if claimed != (binding.chain_id, binding.task, binding.round):
        raise VerificationError(
            f"wrapped key is for chain {claimed[0]} task {claimed[1]} round {claimed[2]}, "
            f"not chain {binding.chain_id} task {binding.task} round {binding.round}",
            "use the document published for this task and round",
        )
    entry = find_entry(doc, hpke_public=identity.hpke_public, address=identity.address)
    if entry is None:
        raise NotFoundError(
            f"no wrapped key for {identity.address} ({identity.name}) in the document",
            "you are not one of its recipients",
        )
    key = unwrap_key(_unhex(entry.get("wrapped_key") or ""), identity.hpke_private, binding)
    check_wraps(doc, key, binding)
    cid = None
    if owner_address is not None:
        if not doc.get("encrypted_cid"):
            raise InputError(
                "the document carries no encrypted CID",
                "drop --owner, or ask the owner to wrap with --cid",
            )
        cid = open_signed_cid(key, _unhex(doc["encrypted_cid"]), owner_address, binding)
    return OpenedKey(key, cid)


def chain_args(doc: dict) -> tuple[bytes, dict[str, bytes]]:
    """``(encrypted_cid, {address: wrapped_key})`` of a document: what the task contract's test-set step stores."""
    if not doc.get("encrypted_cid"):
        raise InputError(
            "the document carries no encrypted CID", "wrap with --cid CID --signer NAME"
        )
    wrapped: dict[str, bytes] = {}
    for e in _entries(doc):
        if not e.get("address"):
            raise UsageError(
                f"recipient {e.get('hpke_public')} has no address",
                "name validators by address or ADDRESS:HPKE_PUBLIC",
            )
        wrapped[_checksum(e["address"])] = _unhex(e.get("wrapped_key") or "")
    return _unhex(doc["encrypted_cid"]), wrapped


def document_from_chain(
    encrypted_cid: bytes,
    wrapped: dict[str, bytes],
    binding: Binding,
    resolver: Resolver,
) -> dict:
    """Rebuild a ``din/test-key/v1`` document from what the chain stores, for ``open_test_key``.

    The chain keeps no recipient keys: ``resolver`` (address -> registered
    HPKE key, or None when it has no usable one) fills them in, and
    ``open_test_key`` checks every wrapped key against them.
    """

    def public(address: str) -> str | None:
        key = resolver(_checksum(address))
        return "0x" + bytes(key).hex() if key else None

    return {
        "format": FORMAT,
        "suite": hpke.SUITE_NAME,
        **binding.to_json(),
        "owner": None,
        "encrypted_cid": "0x" + bytes(encrypted_cid).hex(),
        "recipients": [
            {
                "address": _checksum(a),
                "hpke_public": public(a),
                "wrapped_key": "0x" + bytes(w).hex(),
            }
            for a, w in wrapped.items()
        ],
    }


def dumps(doc: dict, *, per_recipient: bool = False) -> str:
    """The document as indented JSON, or as NDJSON: one line per recipient carrying the shared fields too."""
    import json

    if not per_recipient:
        return json.dumps(doc, indent=2) + "\n"
    shared = {k: v for k, v in doc.items() if k != "recipients"}
    return "".join(json.dumps({**shared, **r}) + "\n" for r in _entries(doc))


def load_document(data: bytes, where: str = "wrapped key document") -> dict:
    """Parse a ``din/test-key/v1`` JSON document."""
    import json

    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        doc = _from_ndjson(data)
        if doc is None:
            raise InputError(
                f"{where}: not JSON ({e})", "give the JSON written by `din keys wrap`"
            ) from None
    if isinstance(doc, dict) and "recipients" not in doc and "wrapped_key" in doc:
        doc = _from_ndjson(data)  # a single line of `din keys wrap --nl`
    if not isinstance(doc, dict):
        raise InputError(
            f"{where}: not a {FORMAT} document", "give the JSON written by `din keys wrap`"
        )
    return doc


# -- helpers ------------------------------------------------------------------


def _from_ndjson(data: bytes) -> dict | None:
    """Rebuild a document from ``dumps(per_recipient=True)`` lines (all of them or some)."""
    import json

    try:
        rows = [json.loads(line) for line in data.splitlines() if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not rows or not all(isinstance(r, dict) and "wrapped_key" in r for r in rows):
        return None
    entry_keys = ("address", "hpke_public", "wrapped_key")
    shared = {k: v for k, v in rows[0].items() if k not in entry_keys}
    if any({k: v for k, v in r.items() if k not in entry_keys} != shared for r in rows):
        return None
    return {**shared, "recipients": [{k: r.get(k) for k in entry_keys} for r in rows]}


def _entries(doc: dict) -> list[dict]:
    entries = doc.get("recipients")
    if not isinstance(entries, list):
        raise InputError(
            "document has no recipients list", "give the JSON written by `din keys wrap`"
        )
    return [e for e in entries if isinstance(e, dict)]


def _cid_cipher(key: bytes):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return AESGCM(
        HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_CID_INFO).derive(bytes(key))
    )


def _check_k(key: bytes) -> None:
    if not isinstance(key, (bytes, bytearray)) or len(key) != 32:
        raise InputError("K must be 32 bytes", "use a key written by `din data encrypt --key-out`")


def _check_cid(cid: str) -> None:
    if not isinstance(cid, str) or not re.fullmatch(r"[0-9A-Za-z]{2,190}", cid):
        raise InputError(
            f"{cid!r} does not look like a CID", "give the CID printed by `din ipfs add`"
        )


def _unhex(text: str) -> bytes:
    try:
        return bytes.fromhex(text.removeprefix("0x").removeprefix("0X"))
    except (ValueError, AttributeError):
        raise InputError(f"{text!r} is not hex", "give hex digits, optionally after 0x") from None


def _checksum(address: str) -> str:
    from din_cli.crypto.keystore import to_checksum

    return to_checksum(address)
