"""Robust aggregation rules (``din aggregate --rule``) vs today's weighted mean, side by side.

    python benchmarks/robust.py                  # 100 updates of a 1M-parameter model
    python benchmarks/robust.py --n 20 --params 200000 --threads 1

It writes N canonical updates of an ``mlp`` with about P float32 parameters
(plus a starting model) once, then runs each rule in a fresh process, so
peak RSS is its own: ``mean`` (``ml.aggregate``), ``norm-bounded`` (two
passes: exact norms, then the clipped mean), ``trimmed-mean`` (trim 0.1) and
``median``. Each child first warms the numba kernel on a tiny model. It
prints wall seconds, CPU seconds (all threads), peak RSS and the throughput
in GB/s of update data read (N * P * 4 bytes per pass).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024

CHILD = r"""
import json, os, resource, sys, time
from din_cli.ml import aggregate as agg, robust
paths, base, rule, threads, out = json.loads(sys.argv[1])
kw = {"trim": 0.1} if rule == "trimmed-mean" else {}
if rule == "norm-bounded":
    kw = {"base": base, "clip_norm": 20.0}  # honest deltas ~10, poisoners ~1000
agg._kernels()  # numba's kernels for every size (a one-shot process would take numpy's for small inputs)
robust.aggregate(paths[:7], out, rule=rule, threads=threads, **kw)  # warm the kernel, page cache
t0, c0 = time.perf_counter(), time.process_time()
res = robust.aggregate(paths, out, rule=rule, threads=threads, **kw)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
clipped = len(getattr(res, "clipped", []))
print(json.dumps({"wall": wall, "cpu": cpu, "rss": rss, "kernel": agg.kernel_name(), "clipped": clipped}))
"""


def _write_updates(folder: Path, n: int, params: int) -> tuple[list[str], str, str]:
    import numpy as np

    from din_cli.ml import tensorfile, zoo

    hidden = max(1, params // 1011)  # mlp:1000-H-10: 1011 H + 10 weights
    arch = f"mlp:1000-{hidden}-10"
    shapes = zoo.param_shapes(arch)
    rng = np.random.default_rng(0)
    start = {k: (rng.standard_normal(s) * 0.05).astype(np.float32) for k, s in shapes.items()}

    def write(path, w, samples, kind):
        meta = tensorfile.make_metadata(arch=arch, kind=kind, samples=samples, round=1, task="b")
        tensorfile.write(path, w, meta)
        return str(path)

    base = write(folder / "start.safetensors", start, 1, "model")
    paths = []
    for i in range(n):
        w = {
            k: (v + rng.standard_normal(v.shape).astype(np.float32) * 0.01)
            for k, v in start.items()
        }
        if i % 10 == 9:  # every tenth a scaled poisoner, so norm-bounded clips something
            w = {k: start[k] + 100 * (w[k] - start[k]) for k in w}
        paths.append(write(folder / f"u{i:03d}.safetensors", w, 100 + i, "update"))
    return paths, base, arch


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="updates")
    ap.add_argument("--params", type=int, default=1_000_000, help="parameters per model, about")
    ap.add_argument(
        "--threads", type=int, default=None, help="worker threads (default: DIN_THREADS or CPUs)"
    )
    args = ap.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.TemporaryDirectory(prefix="din-bench-robust-") as tmp:
        folder = Path(tmp)
        paths, base, arch = _write_updates(folder, args.n, args.params)
        from din_cli.ml import zoo

        params = sum(int(__import__("math").prod(s)) for s in zoo.param_shapes(arch).values())
        gb = args.n * params * 4 / 1e9
        print(f"{args.n} updates of {arch} ({params:,} float32 parameters, {gb:.2f} GB per pass)")
        print(
            f"{'rule':<14}{'wall s':>9}{'cpu s':>9}{'GB/s':>8}{'peak RSS MiB':>14}{'clipped':>9}  kernel"
        )
        for rule in ("mean", "norm-bounded", "trimmed-mean", "median"):
            out = str(folder / f"{rule}.safetensors")
            spec = json.dumps([paths, base, rule, args.threads, out])
            done = subprocess.run(
                [sys.executable, "-c", CHILD, spec], env=env, capture_output=True, text=True
            )
            if done.returncode:
                print(f"{rule}: failed: {done.stderr.strip().splitlines()[-1]}")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            passes = 2 if rule == "norm-bounded" else 1
            print(
                f"{rule:<14}{r['wall']:>9.2f}{r['cpu']:>9.2f}{passes * gb / r['wall']:>8.2f}"
                f"{r['rss'] / MiB:>14.0f}{r['clipped']:>9}  {r['kernel']}"
            )


if __name__ == "__main__":
    main()
