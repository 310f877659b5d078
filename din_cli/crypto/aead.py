"""Streaming file encryption: AES-256-GCM in authenticated chunks (format ``din-aead v1``).

Layout (all integers big-endian)::

    header  48 bytes   magic "din-aead" (8) | version 0x01 (1) | reserved 0 (3)
                       | chunk size C (4, 1..64 MiB) | salt (32, random)
    chunks             ciphertext of C plaintext bytes + 16-byte tag, repeated;
                       then a final chunk of 0..C-1 plaintext bytes + tag

    file key   = HKDF-SHA256(ikm=K, salt=salt, info="din/aead/v1" || header)
    nonce(i)   = i as 11 bytes || 0x01 if chunk i is the final one else 0x00

The final chunk is always shorter than ``C`` (an empty one follows a
plaintext whose length is a multiple of ``C``), so a reader knows which chunk
must carry the final flag. Every chunk is authenticated under its index and
the final flag, and the header under the derived key, so a flipped bit, a
reordered or dropped chunk, a truncated file or appended bytes all fail with
VerificationError. A random per-file salt makes the file key unique, so one K
may encrypt many files (``din data encrypt --key K.bin``).
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable
from typing import BinaryIO

from din_cli.errors import InputError, UsageError, VerificationError
from din_cli.files import readinto_full

MAGIC = b"din-aead"
VERSION = 1
HEADER_LEN = 48
TAG_LEN = 16
KEY_LEN = 32
DEFAULT_CHUNK = 1 << 20
MAX_CHUNK = 1 << 26
_INFO = b"din/aead/v1"
_HEADER = struct.Struct(">8sB3sI32s")


def generate_key() -> bytes:
    """Return a fresh random 32-byte key K."""
    return os.urandom(KEY_LEN)


def encrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    key: bytes,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Encrypt everything ``src`` yields into ``dst``; return the plaintext byte count.

    Chunks are encrypted in place into two reused batch buffers by up to
    ``threads`` workers (AES-GCM runs without the GIL) while the previous
    batch is written, so memory stays at a few MiB whatever the file size.
    """
    _check_key(key)
    if not 1 <= chunk_size <= MAX_CHUNK:
        raise UsageError(f"chunk size {chunk_size} is out of range", f"use 1..{MAX_CHUNK} bytes")
    header = _HEADER.pack(MAGIC, VERSION, b"\0\0\0", chunk_size, os.urandom(32))
    aead = _file_cipher(key, header)
    dst.write(header)
    encrypt_into = getattr(aead, "encrypt_into", None)

    def work(index: int, plain: memoryview, final: bool, out: memoryview) -> int | bytes:
        nonce = _nonce(index, final)
        if encrypt_into is None:  # an older cryptography without the _into methods
            return aead.encrypt(nonce, bytes(plain), None)
        encrypt_into(nonce, plain, None, out)
        return len(out)

    return _pipeline(src, dst, chunk_size, +TAG_LEN, work, threads, progress)


def decrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    key: bytes,
    *,
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Decrypt a ``din-aead`` stream from ``src`` into ``dst``; return the plaintext byte count.

    Each chunk is written only after its tag verified; a stream cut short is
    detected at its end, so callers that must not release any plaintext of a
    bad file write to a temporary file first (``decrypt_file`` does).
    """
    _check_key(key)
    header = bytearray(HEADER_LEN)
    if readinto_full(src, memoryview(header)) < HEADER_LEN:
        raise VerificationError(
            "encrypted file is shorter than its header",
            "it was truncated or is not a din-encrypted file",
        )
    magic, version, reserved, chunk_size, _salt = _HEADER.unpack(header)
    if magic != MAGIC:
        raise VerificationError(
            "not a din-encrypted file (bad magic)", "encrypt it with `din data encrypt`"
        )
    if version != VERSION or reserved != b"\0\0\0" or not 1 <= chunk_size <= MAX_CHUNK:
        raise VerificationError(
            "din-encrypted file has a damaged or unsupported header",
            "it was altered or comes from a newer din",
        )
    aead = _file_cipher(key, bytes(header))
    decrypt_into = getattr(aead, "decrypt_into", None)

    def work(index: int, sealed: memoryview, final: bool, out: memoryview) -> int | bytes:
        if len(sealed) < TAG_LEN:
            raise VerificationError(
                "encrypted file ends without its final chunk", "it was truncated; fetch it again"
            )
        try:
            if decrypt_into is None:  # an older cryptography without the _into methods
                return aead.decrypt(_nonce(index, final), bytes(sealed), None)
            decrypt_into(_nonce(index, final), sealed, None, out)
            return len(out)
        except Exception:  # InvalidTag
            raise VerificationError(
                f"chunk {index} of the encrypted file does not verify",
                "the file was altered, truncated or reordered, or K is not its key",
            ) from None

    total = _pipeline(src, dst, chunk_size + TAG_LEN, -TAG_LEN, work, threads, progress)
    if src.read(1):
        raise VerificationError("encrypted file has bytes after its final chunk", "it was altered")
    return total


def encrypted_size(plain_size: int, chunk_size: int = DEFAULT_CHUNK) -> int:
    """Size of the ``din-aead`` encryption of ``plain_size`` bytes."""
    return HEADER_LEN + plain_size + TAG_LEN * (plain_size // chunk_size + 1)


def encrypt_bytes(
    data, key: bytes, *, chunk_size: int = DEFAULT_CHUNK, threads: int | None = None, out=None
) -> bytearray:
    """Encrypt an in-memory buffer chunk by chunk straight into one output buffer.

    ``out`` (optional) is a writable buffer of ``encrypted_size(len(data))``
    bytes to reuse; it is filled and returned. Memory freshly taken from the
    OS is slow to fill, so reusing one buffer is what makes this fast.
    """
    _check_key(key)
    if not 1 <= chunk_size <= MAX_CHUNK:
        raise UsageError(f"chunk size {chunk_size} is out of range", f"use 1..{MAX_CHUNK} bytes")
    src = memoryview(data).cast("B")
    count = len(src) // chunk_size + 1  # the last one is the (short or empty) final chunk
    size = encrypted_size(len(src), chunk_size)
    if out is None:
        out = bytearray(size)
    elif len(memoryview(out)) != size:
        raise UsageError(
            f"output buffer is {len(memoryview(out))} bytes, not {size}",
            "size it with aead.encrypted_size()",
        )
    header = _HEADER.pack(MAGIC, VERSION, b"\0\0\0", chunk_size, os.urandom(32))
    aead = _file_cipher(key, header)
    view = memoryview(out).cast("B")
    view[:HEADER_LEN] = header
    encrypt_into = getattr(aead, "encrypt_into", None)

    def run(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            plain = src[i * chunk_size : (i + 1) * chunk_size]
            at = HEADER_LEN + i * (chunk_size + TAG_LEN)
            nonce = _nonce(i, i == count - 1)
            if encrypt_into is None:  # an older cryptography without the _into methods
                view[at : at + len(plain) + TAG_LEN] = aead.encrypt(nonce, bytes(plain), None)
            else:
                encrypt_into(nonce, plain, None, view[at : at + len(plain) + TAG_LEN])

    _in_ranges(run, count, threads)
    return out


def decrypt_bytes(blob, key: bytes, *, threads: int | None = None, out=None) -> bytearray:
    """Decrypt an in-memory ``din-aead`` buffer chunk by chunk straight into one output buffer.

    Nothing is returned unless every chunk verified (VerificationError
    otherwise; a reused ``out`` may then hold partial plaintext, so discard
    it). ``out`` (optional) is a writable buffer of the plaintext's size
    (``len(blob)`` minus the header and tags) to reuse.
    """
    _check_key(key)
    src = memoryview(blob).cast("B")
    header = bytes(src[:HEADER_LEN])
    if len(header) < HEADER_LEN:
        raise VerificationError(
            "encrypted data is shorter than its header", "it was truncated or is not din-encrypted"
        )
    magic, version, reserved, chunk_size, _salt = _HEADER.unpack(header)
    if magic != MAGIC:
        raise VerificationError(
            "not din-encrypted data (bad magic)", "encrypt it with `din data encrypt`"
        )
    if version != VERSION or reserved != b"\0\0\0" or not 1 <= chunk_size <= MAX_CHUNK:
        raise VerificationError(
            "din-encrypted data has a damaged or unsupported header",
            "it was altered or comes from a newer din",
        )
    unit = chunk_size + TAG_LEN
    body = len(src) - HEADER_LEN
    full, last = divmod(body, unit)
    if last < TAG_LEN:  # a final chunk is always shorter than a full one, and holds a tag
        raise VerificationError(
            "encrypted data ends without its final chunk", "it was truncated; fetch it again"
        )
    count = full + 1
    size = full * chunk_size + last - TAG_LEN
    if out is None:
        out = bytearray(size)
    elif len(memoryview(out)) != size:
        raise UsageError(
            f"output buffer is {len(memoryview(out))} bytes, not {size}",
            "give one of the plaintext's size",
        )
    view = memoryview(out).cast("B")
    aead = _file_cipher(key, header)
    decrypt_into = getattr(aead, "decrypt_into", None)

    def run(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            sealed = src[HEADER_LEN + i * unit : HEADER_LEN + (i + 1) * unit]
            at = i * chunk_size
            try:
                if decrypt_into is None:  # an older cryptography without the _into methods
                    view[at : at + len(sealed) - TAG_LEN] = aead.decrypt(
                        _nonce(i, i == count - 1), bytes(sealed), None
                    )
                else:
                    decrypt_into(
                        _nonce(i, i == count - 1),
                        sealed,
                        None,
                        view[at : at + len(sealed) - TAG_LEN],
                    )
            except Exception:  # InvalidTag
                raise VerificationError(
                    f"chunk {i} of the encrypted data does not verify",
                    "it was altered, truncated or reordered, or K is not its key",
                ) from None

    _in_ranges(run, count, threads)
    return out


def _in_ranges(run, count: int, threads: int | None) -> None:
    """Call ``run(lo, hi)`` over consecutive index ranges covering ``range(count)``, on up to ``threads`` threads."""
    threads = max(1, min(count, threads if threads is not None else min(4, os.cpu_count() or 1)))
    if threads == 1:
        run(0, count)
        return
    from concurrent.futures import ThreadPoolExecutor

    bounds = [count * t // threads for t in range(threads + 1)]
    with ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(run, bounds[t], bounds[t + 1]) for t in range(threads)]:
            f.result()


def _pipeline(src, dst, unit: int, delta: int, work, threads: int | None, progress) -> int:
    """Cut ``src`` into units, transform each with ``work`` (in parallel), write results in order.

    ``work(index, unit_view, final, out_view)`` fills ``out_view`` and returns
    its length (or returns bytes of its own). The final unit is the first one
    shorter than ``unit`` (possibly empty). Batch k is read and submitted
    while batch k-1 is written, in one write when the outputs lie end to end
    in the batch buffer; two batch buffers are reused throughout. Returns the
    total output size.
    """
    from concurrent.futures import ThreadPoolExecutor

    threads = max(1, threads if threads is not None else min(4, os.cpu_count() or 1))
    per_batch = 1 if threads == 1 else 4 * threads
    out_unit = unit + delta
    slots = [(bytearray(per_batch * unit), bytearray(per_batch * out_unit)) for _ in range(2)]
    views = [(memoryview(a), memoryview(b)) for a, b in slots]
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    index = total = 0
    pending = None
    try:
        k = 0
        while True:
            inview, outview = views[k % 2]
            n = readinto_full(src, inview)
            jobs, off, j, final = [], 0, 0, False
            while True:
                m = min(unit, n - off)
                final = m < unit
                args = (
                    index,
                    inview[off : off + m],
                    final,
                    outview[j * out_unit : j * out_unit + max(0, m + delta)],
                )
                jobs.append(pool.submit(work, *args) if pool else _Done(work(*args)))
                index, off, j = index + 1, off + m, j + 1
                if final or off == len(inview):  # a final unit, or a full batch read
                    break
            if pending is not None:
                total += _write_batch(dst, *pending, progress)
            pending = (jobs, outview)
            k += 1
            if final:
                break
        total += _write_batch(dst, *pending, progress)
        return total
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


class _Done:
    """A finished result with the Future interface (the single-thread path)."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


def _write_batch(dst, jobs, outview: memoryview, progress) -> int:
    results = [job.result() for job in jobs]  # raises a worker's VerificationError, in order
    if all(isinstance(r, int) for r in results):  # filled in place: contiguous in outview
        written = sum(results)
        dst.write(outview[:written])
    else:
        written = 0
        for r in results:
            dst.write(r)
            written += len(r)
    if progress:
        progress(written)
    return written


def encrypt_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    key: bytes,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Encrypt file ``src`` to ``dst`` (``-``: stdin/stdout), written atomically."""
    from din_cli.files import atomic_output, open_input

    _check_key(key)
    with open_input(src) as fin, atomic_output(dst) as fout:
        return encrypt_stream(
            fin, fout, key, chunk_size=chunk_size, threads=threads, progress=progress
        )


def encrypt_file_new_key(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    key_out: str | os.PathLike,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> bytes:
    """Encrypt ``src`` to ``dst`` under a fresh key written to ``key_out`` (mode 600); return the key.

    The key file must not exist. Both files appear, or neither: the key is
    written only once the ciphertext is complete, before it is renamed into place.
    """
    from pathlib import Path

    from din_cli.files import atomic_output, is_stdio, open_input

    if is_stdio(key_out) and is_stdio(dst):
        raise UsageError(
            "the key and the ciphertext cannot both go to stdout", "write one of them to a file"
        )
    if not is_stdio(key_out) and Path(key_out).exists():
        raise UsageError(
            f"{key_out}: already exists", "choose another name; din never overwrites a key"
        )
    key = generate_key()
    wrote_key = False
    try:
        with open_input(src) as fin, atomic_output(dst) as fout:
            encrypt_stream(
                fin, fout, key, chunk_size=chunk_size, threads=threads, progress=progress
            )
            write_key(key_out, key)
            wrote_key = not is_stdio(key_out)
    except BaseException:
        if wrote_key:
            Path(key_out).unlink(missing_ok=True)
        raise
    return key


def decrypt_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    key: bytes,
    *,
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Decrypt file ``src`` to ``dst`` (``-``: stdin/stdout); nothing is released unless all of it verifies.

    A file output is a temp file renamed into place at the end; stdout
    receives the plaintext only after the last chunk verified (it is spooled
    in memory, then in a private temporary file, until then).
    """
    import shutil
    import sys
    import tempfile

    from din_cli.files import atomic_output, is_stdio, open_input

    _check_key(key)
    with open_input(src) as fin:
        if not is_stdio(dst):
            with atomic_output(dst, mode=0o600) as fout:
                return decrypt_stream(fin, fout, key, threads=threads, progress=progress)
        with tempfile.SpooledTemporaryFile(max_size=64 << 20) as spool:
            n = decrypt_stream(fin, spool, key, threads=threads, progress=progress)
            spool.seek(0)
            out = sys.stdout.buffer
            shutil.copyfileobj(spool, out, 1 << 20)
            out.flush()
            return n


def read_key(path: str | os.PathLike) -> bytes:
    """Read a 32-byte key K from a file (``-``: stdin): raw bytes, or 64 hex digits."""
    from din_cli.files import open_input

    with open_input(path) as f:
        data = f.read(200)
    return parse_key(data, str(path))


def parse_key(data: bytes, where: str = "key") -> bytes:
    """Return the 32-byte key held in ``data`` (raw, or hex text with optional 0x)."""
    if len(data) == KEY_LEN:
        return bytes(data)
    text = data.strip()
    if text[:2] in (b"0x", b"0X"):
        text = text[2:]
    if len(text) == 2 * KEY_LEN:
        with contextlib.suppress(ValueError):
            return bytes.fromhex(text.decode("ascii"))
    raise InputError(
        f"{where}: not a 32-byte key ({len(data)} bytes)",
        "give the file written by `din data encrypt --key-out` or `din keys unwrap -o`",
    )


def write_key(path: str | os.PathLike, key: bytes) -> None:
    """Write K as 32 raw bytes, mode 600, never overwriting (``-``: stdout)."""
    from din_cli.files import write_secret

    _check_key(key)
    write_secret(path, key)


def _check_key(key: bytes) -> None:
    if not isinstance(key, (bytes, bytearray, memoryview)) or len(key) != KEY_LEN:
        raise InputError(
            f"key must be {KEY_LEN} bytes", "use a key written by `din data encrypt --key-out`"
        )


def _file_cipher(key: bytes, header: bytes):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    salt = header[-32:]
    file_key = HKDF(
        algorithm=hashes.SHA256(), length=KEY_LEN, salt=salt, info=_INFO + header
    ).derive(bytes(key))
    return AESGCM(file_key)


def _nonce(index: int, final: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if final else b"\x00")
