"""din-aead v1 streaming encryption: round trips, the documented layout, and every kind of tampering."""

from __future__ import annotations

import io
import os
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from din_cli.crypto import aead
from din_cli.errors import InputError, UsageError, VerificationError

KEY = bytes(range(32))


def enc(data: bytes, key: bytes = KEY, chunk: int = 16, threads: int | None = None) -> bytes:
    out = io.BytesIO()
    aead.encrypt_stream(io.BytesIO(data), out, key, chunk_size=chunk, threads=threads)
    return out.getvalue()


def dec(blob: bytes, key: bytes = KEY, threads: int | None = None) -> bytes:
    out = io.BytesIO()
    aead.decrypt_stream(io.BytesIO(blob), out, key, threads=threads)
    return out.getvalue()


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=300), chunk=st.integers(1, 40))
def test_round_trip_any_length_any_chunk_size(data, chunk):
    blob = enc(data, chunk=chunk)
    # one tag per chunk, always a final chunk shorter than C
    assert len(blob) == aead.HEADER_LEN + len(data) + 16 * (len(data) // chunk + 1)
    assert dec(blob) == data


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_counts_give_the_same_format(threads):
    """One worker or several, batches of any fill: every file opens with every setting."""
    for n in (0, 15, 16, 16 * 6, 16 * 12, 16 * 12 + 1, 16 * 24, 1000):
        data = os.urandom(n)
        blob = enc(data, threads=threads)
        for t in (1, 2, 3):
            assert dec(blob, threads=t) == data
        if n >= 48:
            swapped = blob[:48] + blob[80:112] + blob[48:80] + blob[112:]
            with pytest.raises(VerificationError):
                dec(swapped, threads=threads)
            with pytest.raises(VerificationError):
                dec(
                    blob[: 48 + 32 * (n // 16)], threads=threads
                )  # all full chunks, final one dropped


def test_layout_matches_the_documented_format():
    """Decrypt with nothing but the documented construction (HKDF + AESGCM + nonces)."""
    data = os.urandom(50)
    blob = enc(data, chunk=20)
    header = blob[:48]
    magic, version, reserved, chunk, salt = struct.unpack(">8sB3sI32s", header)
    assert (magic, version, reserved, chunk) == (b"din-aead", 1, b"\0\0\0", 20)
    file_key = HKDF(hashes.SHA256(), 32, salt=salt, info=b"din/aead/v1" + header).derive(KEY)
    g = AESGCM(file_key)
    body, plain = blob[48:], b""
    sizes = [20, 20, 10]
    for i, n in enumerate(sizes):
        nonce = i.to_bytes(11, "big") + (b"\x01" if i == len(sizes) - 1 else b"\x00")
        plain += g.decrypt(nonce, body[: n + 16], None)
        body = body[n + 16 :]
    assert plain == data and body == b""


def test_exact_multiple_gets_an_empty_final_chunk():
    blob = enc(b"x" * 32, chunk=16)
    assert len(blob) == 48 + 3 * 16 + 32
    assert dec(blob) == b"x" * 32


def test_same_key_same_plaintext_gives_different_files():
    assert enc(b"hello") != enc(b"hello")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(min_size=0, max_size=80), where=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_any_flipped_bit_is_refused(data, where, bit):
    blob = bytearray(enc(data, chunk=16))
    blob[where % len(blob)] ^= 1 << bit
    with pytest.raises(VerificationError):
        dec(bytes(blob))


@pytest.mark.parametrize("cut", [0, 1, 47, 48, 49, 48 + 32, 48 + 32 + 5, -1, -16, -17])
def test_truncation_is_refused(cut):
    blob = enc(os.urandom(40), chunk=16)  # chunks of 32, 32, 24 bytes
    with pytest.raises(VerificationError):
        dec(blob[:cut])


def test_dropping_the_final_chunk_at_a_boundary_is_refused():
    blob = enc(b"a" * 32, chunk=16)  # two full chunks + empty final
    with pytest.raises(VerificationError, match="final chunk"):
        dec(blob[: 48 + 64])


def test_swapped_and_duplicated_chunks_are_refused():
    blob = enc(b"A" * 16 + b"B" * 16 + b"C" * 5, chunk=16)
    c0, c1, rest = blob[48:80], blob[80:112], blob[112:]
    for body in (c1 + c0 + rest, c0 + c0 + rest, c0 + rest):
        with pytest.raises(VerificationError):
            dec(blob[:48] + body)


def test_appended_bytes_are_refused():
    blob = enc(b"hello", chunk=16)
    for extra in (b"\0", os.urandom(40)):
        with pytest.raises(VerificationError):
            dec(blob + extra)


def test_wrong_key_is_refused():
    with pytest.raises(VerificationError):
        dec(enc(b"hello"), key=bytes(32))


def test_not_an_encrypted_file_is_refused():
    with pytest.raises(VerificationError, match="not a din-encrypted file"):
        dec(b"x" * 100)


def test_bad_key_and_chunk_sizes_are_input_errors():
    with pytest.raises(InputError):
        enc(b"x", key=b"short")
    with pytest.raises(UsageError):
        enc(b"x", chunk=0)


def test_decrypt_file_writes_nothing_when_verification_fails(tmp_path, capfdbinary):
    src = tmp_path / "f.enc"
    blob = bytearray(enc(os.urandom(100), chunk=16))
    blob[-1] ^= 1  # only the last chunk is bad: earlier chunks verify
    src.write_bytes(bytes(blob))
    out = tmp_path / "plain"
    with pytest.raises(VerificationError):
        aead.decrypt_file(src, out, KEY)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [src]  # no temp file left behind
    with pytest.raises(VerificationError):
        aead.decrypt_file(src, "-", KEY)  # stdout: spooled, never released
    assert capfdbinary.readouterr().out == b""


def test_encrypt_file_new_key_refuses_to_overwrite_a_key(tmp_path):
    (tmp_path / "in").write_bytes(b"data")
    (tmp_path / "K.bin").write_bytes(b"old key")
    with pytest.raises(UsageError):
        aead.encrypt_file_new_key(tmp_path / "in", tmp_path / "out", tmp_path / "K.bin")
    assert (tmp_path / "K.bin").read_bytes() == b"old key"
    assert not (tmp_path / "out").exists()


def test_large_chunks_round_trip_through_files(tmp_path):
    data = os.urandom((3 << 20) + 123)
    (tmp_path / "in").write_bytes(data)
    key = aead.encrypt_file_new_key(tmp_path / "in", tmp_path / "in.enc", tmp_path / "K.bin")
    assert (tmp_path / "K.bin").stat().st_mode & 0o777 == 0o600
    assert aead.read_key(tmp_path / "K.bin") == key
    aead.decrypt_file(tmp_path / "in.enc", tmp_path / "out", key)
    assert (tmp_path / "out").read_bytes() == data


def test_key_files_may_be_raw_or_hex():
    assert aead.parse_key(KEY) == KEY
    assert aead.parse_key(("0x" + KEY.hex() + "\n").encode()) == KEY
    with pytest.raises(InputError):
        aead.parse_key(b"0x1234")


def test_works_without_encrypt_into(monkeypatch):
    """An older cryptography without encrypt_into/decrypt_into reads and writes the same format."""
    data = os.urandom(70)
    blob = enc(data)
    monkeypatch.delattr(AESGCM, "encrypt_into", raising=False)
    monkeypatch.delattr(AESGCM, "decrypt_into", raising=False)
    assert dec(blob) == data
    assert dec(enc(data)) == data
    assert aead.decrypt_bytes(blob, KEY) == data
    assert dec(bytes(aead.encrypt_bytes(data, KEY, chunk_size=16))) == data


class Trickle(io.RawIOBase):
    """A pipe-like reader that returns a few bytes per call."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def readable(self):
        return True

    def readinto(self, b):
        n = min(7, len(b), len(self.data) - self.pos)
        b[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


@pytest.mark.parametrize("threads", [1, 2])
def test_short_reads_from_pipes_are_filled(threads):
    data = os.urandom(333)
    out = io.BytesIO()
    aead.encrypt_stream(Trickle(data), out, KEY, chunk_size=32, threads=threads)
    back = io.BytesIO()
    aead.decrypt_stream(Trickle(out.getvalue()), back, KEY, threads=threads)
    assert back.getvalue() == data
    assert len(out.getvalue()) == 48 + 333 + 16 * (333 // 32 + 1)


@pytest.mark.parametrize("threads", [1, 3])
def test_in_memory_api_is_the_same_format(threads):
    for n in (0, 5, 16, 33, 16 * 9):
        data = os.urandom(n)
        blob = aead.encrypt_bytes(data, KEY, chunk_size=16, threads=threads)
        assert dec(bytes(blob)) == data  # the stream reader opens it
        assert aead.decrypt_bytes(enc(data), KEY, threads=threads) == data  # and it opens streams
        assert aead.decrypt_bytes(blob, KEY, threads=threads) == data
        for cut in (len(blob) - 1, len(blob) - 16, 48 + 32 * (n // 16)):
            if 0 < cut < len(blob):
                with pytest.raises(VerificationError):
                    aead.decrypt_bytes(blob[:cut], KEY, threads=threads)
        bad = bytearray(blob)
        bad[len(bad) // 2] ^= 2
        with pytest.raises(VerificationError):
            aead.decrypt_bytes(bad, KEY, threads=threads)


def test_in_memory_api_reuses_a_given_buffer():
    data = os.urandom(100)
    buf = bytearray(aead.encrypted_size(100, 16))
    assert aead.encrypt_bytes(data, KEY, chunk_size=16, out=buf) is buf
    out = bytearray(100)
    assert aead.decrypt_bytes(buf, KEY, out=out) is out and out == data
    with pytest.raises(UsageError):
        aead.encrypt_bytes(data, KEY, chunk_size=16, out=bytearray(10))
    with pytest.raises(UsageError):
        aead.decrypt_bytes(buf, KEY, out=bytearray(99))
