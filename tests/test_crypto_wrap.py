"""HPKE key wrapping and the signed test-set CID: interoperability with pyhpke and eth-account, and refusals."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_account import Account
from eth_account.messages import encode_defunct
from pyhpke import AEADId, CipherSuite, KDFId, KEMId

from din_cli.crypto import hpke, wrap
from din_cli.crypto.keystore import Identity
from din_cli.errors import InputError, NotFoundError, UsageError, VerificationError

SUITE = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES256_GCM)
BIND = wrap.Binding(chain_id=31337, task=7, round=2)
K = bytes(range(100, 132))
CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def identity(name: str) -> Identity:
    acct = Account.create()
    sk, pk = hpke.generate_keypair()
    return Identity(name, acct.address, bytes(acct.key), sk, pk)


def test_info_binds_chain_task_and_round():
    info = BIND.info()
    assert info == b"din/test-key/v1" + (31337).to_bytes(8, "big") + (7).to_bytes(32, "big") + (
        2
    ).to_bytes(8, "big")
    assert wrap.Binding(31337, 7, 3).info() != info
    with pytest.raises(UsageError):
        wrap.Binding(0, -1, 0)


def test_din_wrapped_key_opens_with_pyhpke():
    sk, pk = hpke.generate_keypair()
    (sealed,) = wrap.wrap_key(K, [pk], BIND)
    assert len(sealed) == 32 + 32 + 16
    ctx = SUITE.create_recipient_context(
        sealed[:32], SUITE.kem.deserialize_private_key(sk), info=BIND.info()
    )
    assert ctx.open(sealed[32:]) == K


def test_pyhpke_wrapped_key_opens_with_din():
    sk, pk = hpke.generate_keypair()
    enc, ctx = SUITE.create_sender_context(SUITE.kem.deserialize_public_key(pk), info=BIND.info())
    sealed = enc + ctx.seal(K)
    assert wrap.unwrap_key(sealed, sk, BIND) == K


def test_wrapped_key_for_another_task_round_or_chain_is_refused():
    sk, pk = hpke.generate_keypair()
    (sealed,) = wrap.wrap_key(K, [pk], BIND)
    for other in (wrap.Binding(31337, 8, 2), wrap.Binding(31337, 7, 3), wrap.Binding(1, 7, 2)):
        with pytest.raises(VerificationError):
            wrap.unwrap_key(sealed, sk, other)


def test_wrapped_key_with_any_flipped_bit_or_wrong_recipient_is_refused():
    sk, pk = hpke.generate_keypair()
    other_sk, _ = hpke.generate_keypair()
    (sealed,) = wrap.wrap_key(K, [pk], BIND)
    with pytest.raises(VerificationError):
        wrap.unwrap_key(sealed, other_sk, BIND)
    for i in range(0, len(sealed) * 8, 37):
        bad = bytearray(sealed)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(VerificationError):
            wrap.unwrap_key(bytes(bad), sk, BIND)
    with pytest.raises(VerificationError):
        wrap.unwrap_key(sealed[:-1], sk, BIND)


def test_signed_cid_round_trip_and_eth_account_recovers_the_owner():
    owner = identity("mo")
    blob = wrap.sign_cid(K, CID, owner, BIND)
    assert wrap.open_signed_cid(K, blob, owner.address, BIND) == CID
    assert wrap.open_signed_cid(K, blob, owner.address.lower(), BIND) == CID
    # decrypt with the documented construction and recover with eth-account alone
    sub = HKDF(hashes.SHA256(), 32, salt=None, info=b"din/test-cid/v1").derive(K)
    plain = AESGCM(sub).decrypt(blob[:12], blob[12:], BIND.info())
    signature, cid = plain[:65], plain[65:].decode()
    assert cid == CID
    message = encode_defunct(text=wrap.cid_message(CID, BIND))
    assert Account.recover_message(message, signature=signature) == owner.address


def test_cid_signed_by_someone_else_is_refused():
    owner, mallory = identity("mo"), identity("mallory")
    blob = wrap.sign_cid(K, CID, mallory, BIND)  # mallory knows K (a validator) and re-signs
    with pytest.raises(VerificationError, match="not by the task owner"):
        wrap.open_signed_cid(K, blob, owner.address, BIND)


def test_encrypted_cid_is_bound_to_key_and_context():
    owner = identity("mo")
    blob = wrap.sign_cid(K, CID, owner, BIND)
    with pytest.raises(VerificationError):
        wrap.open_signed_cid(bytes(32), blob, owner.address, BIND)
    with pytest.raises(VerificationError):
        wrap.open_signed_cid(K, blob, owner.address, wrap.Binding(31337, 7, 3))
    bad = bytearray(blob)
    bad[20] ^= 4
    with pytest.raises(VerificationError):
        wrap.open_signed_cid(K, bytes(bad), owner.address, BIND)


def test_document_round_trip_for_many_validators():
    owner = identity("mo")
    validators = [identity(f"v{i}") for i in range(5)]
    recipients = [wrap.Recipient(v.hpke_public, v.address) for v in validators]
    doc = wrap.wrap_test_key(K, recipients, BIND, cid=CID, owner=owner)
    assert doc["format"] == "din/test-key/v1"
    assert (doc["chain_id"], doc["task"], doc["round"]) == (31337, 7, 2)
    assert [r["address"] for r in doc["recipients"]] == [v.address for v in validators]
    assert len({r["wrapped_key"] for r in doc["recipients"]}) == 5
    for v in validators:
        opened = wrap.open_test_key(doc, v, BIND, owner_address=owner.address)
        assert (opened.key, opened.cid) == (K, CID)
    assert (
        wrap.open_test_key(doc, validators[0], BIND).cid is None
    )  # no owner given: CID not opened


def test_document_refusals():
    owner, v, outsider = identity("mo"), identity("v"), identity("x")
    doc = wrap.wrap_test_key(
        K, [wrap.Recipient(v.hpke_public, v.address)], BIND, cid=CID, owner=owner
    )
    with pytest.raises(NotFoundError):
        wrap.open_test_key(doc, outsider, BIND)
    with pytest.raises(VerificationError, match="task 7"):
        wrap.open_test_key(doc, v, wrap.Binding(31337, 8, 2))
    moved = {**doc, "task": 8}  # the document edited to claim another task
    with pytest.raises(VerificationError):
        wrap.open_test_key(moved, v, wrap.Binding(31337, 8, 2))
    with pytest.raises(VerificationError):
        wrap.open_test_key(doc, v, BIND, owner_address=outsider.address)
    with pytest.raises(InputError):
        wrap.open_test_key({**doc, "format": "other"}, v, BIND)


def test_recipients_by_key_address_pair_and_resolver():
    v = identity("v")
    pub = v.hpke_public.hex()
    assert wrap.parse_recipient(pub) == wrap.Recipient(v.hpke_public)
    assert wrap.parse_recipient("0x" + pub) == wrap.Recipient(v.hpke_public)
    pair = wrap.parse_recipient(f"{v.address.lower()}:{pub}")
    assert pair == wrap.Recipient(v.hpke_public, v.address)
    registry = {v.address: v.hpke_public}  # what the chain's registry will answer
    assert wrap.parse_recipient(v.address, resolver=registry.get) == wrap.Recipient(
        v.hpke_public, v.address
    )
    with pytest.raises(NotFoundError):
        wrap.parse_recipient(identity("y").address, resolver=registry.get)
    with pytest.raises(UsageError):
        wrap.parse_recipient("not a recipient!")
    assert len(wrap.resolve_recipients([pub, pub, "0x" + pub])) == 1
    with pytest.raises(UsageError):
        wrap.resolve_recipients([])


def test_many_recipients_each_get_a_distinct_working_wrap():
    keys = [hpke.generate_keypair() for _ in range(200)]
    sealed = wrap.wrap_key(K, [pk for _, pk in keys], BIND)
    assert len(set(sealed)) == 200
    assert all(wrap.unwrap_key(s, sk, BIND) == K for s, (sk, _) in zip(sealed, keys, strict=True))


def test_hpke_rejects_bad_key_lengths():
    with pytest.raises(InputError):
        hpke.seal(b"short", K)
    with pytest.raises(VerificationError):
        hpke.unseal(os.urandom(32), b"tiny")


@pytest.mark.parametrize(
    "point",
    [
        bytes(32),
        (1).to_bytes(32, "little"),
        bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
        bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    ],
    ids=["zero", "one", "order-8", "order-8b"],
)
def test_low_order_public_key_is_refused_by_name(point):
    """A validator could register a low-order X25519 key: wrapping to it is an input error, not a crash."""
    with pytest.raises(InputError, match="low-order"):
        wrap.wrap_key(K, [hpke.generate_keypair()[1], point], BIND)


def test_document_survives_the_chain_round_trip():
    """What postTestSet stores (encrypted CID, address -> wrapped key) is enough for a validator."""
    owner, v1, v2 = identity("mo"), identity("v1"), identity("v2")
    recips = [wrap.Recipient(v.hpke_public, v.address) for v in (v1, v2)]
    doc = wrap.wrap_test_key(K, recips, BIND, cid=CID, owner=owner)
    encrypted_cid, wrapped = wrap.chain_args(doc)
    assert list(wrapped) == [v1.address, v2.address] and all(len(w) == 80 for w in wrapped.values())
    registry = {v.address: v.hpke_public for v in (v1, v2)}  # what the chain's registry answers
    rebuilt = wrap.document_from_chain(encrypted_cid, wrapped, BIND, registry.get)
    for v in (v1, v2):
        assert wrap.open_test_key(rebuilt, v, BIND, owner_address=owner.address) == wrap.OpenedKey(
            K, CID
        )
    with pytest.raises(UsageError):
        wrap.chain_args(
            wrap.wrap_test_key(K, [wrap.Recipient(v1.hpke_public)], BIND, cid=CID, owner=owner)
        )
    with pytest.raises(InputError):
        wrap.chain_args(wrap.wrap_test_key(K, recips, BIND))


# -- recomputable wraps (an owner cannot give one validator another K) ----------


def _chain_doc(validators, owner, *, key=K, resolver=None):
    """A document as postTestSet stores it, rebuilt as a validator does (keys from ``resolver``)."""
    recips = [wrap.Recipient(v.hpke_public, v.address) for v in validators]
    encrypted_cid, wrapped = wrap.chain_args(
        wrap.wrap_test_key(key, recips, BIND, cid=CID, owner=owner)
    )
    registry = {v.address: v.hpke_public for v in validators}
    return encrypted_cid, wrapped, resolver or registry.get


def test_a_wrap_is_a_function_of_k_that_every_holder_of_k_recomputes():
    owner = identity("mo")
    vals = [identity(f"v{i}") for i in range(3)]
    encrypted_cid, wrapped, resolve = _chain_doc(vals, owner)
    again = _chain_doc(vals, owner)[1]
    assert again == wrapped  # derandomised: the same K gives the same wraps
    assert _chain_doc(vals, owner, key=bytes(32))[1][vals[0].address] != wrapped[vals[0].address]
    for v in vals:
        assert wrap.wrap_for(K, BIND, v.hpke_public, v.address) == wrapped[v.address]
        assert wrap.unwrap_key(wrapped[v.address], v.hpke_private, BIND) == K  # plain RFC 9180
    assert wrap.wrap_for(K, BIND, vals[0].hpke_public) != wrapped[vals[0].address]  # address bound
    doc = wrap.document_from_chain(encrypted_cid, wrapped, BIND, resolve)
    for v in vals:
        assert wrap.open_test_key(doc, v, BIND, owner_address=owner.address) == wrap.OpenedKey(
            K, CID
        )


@pytest.mark.parametrize("tamper", ["garbage", "other-key", "random-wrap-of-k"])
def test_a_tampered_wrap_to_one_validator_is_caught_by_every_validator(tamper):
    """Garbage, a recomputable wrap of another key K', or an old-style random wrap of K itself:
    the victim and every other validator refuse alike, naming the victim's slot."""
    owner = identity("mo")
    vals = [identity(f"v{i}") for i in range(3)]
    encrypted_cid, wrapped, resolve = _chain_doc(vals, owner)
    victim = vals[1]
    wrapped[victim.address] = {
        "garbage": os.urandom(80),
        "other-key": wrap.wrap_for(bytes(range(32)), BIND, victim.hpke_public, victim.address),
        "random-wrap-of-k": hpke.seal(victim.hpke_public, K, info=BIND.info()),
    }[tamper]
    doc = wrap.document_from_chain(encrypted_cid, wrapped, BIND, resolve)
    for v in vals:
        if v is victim and tamper == "garbage":
            with pytest.raises(VerificationError) as got:
                wrap.open_test_key(doc, v, BIND, owner_address=owner.address)
            assert not isinstance(got.value, wrap.WrapMismatch)  # it cannot even open its copy
            continue
        with pytest.raises(wrap.WrapMismatch, match="does not recompute from K") as got:
            wrap.open_test_key(doc, v, BIND, owner_address=owner.address)
        if v is not victim:
            assert victim.address in got.value.message


def test_a_validator_without_a_usable_key_is_wrapped_the_documented_placeholder():
    """No registered key (withdrawn) or a low-order one: the owner wraps NO_KEY_WRAP, which every
    validator expects; anything else there, or the placeholder where a key exists, is refused."""
    owner = identity("mo")
    vals = [identity(f"v{i}") for i in range(3)]
    keyless = vals[2]
    registry = {v.address: v.hpke_public for v in vals[:2]}  # vals[2] has no (usable) key
    recips = [wrap.Recipient(registry.get(v.address), v.address) for v in vals]
    doc = wrap.wrap_test_key(K, recips, BIND, cid=CID, owner=owner)
    assert doc["recipients"][2]["hpke_public"] is None
    encrypted_cid, wrapped = wrap.chain_args(doc)
    assert wrapped[keyless.address] == wrap.NO_KEY_WRAP == bytes(80)
    rebuilt = wrap.document_from_chain(encrypted_cid, wrapped, BIND, registry.get)
    for v in vals[:2]:
        assert wrap.open_test_key(rebuilt, v, BIND).key == K
    with pytest.raises(VerificationError):  # the keyless validator opens nothing
        wrap.open_test_key(rebuilt, keyless, BIND)
    # the owner wraps a real K to the keyless validator's old key: the others refuse
    sneaky = {
        **wrapped,
        keyless.address: wrap.wrap_for(K, BIND, keyless.hpke_public, keyless.address),
    }
    with pytest.raises(wrap.WrapMismatch, match=keyless.address):
        wrap.open_test_key(
            wrap.document_from_chain(encrypted_cid, sneaky, BIND, registry.get), vals[0], BIND
        )
    # the placeholder where the registry holds a key
    lazy = {**wrapped, vals[1].address: wrap.NO_KEY_WRAP}
    with pytest.raises(wrap.WrapMismatch, match=vals[1].address):
        wrap.open_test_key(
            wrap.document_from_chain(encrypted_cid, lazy, BIND, registry.get), vals[0], BIND
        )
    with pytest.raises(UsageError):
        wrap.wrap_key(K, [wrap.Recipient(None)], BIND)


@pytest.mark.parametrize(
    "point",
    [
        bytes(32),
        (1).to_bytes(32, "little"),
        bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    ],
)
def test_usable_public_refuses_low_order_points(point):
    assert not hpke.usable_public(point)
    assert not hpke.usable_public(None) and not hpke.usable_public(b"short")
    assert hpke.usable_public(hpke.generate_keypair()[1])


def test_an_edited_off_chain_document_is_refused_by_din_keys_unwrap_too():
    """The check runs on any document: entries carry the keys they were wrapped to."""
    owner = identity("mo")
    vals = [identity(f"v{i}") for i in range(2)]
    recips = [wrap.Recipient(v.hpke_public, v.address) for v in vals]
    doc = wrap.wrap_test_key(K, recips, BIND, cid=CID, owner=owner)
    doc["recipients"][1]["wrapped_key"] = "0x" + os.urandom(80).hex()
    with pytest.raises(wrap.WrapMismatch, match=vals[1].address):
        wrap.open_test_key(doc, vals[0], BIND)
