"""Content store benchmark: only-hash add throughput and peak memory, din vs baselines.

    python benchmarks/store.py                 # 1 GiB file, 3 repeats
    python benchmarks/store.py --size-mib 2048 # the 2 GiB streaming check

Throughput: `din ipfs add --only-hash` (library call, from a file in the page
cache) against hashlib.sha256 over the same bytes read the same way, for one
hashing thread and for the default thread count. Reference figures on this
kind of machine (DESIGN.md): Kubo only-hash ~0.65 GB/s, a Python importer
1.47 GB/s, sha256 1.8 GB/s.

Memory: peak RSS of a fresh process adding the file to a LocalStore and
reading it back (cat to /dev/null), next to the same process's RSS before it
touched the file, for two file sizes: if memory does not grow with the file,
the peaks match.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MiB = 1 << 20


def make_file(path: Path, size: int) -> None:
    block = os.urandom(16 * MiB)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, len(block))
            f.write(block[:n] if n < len(block) else block)
            # vary the blocks so no two chunks are equal (dedup would flatter the store)
            block = hashlib.sha256(block[:64]).digest() + block[32:]
            left -= n


def sha256_file(path: Path) -> float:
    h = hashlib.sha256()
    buf = bytearray(4 * MiB)
    mv = memoryview(buf)
    t = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(mv):
            h.update(mv[:n])
    return time.perf_counter() - t


def din_only_hash(path: Path, threads: int) -> float:
    from din_cli.store.unixfs import import_stream

    t = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        import_stream(f, cid_version=1, put=None, threads=threads)
    return time.perf_counter() - t


MEM_CHILD = r"""
import os, sys, time
sys.path.insert(0, sys.argv[1])
from din_cli.store.local import LocalStore
def status(field):  # VmHWM, not ru_maxrss: that one inherits the forking parent's peak
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) / 1024
def rss_now():
    return status('VmRSS')
store = LocalStore(sys.argv[3])
base = rss_now()
t = time.perf_counter()
cid = store.add(sys.argv[2])
t_add = time.perf_counter() - t
peak_add = status('VmHWM')
t = time.perf_counter()
with open(os.devnull, 'wb') as out:
    for piece in store.cat(cid):
        out.write(piece)
t_cat = time.perf_counter() - t
peak = status('VmHWM')
print(f"{base:.0f} {peak_add:.0f} {peak:.0f} {t_add:.2f} {t_cat:.2f} {cid}")
"""


def memory_run(path: Path, blocks: Path) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", MEM_CHILD, str(REPO), str(path), str(blocks)],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.split()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024, help="file size for the runs (MiB)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=None, help="scratch folder (default: a temp folder)")
    args = ap.parse_args()
    size = args.size_mib * MiB

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        big = tmp / "big.bin"
        make_file(big, size)
        sha256_file(big)  # warm the page cache

        from din_cli.store.unixfs import hash_threads

        nthreads = hash_threads()
        best = {"sha256": 1e9, "din1": 1e9, "dinN": 1e9}
        for _ in range(args.repeats):
            best["sha256"] = min(best["sha256"], sha256_file(big))
            best["din1"] = min(best["din1"], din_only_hash(big, 1))
            best["dinN"] = min(best["dinN"], din_only_hash(big, nthreads))
        gbs = {k: size / v / 1e9 for k, v in best.items()}
        print(
            f"only-hash add of {args.size_mib} MiB from the page cache (best of {args.repeats}), cpu_count={os.cpu_count()}"
        )
        print(f"  {'hashlib.sha256 (1 thread, same reads)':45s} {gbs['sha256']:6.2f} GB/s")
        print(f"  {'din ipfs add --only-hash, 1 thread':45s} {gbs['din1']:6.2f} GB/s")
        print(f"  {f'din ipfs add --only-hash, {nthreads} threads':45s} {gbs['dinN']:6.2f} GB/s")
        print(f"  {'reference: Kubo ipfs add --only-hash':45s} {0.65:6.2f} GB/s")
        print(f"  {'reference: a Python importer':45s} {1.47:6.2f} GB/s")

        small = tmp / "small.bin"
        make_file(small, max(size // 8, 64 * MiB))
        print("\npeak RSS of a fresh process: add to a LocalStore, then cat to /dev/null")
        print(
            f"  {'file':>10s} {'RSS before':>11s} {'peak add':>9s} {'peak add+cat':>13s} {'add s':>7s} {'cat s':>7s}"
        )
        for path in (small, big):
            base, peak_add, peak, t_add, t_cat, _cid = memory_run(path, tmp / f"blocks-{path.stem}")
            mib = path.stat().st_size // MiB
            print(
                f"  {mib:>6d} MiB {base:>8s} MiB {peak_add:>5s} MiB {peak:>9s} MiB {t_add:>7s} {t_cat:>7s}"
            )
        print("  (memory flat when the two rows' peaks match; the file itself is never held)")


if __name__ == "__main__":
    main()
