"""Scale runs of `din simulate` (issue 14), each beside Flower's simulation engine on the same job.

    python benchmarks/scale/run.py n100 n1000          # din, then Flower, for each scenario
    python benchmarks/scale/run.py n10000 --no-flower   # din only
    python benchmarks/scale/run.py n100 --flower-only benchmarks/scale/runs/n100

For each scenario ``benchmarks/scale/NAME.toml`` it runs ``din simulate`` in
``benchmarks/scale/runs/NAME`` (not committed), copies the report to
``benchmarks/scale/NAME.json`` and its plots to ``NAME.png``, then runs the
same federated job on Flower's simulation engine (``flwr.simulation.
run_simulation`` on Ray, one virtual SuperNode per participant store din's
run cut, the same genesis model, local epochs, learning rate, batch size and
rounds, FedAvg over every store each round; the child is
``benchmarks/vs_flower.py``'s, in Flower's own venv) and records its wall
time and per-round accuracy under ``"flower"`` in the same JSON. Flower is
given as long as din took (at least 10 minutes); if it cannot finish the
rounds in that time, the rounds it finished are reported. Flower trains every
store every round with no chain, no store, no validators, no evaluation and
no settlement: it is the cost of the training alone on the same engine.

Prints one Markdown table of the runs side by side (figures from the JSON
files); ``--table`` prints it without running anything.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def run_din(name: str) -> Path:
    out = HERE / "runs" / name
    if out.exists():
        shutil.rmtree(out)
    cmd = [
        sys.executable,
        "-m",
        "din_cli",
        "simulate",
        str(HERE / f"{name}.toml"),
        "--out",
        str(out),
    ]
    print(f"== din simulate {name}", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)
    shutil.copy(out / "report.json", HERE / f"{name}.json")
    shutil.copy(out / "report.png", HERE / f"{name}.png")
    return out


FLOWER_CHILD = r"""
import json, sys, time, threading
sys.path.insert(0, sys.argv[1])
import vs_flower
config = json.load(open(sys.argv[2]))
vs_flower.flower_child(config)
"""


def run_flower(name: str, out: Path, limit: float) -> dict:
    sys.path.insert(0, str(REPO / "benchmarks"))
    import torch
    from vs_flower import flower_python

    report = json.loads((HERE / f"{name}.json").read_text())
    task = report["scenario"]["task"]
    stores = sorted(
        (str(p) for p in (out / "home" / "stores").glob("p*.npz")),
        key=lambda s: int(Path(s).stem[1:]),
    )
    config = {
        "stores": stores,
        "genesis": str(out / "home" / "genesis.safetensors"),
        "test": str(out / "home" / "stores" / "test.npz"),
        "epochs": task["epochs"],
        "lr": task["lr"],
        "batch_size": task["batch_size"],
        "rounds": task["rounds"],
        "client_cpus": None,
    }
    cfg = out / "flower-config.json"
    cfg.write_text(json.dumps(config))
    py = flower_python(torch.__version__.split("+")[0])
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    print(
        f"== Flower, {len(stores)} SuperNodes, at most {limit:.0f} s", file=sys.stderr, flush=True
    )
    t = time.perf_counter()
    try:
        proc = subprocess.run(
            [py, "-c", FLOWER_CHILD, str(REPO / "benchmarks"), str(cfg)],
            capture_output=True,
            text=True,
            env=env,
            timeout=limit,
        )
    except subprocess.TimeoutExpired as e:
        text = (
            (e.stderr or b"").decode(errors="replace")
            if isinstance(e.stderr, bytes)
            else (e.stderr or "")
        )
        done = text.count("aggregate_train")  # one per finished round in Flower's log
        return {"seconds": time.perf_counter() - t, "finished_rounds": done, "timed_out": True}
    wall = time.perf_counter() - t
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        return {"seconds": wall, "error": proc.stderr[-2000:], "finished_rounds": 0}
    doc = json.loads(lines[-1])
    return {"seconds": wall, "finished_rounds": task["rounds"], **doc}


def table(names: list[str]) -> None:
    rows = []
    for name in names:
        p = HERE / f"{name}.json"
        if not p.exists():
            continue
        r = json.loads(p.read_text())
        fl = r.get("flower") or {}
        st = r["stages_s"]
        chain = sum(st.get(k, 0) for k in ("submission",))
        rows.append(
            [
                r["participants"],
                r["validators"],
                f"{r['wall_s']:.0f}",
                f"{st.get('training', 0):.0f}",
                f"{st.get('aggregation', 0):.0f}",
                f"{st.get('evaluation', 0):.0f}",
                f"{chain:.0f}",
                r["transactions"],
                f"{r['gas']['task_total'] / r['scenario']['task']['rounds'] / 1e6:.1f}",
                f"{r['gas']['per_participant_per_round']:,.0f}",
                f"{r['validator_cpu_s']['aggregation_per_round_mean']:.2f}",
                f"{r['peak_rss_bytes']['coordinator'] / 2**20:.0f}",
                f"{max(r['peak_rss_bytes']['workers']) / 2**20:.0f}",
                f"{r['final_accuracy']:.3f}",
                f"{fl['seconds']:.0f}" if "seconds" in fl else "-",
                f"{fl.get('accuracy', float('nan')):.3f}"
                if "accuracy" in fl
                else str(fl.get("finished_rounds", "-")),
            ]
        )
    head = ["N", "V", "wall s", "train s", "agg s", "eval s", "submit s", "txs", "Mgas/round",
            "gas/part/round", "val CPU s/round", "coord MiB", "worker MiB", "accuracy", "Flower s",
            "Flower acc"]  # fmt: skip
    print("| " + " | ".join(head) + " |")  # a Markdown table, as docs/scale.md shows it
    print("|" + "---:|" * len(head))
    for row in rows:
        print("| " + " | ".join(str(x) for x in row) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="+", help="scenario names: n100, n1000, n10000")
    ap.add_argument("--no-flower", action="store_true", help="din only")
    ap.add_argument("--flower-only", metavar="RUN", help="Flower only, on this din run's folder")
    ap.add_argument("--table", action="store_true", help="only print the table of saved reports")
    args = ap.parse_args()
    for name in [] if args.table else args.names:
        if args.flower_only:
            out = Path(args.flower_only)
        else:
            out = run_din(name)
        if not args.no_flower:
            report = json.loads((HERE / f"{name}.json").read_text())
            flower = run_flower(name, out, max(600.0, report["wall_s"]))
            report["flower"] = flower
            (HERE / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    table(args.names)


if __name__ == "__main__":
    main()
