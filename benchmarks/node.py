"""A validator node's cost per round and its memory over many rounds.

    python benchmarks/node.py                     # 50 rounds, embedded chain
    python benchmarks/node.py --rounds 10 --chain http://127.0.0.1:8545

One task, 6 participants in one subgroup (digits, logreg:64-10, 1 epoch a
round), run by three `din node run` processes: the owner, the participants
and one validator (validators per subgroup: 1). As each round opens, the
script reads the validator process's CPU time (user + system, from
/proc/PID/stat) and resident memory (VmRSS); it stops the nodes when the task
reaches its test set, so evaluation is not counted. A validator does not
train, so its CPU per round is its whole work: polling the chain, fetching
and aggregating the subgroup's updates (the admission rule included),
committing, revealing, attesting, and auditing the accepted aggregate.

Targets (issue 13): under 1 s of CPU per round for a 6-participant subgroup,
and no growth in memory from round to round over 50 rounds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--chain", default=None, help="JSON-RPC URL (default: the embedded chain)")
    ap.add_argument("--poll", type=float, default=1.0, help="the nodes' --poll")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--profile", metavar="FILE", help="run the validator under cProfile into FILE")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="din-node-bench-"))
    env = {**os.environ, "DIN_HOME": str(work / ".din")}
    env.pop("DIN_KEY", None)
    if args.chain:
        env["DIN_CHAIN"] = args.chain
    os.environ.update({k: v for k, v in env.items() if k.startswith("DIN_")})

    def din(*a: str) -> str:
        p = subprocess.run(
            [sys.executable, "-m", "din_cli", *a], cwd=work, env=env, capture_output=True, text=True
        )
        if p.returncode:
            sys.exit(f"din {' '.join(a)}: {p.stderr.strip()}")
        return p.stdout.strip()

    din("init", "--dev-accounts", "8", "-q")
    din("data", "split", "--dataset", "digits", "--participants", "6", "--alpha", "0.5",
        "--seed", "1", "--out", "stores")  # fmt: skip
    din("model", "init", "--arch", "logreg:64-10", "--seed", "0", "-o", "genesis.safetensors")
    task = din(
        "model", "publish", "genesis.safetensors", "--test-set", "stores/test.npz",
        "--deposit", "100", "--subgroup-size", "6", "--validators-per-subgroup", "1",
        "--rounds", str(args.rounds), "--key", "dev1", "-q",
    )  # fmt: skip
    base = [sys.executable, "-m", "din_cli", "node", "run", "--task", task, "-q",
            "--poll", str(args.poll)]  # fmt: skip
    parts = [f"--participant=dev{i + 2}=stores/participant-0{i + 1}.npz" for i in range(6)]
    specs = {
        "owner": ["--owner", "dev1", "--test-set", "stores/test.npz", "--min-participants", "6"],
        "participants": ["--name", "participants", *parts, "--lr", "0.5"],
        "validator": ["--validator", "dev8", "--stake", "100"],
    }
    logs = {n: open(work / f"{n}.log", "wb") for n in specs}
    profiled = base
    if args.profile:
        profiled = [sys.executable, "-m", "cProfile", "-o", str(Path(args.profile).resolve())]
        profiled += base[1:]
    procs = {
        n: subprocess.Popen(
            (profiled if n == "validator" else base) + a,
            cwd=work,
            env=env,
            stderr=logs[n],
            stdout=subprocess.DEVNULL,
        )
        for n, a in specs.items()
    }
    val = procs["validator"].pid
    samples: list[tuple[int, float, float, float]] = []  # round, wall, cpu, rss
    from din_cli.protocol.context import open_context

    t0 = time.monotonic()
    try:
        with open_context(args.chain) as ctx:
            seen = 0
            while True:
                for n, p in procs.items():
                    if p.poll() is not None:
                        sys.exit(f"node {n} exited {p.returncode}: see {work / (n + '.log')}")
                info = ctx.din.task_info(int(task))
                if info.phase == "training" and info.round > seen:
                    seen = info.round
                    samples.append((seen, time.monotonic() - t0, cpu_seconds(val), rss_mib(val)))
                    print(f"round {seen}: {samples[-1][1]:.1f} s", file=sys.stderr, end="\r")
                if info.phase in ("test-set", "score-commit", "abandoned"):
                    samples.append(
                        (seen + 1, time.monotonic() - t0, cpu_seconds(val), rss_mib(val))
                    )
                    break
                time.sleep(0.2)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            p.wait()
    cpu = [b[2] - a[2] for a, b in zip(samples, samples[1:], strict=False)]
    walls = [b[1] - a[1] for a, b in zip(samples, samples[1:], strict=False)]
    rss = [s[3] for s in samples[:-1]]
    n = len(cpu)
    half = max(1, n // 2)
    print(
        f"\nvalidator node, {n} rounds of a 6-participant subgroup ({'anvil/' + args.chain if args.chain else 'embedded chain'})"
    )
    print(f"{'':28}{'median':>10}{'p90':>10}{'max':>10}")
    q = lambda xs, f: sorted(xs)[min(len(xs) - 1, int(f * len(xs)))]  # noqa: E731
    print(
        f"{'CPU s per round':28}{statistics.median(cpu):>10.3f}{q(cpu, 0.9):>10.3f}{max(cpu):>10.3f}"
    )
    print(
        f"{'wall s per round':28}{statistics.median(walls):>10.2f}{q(walls, 0.9):>10.2f}{max(walls):>10.2f}"
    )
    print(
        f"CPU s per round, first half {statistics.mean(cpu[:half]):.3f}, second half {statistics.mean(cpu[half:]):.3f}"
    )
    marks = sorted({1, 5, 10, 25, n} & set(range(1, n + 1)))
    print("RSS MiB at round " + ", ".join(f"{r}: {rss[r - 1]:.0f}" for r in marks))
    if n >= 10:
        xs = list(range(5, n + 1))
        ys = rss[4:]
        mx, my = statistics.mean(xs), statistics.mean(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
            (x - mx) ** 2 for x in xs
        )
        print(f"RSS growth from round 5 on: {slope * 1024:.1f} KiB per round")
    print("target: CPU < 1 s per round; no per-round growth in memory")
    if args.keep:
        print(f"work folder: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
