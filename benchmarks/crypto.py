"""Benchmark din's crypto recipes against the obvious baseline, same machine, same run.

    python benchmarks/crypto.py              # 1 GiB, 10 / 1000 / 10000 validators
    python benchmarks/crypto.py --size-mib 256 --reps 2

1. File encryption (din-aead v1, 1 MiB chunks) vs one ``AESGCM.encrypt`` /
   ``decrypt`` call on the whole buffer: din's in-memory API
   (``encrypt_bytes(out=buf)``: chunks straight into one reused buffer), its
   stream API (``encrypt_stream`` from a BytesIO into a preallocated buffer:
   two extra copies) and file to file (``encrypt_file``: atomic output,
   fsync included, so the disk shows).
2. Key wrapping: ``wrap.wrap_key`` of one K for N validators (HPKE X25519,
   one fresh ephemeral key per recipient), and the whole JSON document.
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from din_cli.crypto import aead, hpke, wrap  # noqa: E402


class IntoBuffer(io.RawIOBase):
    """A writable stream that copies into one preallocated buffer (memory to memory, no growth)."""

    def __init__(self, size: int):
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.pos = 0

    def writable(self):
        return True

    def write(self, b):
        n = len(b)
        self.view[self.pos : self.pos + n] = b
        self.pos += n
        return n


def best(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        gc.collect()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def gbps(nbytes: int, seconds: float) -> str:
    return f"{nbytes / seconds / 1e9:6.2f} GB/s"


def _time_single_decrypt(g, nonce, data, reps):
    ciphertext = g.encrypt(nonce, data, None)
    return best(lambda: g.decrypt(nonce, ciphertext, None), reps)


def _time_streams(key, data, reps, threads):
    size = len(data)
    sink = IntoBuffer(aead.HEADER_LEN + size + 16 * (size // aead.DEFAULT_CHUNK + 1))

    def ours_enc():
        sink.pos = 0
        aead.encrypt_stream(io.BytesIO(data), sink, key, threads=threads)

    t_enc = best(ours_enc, reps)
    blob = bytes(sink.view[: sink.pos])
    sink = None
    out = IntoBuffer(size)

    def ours_dec():
        out.pos = 0
        aead.decrypt_stream(io.BytesIO(blob), out, key, threads=threads)

    t_dec = best(ours_dec, reps)
    assert bytes(out.view[: out.pos]) == data
    return t_enc, t_dec


def bench_files(size: int, reps: int, threads: int | None) -> None:
    key = aead.generate_key()
    data = os.urandom(size)
    nonce = os.urandom(12)
    g = AESGCM(key)
    print(
        f"## AES-256-GCM on {size / 2**30:.2f} GiB (best of {reps}; din threads: {threads or 'default'})"
    )
    t_base_enc = best(lambda: g.encrypt(nonce, data, None), reps)
    t_base_dec = _time_single_decrypt(g, nonce, data, reps)
    enc_buf = bytearray(aead.encrypted_size(size))
    t_buf_enc = best(lambda: aead.encrypt_bytes(data, key, threads=threads, out=enc_buf), reps)
    enc_buf = None
    t_buf_dec = _time_buffer_decrypt(key, data, reps, threads)
    t_ours_enc, t_ours_dec = _time_streams(key, data, reps, threads)

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as d:
        src, enc, back = Path(d, "plain"), Path(d, "plain.enc"), Path(d, "back")
        src.write_bytes(data)

        def file_enc():
            enc.unlink(missing_ok=True)
            aead.encrypt_file(src, enc, key, threads=threads)

        def file_dec():
            back.unlink(missing_ok=True)
            aead.decrypt_file(enc, back, key, threads=threads)

        t_file_enc = best(file_enc, reps)
        t_file_dec = best(file_dec, reps)

    rows = [
        ("encrypt", t_base_enc, t_buf_enc, t_ours_enc, t_file_enc),
        ("decrypt", t_base_dec, t_buf_dec, t_ours_dec, t_file_dec),
    ]
    print(
        f"{'':8} {'baseline: one AESGCM call':>26} {'din encrypt_bytes(out=)':>24} {'din stream->buffer':>19} {'din file->file+fsync':>21}"
    )
    for name, b, m, o, f in rows:
        print(
            f"{name:8} {gbps(size, b):>26} {gbps(size, m):>24} {gbps(size, o):>19} {gbps(size, f):>21}"
        )
    print()


def _time_buffer_decrypt(key, data, reps, threads):
    blob = aead.encrypt_bytes(data, key, threads=threads)
    out = bytearray(len(data))
    t = best(lambda: aead.decrypt_bytes(blob, key, threads=threads, out=out), reps)
    assert out == data
    return t


def bench_wrap(counts: list[int], reps: int) -> None:
    from eth_account import Account

    from din_cli.crypto.keystore import Identity

    key = aead.generate_key()
    binding = wrap.Binding(31337, 1, 0)
    publics = [hpke.generate_keypair()[1] for _ in range(max(counts))]
    acct = Account.create()
    owner = Identity("owner", acct.address, bytes(acct.key), *hpke.generate_keypair())
    print(f"## wrapping K for N validators (cryptography.hazmat.primitives.hpke; best of {reps})")
    print(
        f"{'N':>7} {'wrap_key':>10} {'per key':>9} {'+ signed CID, JSON doc':>24}   target: 10000 < 2 s"
    )
    for n in counts:
        recips = [wrap.Recipient(p, None) for p in publics[:n]]
        t_wrap = best(lambda r=recips: wrap.wrap_key(key, r, binding), reps)
        t_doc = best(
            lambda r=recips: wrap.wrap_test_key(key, r, binding, cid="bafkreiabc", owner=owner),
            reps,
        )
        print(f"{n:>7} {t_wrap:>9.3f}s {t_wrap / n * 1e6:>7.0f}us {t_doc:>23.3f}s")
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--validators", default="10,1000,10000")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="AES worker threads (default: up to 4, one per CPU)",
    )
    args = ap.parse_args()
    print(
        f"python {sys.version.split()[0]}, cryptography {__import__('cryptography').__version__}, {os.cpu_count()} CPUs\n"
    )
    if args.size_mib:
        bench_files(args.size_mib << 20, args.reps, args.threads)
    bench_wrap([int(x) for x in args.validators.split(",")], args.reps)


if __name__ == "__main__":
    main()
