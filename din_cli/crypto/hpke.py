"""HPKE (RFC 9180) base mode for one suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM.

A sealed message is ``enc || ciphertext`` (32 + len(plaintext) + 16 bytes),
the single-shot form of RFC 9180 section 6.1 (sequence number 0). Keys are
raw 32-byte X25519 values. The construction is ``cryptography``'s own
(``cryptography.hazmat.primitives.hpke``, since 47.0); the tests check it
against the independent ``pyhpke`` package in both directions.
"""

from __future__ import annotations

from functools import lru_cache

from din_cli.errors import InputError, VerificationError

KEM_ID = 0x0020  # DHKEM(X25519, HKDF-SHA256)
KDF_ID = 0x0001  # HKDF-SHA256
AEAD_ID = 0x0002  # AES-256-GCM
SUITE_NAME = "DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM"
KEY_LEN = 32  # X25519 public and private key length
ENC_LEN = 32  # encapsulated key length
TAG_LEN = 16
OVERHEAD = ENC_LEN + TAG_LEN


@lru_cache(maxsize=1)
def _suite():
    from cryptography.hazmat.primitives import hpke

    return hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def generate_keypair() -> tuple[bytes, bytes]:
    """Return a fresh ``(private, public)`` X25519 key pair as raw 32-byte values."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    sk = X25519PrivateKey.generate()
    return _raw_private(sk), _raw_public(sk.public_key())


def public_key(private: bytes) -> bytes:
    """Return the raw public key of a raw X25519 private key."""
    return _raw_public(_load_private(private).public_key())


def seal(public: bytes, plaintext: bytes, *, info: bytes = b"") -> bytes:
    """Encrypt ``plaintext`` to ``public``; return ``enc || ciphertext``."""
    try:
        return _suite().encrypt(plaintext, _load_public(public), info=info)
    except ValueError:  # X25519 gives an all-zero shared secret: a low-order point
        raise InputError(
            f"HPKE public key {bytes(public).hex()} is a low-order X25519 point: nothing sealed to it is secret",
            "use the recipient's real HPKE public key",
        ) from None


def unseal(private: bytes, sealed: bytes, *, info: bytes = b"") -> bytes:
    """Decrypt ``enc || ciphertext`` with ``private``; VerificationError if it does not open."""
    from cryptography.exceptions import InvalidTag

    sk = _load_private(private)
    if len(sealed) < OVERHEAD:
        raise VerificationError(
            f"sealed message of {len(sealed)} bytes is too short for HPKE", "it was truncated"
        )
    try:
        return _suite().decrypt(sealed, sk, info=info)
    except InvalidTag:  # also what a low-order point in enc gives
        raise VerificationError(
            "HPKE message does not open with this key and context",
            "it was sealed to another key, for another task/round, or altered",
        ) from None


def seal_derived(public: bytes, plaintext: bytes, *, info: bytes, ikm: bytes) -> bytes:
    """``seal`` with the ephemeral key pair ``DeriveKeyPair(ikm)`` (RFC 9180 sections 4.1, 5.1, 7.1.3).

    The output is an ordinary HPKE message that ``unseal`` (and any RFC 9180
    implementation) opens. It is a function of its inputs: whoever knows
    ``ikm`` can compute it again and so check that a message was made for
    ``public`` from ``plaintext`` (the derandomise-and-re-encrypt check of the
    Fujisaki-Okamoto transform). ``ikm`` must be secret and used for one
    message only; din derives it from the sealed key itself
    (``crypto.seal``), so it reveals nothing that the plaintext does not.
    """
    import hashlib
    import hmac

    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    kem_suite = b"KEM" + KEM_ID.to_bytes(2, "big")
    hpke_suite = b"HPKE" + b"".join(i.to_bytes(2, "big") for i in (KEM_ID, KDF_ID, AEAD_ID))

    def extract(suite: bytes, salt: bytes, label: bytes, material: bytes) -> bytes:
        return hmac.new(
            salt or bytes(32), b"HPKE-v1" + suite + label + material, hashlib.sha256
        ).digest()

    def expand(suite: bytes, prk: bytes, label: bytes, context: bytes, length: int) -> bytes:
        labeled = length.to_bytes(2, "big") + b"HPKE-v1" + suite + label + context
        out, block, i = b"", b"", 1
        while len(out) < length:
            block = hmac.new(prk, block + labeled + bytes([i]), hashlib.sha256).digest()
            out, i = out + block, i + 1
        return out[:length]

    recipient = _load_public(public)
    ephemeral = X25519PrivateKey.from_private_bytes(
        expand(kem_suite, extract(kem_suite, b"", b"dkp_prk", bytes(ikm)), b"sk", b"", KEY_LEN)
    )
    enc = _raw_public(ephemeral.public_key())
    try:
        dh = ephemeral.exchange(recipient)
    except ValueError:  # an all-zero shared secret: a low-order point
        raise InputError(
            f"HPKE public key {bytes(public).hex()} is a low-order X25519 point: nothing sealed to it is secret",
            "use the recipient's real HPKE public key",
        ) from None
    shared = expand(
        kem_suite,
        extract(kem_suite, b"", b"eae_prk", dh),
        b"shared_secret",
        enc + bytes(public),
        32,
    )
    context = (
        b"\x00"
        + extract(hpke_suite, b"", b"psk_id_hash", b"")
        + extract(hpke_suite, b"", b"info_hash", bytes(info))
    )
    secret = extract(hpke_suite, shared, b"secret", b"")
    key = expand(hpke_suite, secret, b"key", context, 32)
    nonce = expand(hpke_suite, secret, b"base_nonce", context, 12)
    return enc + AESGCM(key).encrypt(nonce, bytes(plaintext), b"")


def seal_keyed(public: bytes, key: bytes, *, info: bytes, label: bytes) -> bytes:
    """Seal the secret ``key`` to ``public`` with an ephemeral key pair derived from ``key`` itself.

    ``seal_derived`` with ``ikm = HKDF-SHA256(key, salt=None, info=label)``:
    how din wraps one fresh key to many recipients so that whoever opens any
    copy recomputes every other copy byte for byte (``crypto.seal`` for
    update keys, ``crypto.wrap`` for the test-set key). ``label`` names the
    purpose, the context and the recipient, so no two messages share an
    ephemeral key; ``key`` must be fresh and uniformly random.
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    ikm = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=bytes(label)).derive(
        bytes(key)
    )
    return seal_derived(public, key, info=info, ikm=ikm)


def usable_public(public: bytes | None) -> bool:
    """Whether ``public`` is a 32-byte X25519 key that something can be sealed to (not a low-order point)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    if public is None or len(public) != KEY_LEN:
        return False
    try:
        X25519PrivateKey.from_private_bytes(bytes(range(1, 33))).exchange(_load_public(public))
    except ValueError:  # an all-zero shared secret, whatever the (clamped) scalar: low order
        return False
    return True


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
