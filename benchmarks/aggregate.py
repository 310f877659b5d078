"""din's bit-exact aggregation vs Flower's FedAvg ``aggregate``, side by side.

    python benchmarks/aggregate.py                 # the three issue sizes
    python benchmarks/aggregate.py --sizes 10x1e6  # N x P, quick
    python benchmarks/aggregate.py --device cpu cuda --no-flower  # the GPU path beside the CPU's

For each (N clients, P float32 parameters) it writes N identical-layout
safetensors updates once (canonical din files, which the safetensors library
reads too), then, each in a fresh process so peak RSS is its own:

- din: ``din_cli.ml.aggregate.aggregate_to`` from the files to the output
  file (written, not fsynced; page cache warm; the numba kernel compiled by
  a tiny warm-up first);
- Flower: ``flwr.server.strategy.aggregate.aggregate`` on the same updates
  already loaded in memory (loading is not timed, which favours Flower).

It prints wall seconds, GB/s of update data (N * P * 4 bytes / wall
seconds), CPU seconds (all threads; less sensitive to a busy machine), peak
RSS and the time to the first weight written, and din's target: 3x Flower's
throughput, peak RSS <= 300 MiB + 3 x one model. With ``--device`` each
device named gets its own line (``cuda``: the torch int64 path through
pinned buffers; ``torch-cpu``: the same kernel on the CPU), the output's
SHA-256 is compared with the CPU's, and for ``cuda`` the limits are printed
beside it: the measured pinned host-to-device copy rate and device-to-device
copy rate. Flower runs in its own virtual environment, never in din's: the
interpreter named by ``DIN_BENCH_FLWR_PYTHON``, else one created on first use
in ``~/.cache/din-bench/flwr-venv`` (``pip install flwr numpy``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SIZES = [(10, 10_000_000), (100, 1_000_000), (50, 10_000_000)]
MiB = 1024 * 1024

DIN_CHILD = r"""
import hashlib, json, resource, sys, time, os
from din_cli.ml import aggregate as agg
files = json.loads(sys.argv[1]); out = sys.argv[2]; repeat = int(sys.argv[3]); device = sys.argv[4]
agg._kernels()  # the libraries, loaded before the baseline: numba's kernels, torch and CUDA's context
if device != "cpu":
    import torch
    torch.empty(1, device="cuda" if device == "cuda" else "cpu")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
for k in (1, 5, 6, 7):  # warm-up: each numba kernel's compile / cache load, CUDA kernels
    agg.aggregate(files[:k], out, device=device)

class Timed:
    # the output file, noting when the first weight (the write after the header) is written
    def __init__(self, f, t0):
        self.f, self.t0, self.writes, self.first = f, t0, 0, None
    def write(self, b):
        self.writes += 1
        if self.writes == 2:
            self.first = time.perf_counter() - self.t0
        return self.f.write(b)

best = cpu = first = float("inf")
for _ in range(repeat):
    with open(out, "wb") as f:  # the canonical output file, written (not fsynced)
        t, c = time.perf_counter(), time.process_time()
        w = Timed(f, t)
        agg.aggregate_to(files, w, device=device)
        best = min(best, time.perf_counter() - t)
        cpu = min(cpu, time.process_time() - c)
        first = min(first, w.first)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
limits = {}
if device == "cuda":
    # the updates already in GPU memory: aggregate_tensors, and its bits against the file's
    from din_cli.ml import models
    states, ns = [], []
    for p in files:
        mf = models.read_model(p)
        states.append({k: torch.from_numpy(v).cuda() for k, v in mf.weights.items()})
        ns.append(mf.header.samples)
    import torch
    agg.aggregate_tensors(states[:2], ns[:2]); torch.cuda.synchronize()
    res = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        got = agg.aggregate_tensors(states, ns)
        torch.cuda.synchronize()
        res = min(res, time.perf_counter() - t)
    body = b"".join(got[k].cpu().numpy().tobytes() for k in sorted(got))
    with open(out, "rb") as f:
        data = f.read()
    limits["resident"] = res
    limits["resident_same"] = data.endswith(body) and len(data) - len(body) == 8 + int.from_bytes(data[:8], "little")
    del states, got
    import torch
    n = 1 << 28  # 1 GiB of float32
    host = torch.empty(n, dtype=torch.float32, pin_memory=True).fill_(1)
    dev = torch.empty(n, dtype=torch.float32, device="cuda")
    dev2 = torch.empty_like(dev)
    for name, dst, src in (("h2d", dev, host), ("d2d", dev2, dev)):
        dst.copy_(src); torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(5):
            dst.copy_(src, non_blocking=True)
        torch.cuda.synchronize()
        limits[name] = 5 * n * 4 / (time.perf_counter() - t) / 1e9
with open(out, "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()
print(json.dumps({"seconds": best, "cpu": cpu, "first": first, "peak_rss": peak, "base_rss": base, "kernel": agg.kernel_name() if device == "cpu" else "torch " + device, "threads": agg.default_threads(), "sha256": digest, "limits": limits}))
"""

FLWR_CHILD = r"""
import json, resource, sys, time
import numpy as np
from safetensors.numpy import load_file
from flwr.server.strategy.aggregate import aggregate
files = json.loads(sys.argv[1]); samples = json.loads(sys.argv[2]); repeat = int(sys.argv[3])
aggregate([([np.ones(3, np.float32)], 1)])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
results = []
for f, n in zip(files, samples):
    d = load_file(f)
    results.append(([d[k] for k in sorted(d)], n))
dt = cpu = float("inf")
for _ in range(repeat):
    t, c = time.perf_counter(), time.process_time()
    out = aggregate(results)
    dt = min(dt, time.perf_counter() - t)
    cpu = min(cpu, time.process_time() - c)
    del out
print(json.dumps({"seconds": dt, "cpu": cpu, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "base_rss": base}))
"""


def flwr_python() -> str:
    named = os.environ.get("DIN_BENCH_FLWR_PYTHON")
    if named:
        return named
    venv = Path.home() / ".cache" / "din-bench" / "flwr-venv"
    py = venv / "bin" / "python"
    if not py.exists():
        print(f"creating {venv} with flwr (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "flwr", "numpy", "safetensors"], check=True
        )
    probe = subprocess.run([str(py), "-c", "import safetensors"], capture_output=True)
    if probe.returncode:
        subprocess.run([str(py), "-m", "pip", "install", "-q", "safetensors"], check=True)
    return str(py)


def make_inputs(folder: Path, n: int, p: int) -> tuple[list[str], list[int]]:
    import numpy as np

    from din_cli.ml import tensorfile

    arch = f"logreg:{p // 1000 - 1}-1000"  # (IN x 1000) weight + 1000 bias = p parameters
    rows = p // 1000 - 1
    rng = np.random.default_rng(0)
    base_w = (rng.standard_normal((1000, rows)) * 0.05).astype(np.float32)
    base_b = (rng.standard_normal(1000) * 0.05).astype(np.float32)
    files, samples = [], []
    for i in range(n):
        noise = np.float32(1 + 0.01 * i)
        w = {"layers.0.weight": base_w * noise, "layers.0.bias": base_b * noise}
        s = int(rng.integers(10, 5000))
        path = folder / f"u{i:03d}.safetensors"
        tensorfile.write(
            path, w, tensorfile.make_metadata(arch=arch, kind="update", samples=s, round=1)
        )
        files.append(str(path))
        samples.append(s)
    return files, samples


def run_child(python: str, code: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([python, "-c", code, *args], capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"benchmark child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="*", help="NxP pairs, e.g. 10x1e7 100x1e6")
    ap.add_argument("--no-flower", action="store_true", help="time din only")
    ap.add_argument(
        "--cli",
        action="store_true",
        help="also time a fresh `din aggregate --device D` process per device (start-up included)",
    )
    ap.add_argument(
        "--device",
        nargs="+",
        default=["cpu"],
        choices=["cpu", "cuda", "torch-cpu"],
        help="din's devices to time, each on its own line (default: cpu)",
    )
    ap.add_argument("--dir", help="folder for the generated updates (default: a temp folder)")
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="timed runs per measurement; the fastest counts (default 3)",
    )
    args = ap.parse_args()
    sizes = (
        [(int(a), int(float(b))) for a, b in (s.lower().split("x") for s in args.sizes)]
        if args.sizes
        else SIZES
    )
    fpy = None if args.no_flower else flwr_python()
    print(
        f"{'N':>4} {'P':>11} {'GB':>6} {'device':>9} | {'din s':>7} {'GB/s':>6} {'cpu s':>6} {'1st s':>6} {'peak MiB':>9} {'+MiB':>5} {'limit':>6} {'bytes':>6} | {'flwr s':>7} {'GB/s':>6} {'cpu s':>6} {'peak MiB':>9} | {'speedup':>7} {'cpu':>5}"
    )
    kernels = {}
    for n, p in sizes:
        with tempfile.TemporaryDirectory(dir=args.dir) as d:
            folder = Path(d)
            files, samples = make_inputs(folder, n, p)
            size = n * p * 4
            fl = None
            if fpy:
                fl = run_child(
                    fpy, FLWR_CHILD, json.dumps(files), json.dumps(samples), str(args.repeat)
                )
            digests = {}
            for device in args.device:
                din = run_child(
                    sys.executable,
                    DIN_CHILD,
                    json.dumps(files),
                    str(folder / "out.safetensors"),
                    str(args.repeat),
                    device,
                )
                kernels[device] = din
                digests[device] = din["sha256"]
                same = "same" if din["sha256"] == digests[args.device[0]] else "DIFFER"
                limit = 300 * MiB + 3 * p * 4
                line = f"{n:>4} {p:>11,} {size / 1e9:>6.2f} {device:>9} | {din['seconds']:>7.3f} {size / din['seconds'] / 1e9:>6.2f} {din['cpu']:>6.3f} {din['first']:>6.3f} {din['peak_rss'] / MiB:>9.0f} {(din['peak_rss'] - din['base_rss']) / MiB:>5.0f} {limit / MiB:>6.0f} {same:>6}"
                if fl:
                    line += f" | {fl['seconds']:>7.3f} {size / fl['seconds'] / 1e9:>6.2f} {fl['cpu']:>6.3f} {fl['peak_rss'] / MiB:>9.0f} | {fl['seconds'] / din['seconds']:>6.1f}x {fl['cpu'] / din['cpu']:>4.1f}x"
                print(line, flush=True)
                if din["limits"]:
                    lim = din["limits"]
                    same = "same" if lim["resident_same"] else "DIFFER"
                    print(
                        f"{n:>4} {p:>11,} {size / 1e9:>6.2f} {'resident':>9} | {lim['resident']:>7.3f} {size / lim['resident'] / 1e9:>6.1f} {'':>6} {'':>6} {'':>9} {'':>5} {'':>6} {same:>6}   (updates already in GPU memory: aggregate_tensors)\n"
                        f"{'':>33}limits on this GPU: pinned host-to-device copy {lim['h2d']:.1f} GB/s, device-to-device copy {lim['d2d']:.0f} GB/s",
                        flush=True,
                    )
            if args.cli:
                for device in [d for d in args.device if d != "torch-cpu"]:
                    t = time.perf_counter()
                    subprocess.run(
                        [sys.executable, "-m", "din_cli", "aggregate", "--device", device]
                        + files
                        + ["-o", str(folder / "cli.safetensors")],
                        check=True,
                        stdout=subprocess.DEVNULL,
                        env={**os.environ, "PYTHONPATH": str(REPO)},
                    )
                    print(
                        f"{n:>4} {p:>11,} {size / 1e9:>6.2f} {device:>9} | {time.perf_counter() - t:>7.3f}  a fresh `din aggregate --device {device}` process: start-up, imports, CUDA, reading, writing",
                        flush=True,
                    )
    for device, din in kernels.items():
        print(
            f"din on {device}: kernel {din['kernel']}, {din['threads']} threads; best of {args.repeat} runs; 1st s = time to the first weight written; peak RSS includes the interpreter and libraries (baseline {din['base_rss'] / MiB:.0f} MiB; +MiB: the peak above it, the buffers); bytes: the output's SHA-256 against the first device's"
        )


if __name__ == "__main__":
    main()
