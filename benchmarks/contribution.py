"""Contribution scores: leave-one-out, GTG-Shapley and exact Shapley, side by side.

    python benchmarks/contribution.py                          # 6, 10, 12 and 100 updates, ~100k params
    python benchmarks/contribution.py --sizes 6,10 --arch mlp:64-32-10   # quick

One core (``torch.set_num_threads(1)``, ``DIN_THREADS=1``). The data is the
bundled digits set: 40 % is the owner's test pool, and the round's rows are
the seed's resample of half of it (``protocol.sampling``). The starting model
is a genesis model trained ten epochs on 100 rows (a round in progress). For
each subgroup size N the participants are trained for real
(``ml.train``, 5 epochs) on disjoint slices of the rest, cycling through:

    honest-200   honest, 200 rows          honest-40   honest, 40 rows
    ten-rows     honest, 10 rows            free-rider  the starting model resubmitted
    copycat      honest-200's update again  shuffled    150 rows, every label wrong
    negated      start - 2 x honest-40's progress (a scaled, negated poisoner)
    honest-80    honest, 80 rows (the remaining slots)

N = 100 is cross-device: one honest-40, four attackers (free-rider, its
copycat, shuffled, negated) and 95 honest participants with 10 rows each; exact Shapley is out of reach there,
so only the seconds count.

Per method it prints the seconds (loading and quantising the updates
included), the coalition models evaluated, and -- where exact Shapley was
computed -- ``max |normalised estimate - normalised exact|`` of the revealed
integer vectors, each divided by its sum. The issue's targets: N = 100 at
100k parameters within 60 s on one core; within 0.05 of exact up to N = 12.
``--detail`` prints every participant's score under each method.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

KINDS = ["honest-200", "honest-40", "ten-rows", "free-rider", "copycat", "shuffled", "negated"]
CROSS_DEVICE = ["honest-40", "free-rider", "copycat", "shuffled", "negated"]
ROWS = {"honest-200": 200, "honest-40": 40, "ten-rows": 10, "shuffled": 150, "honest-80": 80}
ROUND_SEED = bytes(range(32))


def _train(start, x, y, out, seed, epochs=5):
    from din_cli.ml import data, train

    store = out.with_suffix(".npz")
    data.save_store(store, x, y)
    train.train(start, store, out, epochs=epochs, lr=0.1, batch_size=32, seed=seed, device="cpu")
    return out


def _write_like(path, weights, samples, template):
    from din_cli.ml import models, tensorfile

    h = models.read_model(template).header
    meta = tensorfile.make_metadata(
        arch=h.arch, kind="update", samples=samples, round=h.round, task=h.task
    )
    tensorfile.write(path, weights, meta)
    return path


def world(tmp: Path, arch: str):
    """Starting model, round rows, and a pool of the digits training rows."""
    import numpy as np

    from din_cli.ml import data, models
    from din_cli.protocol import sampling

    ds = data.load_dataset("digits")
    order = np.random.default_rng(7).permutation(len(ds))
    n_test = int(round(len(ds) * 0.4))
    test = data.Dataset(ds.x[order[:n_test]], ds.y[order[:n_test]], "digits-test")
    pool_x, pool_y = ds.x[order[n_test:]], ds.y[order[n_test:]]
    genesis = tmp / "genesis.safetensors"
    models.init_model(arch, genesis, seed=1)
    start = _train(genesis, pool_x[:100], pool_y[:100], tmp / "start.safetensors", 1, epochs=10)
    rows = sampling.evaluation_rows(ROUND_SEED, n_test, final=False)
    return start, test, rows, pool_x[100:], pool_y[100:]


def subgroup(tmp: Path, start, px, py, n: int):
    """``n`` updates of the kinds in the module doc, and their labels."""
    import numpy as np

    from din_cli.ml import models

    rng = np.random.default_rng(n)
    base = models.read_model(start).weights
    paths, labels, pos, made = [], [], 0, {}
    if n > 12:  # cross-device
        kinds = CROSS_DEVICE + ["honest-10"] * (n - len(CROSS_DEVICE))
    else:
        kinds = KINDS[:n] + ["honest-80"] * (n - len(KINDS))
    for k, kind in enumerate(kinds):
        out = tmp / f"n{n}-{k:03d}-{kind}.safetensors"
        if kind == "free-rider":
            _write_like(out, base, 100, start)
        elif kind == "copycat":
            src = made.get("honest-200") or made["honest-40"]
            out.write_bytes(src.read_bytes())
        elif kind == "negated":
            ref = models.read_model(made["honest-40"]).weights
            poison = {
                name: (base[name] - 2.0 * (ref[name] - base[name])).astype(np.float32)
                for name in base
            }
            _write_like(out, poison, 100, start)
        else:
            m = 10 if kind == "honest-10" else ROWS[kind]
            if pos + m > len(py):
                pos = 0  # the cross-device pool wraps: slices overlap, updates still differ
            x, y = px[pos : pos + m], py[pos : pos + m].copy()
            pos += m
            if kind == "shuffled":
                y = (y + rng.integers(1, 10, size=y.size)) % 10
            _train(start, x, y, out, seed=k)
        made.setdefault(kind, out)
        paths.append(out)
        labels.append(kind)
    return paths, labels


def compare(paths, start, test, rows, n: int, args, gtg_kw) -> dict:
    """``{method: (Contributions, seconds)}`` for one subgroup, each from a fresh game (no shared cache)."""
    from din_cli.protocol import contribution as C

    runs = {}

    def timed(name, fn):
        t = time.perf_counter()
        res = fn(C.CoalitionGame.load(paths, start, test, rows=rows))
        runs[name] = (res, time.perf_counter() - t)

    timed("loo", C.leave_one_out)
    for s in range(args.seeds):
        seed = bytes([s]) * 32 if s else ROUND_SEED
        timed(
            "gtg" if s == 0 else f"gtg#{s}", lambda g, seed=seed: C.gtg_shapley(g, seed, **gtg_kw)
        )
    if n <= args.exact_max:
        timed("exact", C.exact_shapley)
    return runs


def max_gap(a, b) -> float:
    return max(abs(x - y) for x, y in zip(a.normalised(), b.normalised(), strict=True))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="mlp:64-1400-10", help="model (default ~105k parameters)")
    ap.add_argument("--sizes", default="6,10,12,100", help="subgroup sizes, comma separated")
    ap.add_argument("--exact-max", type=int, default=12, help="largest N to compute exact for")
    ap.add_argument("--max-evaluations", type=int, default=None, help="gtg budget")
    ap.add_argument("--tolerance", type=int, default=None, help="gtg truncation, bps")
    ap.add_argument("--seeds", type=int, default=1, help="gtg runs with different seeds")
    ap.add_argument("--detail", action="store_true", help="print every participant's scores")
    args = ap.parse_args(argv)

    os.environ["DIN_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    from din_cli.ml import zoo

    gtg_kw = {}
    if args.max_evaluations is not None:
        gtg_kw["max_evaluations"] = args.max_evaluations
    if args.tolerance is not None:
        gtg_kw["tolerance_bps"] = args.tolerance
    params = sum(int(torch.tensor(s).prod()) for s in zoo.param_shapes(args.arch).values())
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        start, test, rows, px, py = world(tmp, args.arch)
        print(
            f"# {args.arch} ({params} parameters), {len(rows)} test rows, one core",
            file=sys.stderr,
        )
        header = f"{'N':>4} {'method':<7} {'seconds':>8} {'evals':>6} {'max|norm-exact|':>16}"
        print(header)
        for n in [int(s) for s in args.sizes.split(",")]:
            paths, labels = subgroup(tmp, start, px, py, n)
            runs = compare(paths, start, test, rows, n, args, gtg_kw)
            exact = runs.get("exact", (None,))[0]
            for name, (res, secs) in runs.items():
                gap = f"{max_gap(res, exact):.4f}" if exact is not None else "-"
                print(f"{n:>4} {name:<7} {secs:>8.2f} {res.evaluations:>6} {gap:>16}", flush=True)
            if args.detail:
                names = list(runs)
                print("      " + " ".join(f"{m:>7}" for m in names) + "  participant")
                for k, label in enumerate(labels):
                    cells = " ".join(f"{runs[m][0].scores[k]:>7}" for m in names)
                    print(f"  {k:>3} {cells}  {label}")
                e = runs["loo"][0]
                print(f"      U(empty)={e.empty} U(all)={e.full}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
