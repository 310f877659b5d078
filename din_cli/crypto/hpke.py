"""HPKE (RFC 9180) base mode for one suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM.

A sealed message is ``enc || ciphertext`` (32 + len(plaintext) + 16 bytes),
the single-shot form of RFC 9180 section 6.1 (sequence number 0). Keys are
raw 32-byte X25519 values.

Recent ``cryptography`` releases ship HPKE (``cryptography.hazmat.primitives.hpke``)
and it is used when present; otherwise the same construction is built from its
X25519, HMAC and AES-GCM primitives (tested against the native one and against
the independent ``pyhpke`` package).
"""

from __future__ import annotations

import hashlib
import hmac

from din_cli.errors import InputError, VerificationError

KEM_ID = 0x0020  # DHKEM(X25519, HKDF-SHA256)
KDF_ID = 0x0001  # HKDF-SHA256
AEAD_ID = 0x0002  # AES-256-GCM
SUITE_NAME = "DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM"
KEY_LEN = 32  # X25519 public and private key length
ENC_LEN = 32  # encapsulated key length
TAG_LEN = 16
OVERHEAD = ENC_LEN + TAG_LEN

_native_suite = None


def _suite():
    """The native HPKE suite of ``cryptography``, or None where it has none."""
    global _native_suite
    if _native_suite is None:
        try:
            from cryptography.hazmat.primitives import hpke as _h

            _native_suite = _h.Suite(_h.KEM.X25519, _h.KDF.HKDF_SHA256, _h.AEAD.AES_256_GCM)
        except (ImportError, AttributeError):
            _native_suite = False
    return _native_suite or None


def generate_keypair() -> tuple[bytes, bytes]:
    """Return a fresh ``(private, public)`` X25519 key pair as raw 32-byte values."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    sk = X25519PrivateKey.generate()
    return _raw_private(sk), _raw_public(sk.public_key())


def public_key(private: bytes) -> bytes:
    """Return the raw public key of a raw X25519 private key."""
    return _raw_public(_load_private(private).public_key())


def seal(public: bytes, plaintext: bytes, *, info: bytes = b"", aad: bytes = b"") -> bytes:
    """Encrypt ``plaintext`` to ``public``; return ``enc || ciphertext``."""
    pk = _load_public(public)
    suite = _suite()
    if suite is not None and not aad:
        return suite.encrypt(plaintext, pk, info=info)
    return _seal_fallback(pk, plaintext, info, aad)


def unseal(private: bytes, sealed: bytes, *, info: bytes = b"", aad: bytes = b"") -> bytes:
    """Decrypt ``enc || ciphertext`` with ``private``; VerificationError if it does not open."""
    sk = _load_private(private)
    if len(sealed) < OVERHEAD:
        raise VerificationError(
            f"sealed message of {len(sealed)} bytes is too short for HPKE", "it was truncated"
        )
    suite = _suite()
    try:
        if suite is not None and not aad:
            return suite.decrypt(sealed, sk, info=info)
        return _open_fallback(sk, sealed, info, aad)
    except VerificationError:
        raise
    except Exception:  # InvalidTag, or a low-order point in enc
        raise VerificationError(
            "HPKE message does not open with this key and context",
            "it was sealed to another key, for another task/round, or altered",
        ) from None


# -- key plumbing -----------------------------------------------------------


def _load_public(raw: bytes):
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

    if len(raw) != KEY_LEN:
        raise InputError(
            f"HPKE public key is {len(raw)} bytes, not {KEY_LEN}",
            "give a 32-byte X25519 key (64 hex digits)",
        )
    return X25519PublicKey.from_public_bytes(bytes(raw))


def _load_private(raw: bytes):
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    if len(raw) != KEY_LEN:
        raise InputError(
            f"HPKE private key is {len(raw)} bytes, not {KEY_LEN}", "the key file is damaged"
        )
    return X25519PrivateKey.from_private_bytes(bytes(raw))


def _raw_public(pk) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return pk.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _raw_private(sk) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    return sk.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


# -- RFC 9180 from primitives (used where cryptography has no hpke module) ---

_KEM_SUITE = b"KEM" + KEM_ID.to_bytes(2, "big")
_HPKE_SUITE = (
    b"HPKE" + KEM_ID.to_bytes(2, "big") + KDF_ID.to_bytes(2, "big") + AEAD_ID.to_bytes(2, "big")
)


def _extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or b"\0" * 32, ikm, hashlib.sha256).digest()


def _expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def _labeled_extract(suite: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return _extract(salt, b"HPKE-v1" + suite + label + ikm)


def _labeled_expand(suite: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    return _expand(prk, length.to_bytes(2, "big") + b"HPKE-v1" + suite + label + info, length)


def _shared_secret(dh: bytes, enc: bytes, pk_r: bytes) -> bytes:
    eae_prk = _labeled_extract(_KEM_SUITE, b"", b"eae_prk", dh)
    return _labeled_expand(_KEM_SUITE, eae_prk, b"shared_secret", enc + pk_r, 32)


def _key_schedule(shared_secret: bytes, info: bytes) -> tuple[bytes, bytes]:
    psk_id_hash = _labeled_extract(_HPKE_SUITE, b"", b"psk_id_hash", b"")
    info_hash = _labeled_extract(_HPKE_SUITE, b"", b"info_hash", info)
    context = b"\x00" + psk_id_hash + info_hash  # mode_base
    secret = _labeled_extract(_HPKE_SUITE, shared_secret, b"secret", b"")
    key = _labeled_expand(_HPKE_SUITE, secret, b"key", context, 32)
    nonce = _labeled_expand(_HPKE_SUITE, secret, b"base_nonce", context, 12)
    return key, nonce


def _seal_fallback(pk, plaintext: bytes, info: bytes, aad: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    sk_e = X25519PrivateKey.generate()
    enc = _raw_public(sk_e.public_key())
    dh = sk_e.exchange(pk)
    key, nonce = _key_schedule(_shared_secret(dh, enc, _raw_public(pk)), info)
    return enc + AESGCM(key).encrypt(nonce, plaintext, aad or None)


def _open_fallback(sk, sealed: bytes, info: bytes, aad: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    enc, ct = sealed[:ENC_LEN], sealed[ENC_LEN:]
    dh = sk.exchange(X25519PublicKey.from_public_bytes(enc))
    key, nonce = _key_schedule(_shared_secret(dh, enc, _raw_public(sk.public_key())), info)
    return AESGCM(key).decrypt(nonce, ct, aad or None)
