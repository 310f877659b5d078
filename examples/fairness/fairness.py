"""Who gets paid: one task scored by contribution (GTG-Shapley) and by each latest update alone.

    python fairness.py --dataset digits                   # 8 participants, 3 rounds
    python fairness.py --dataset breast_cancer --rounds 1 --check
    make                                                  # both datasets, with the checks

Runs a whole task through din's protocol code (``din_cli.protocol``, the
functions the commands call) on a throw-away embedded chain and the local
content store, once per scoring (``update``: each latest update alone, the
baseline; ``gtg``: the default), and once without the attackers. One
subgroup of 8 participants of known quality, 3 validators, a bundled dataset
(40 % the owner's test pool, the rest cut into the participants' stores):

    honest-big   42 % of the training rows      honest-small  9 %
    ten-rows     10 rows                        noisy-30      22 %, 30 % of labels wrong
    shuffled     22 %, every label wrong
    free-rider   resubmits the round's starting model
    copycat      resubmits honest-big's CID, after it
    negated      start - 2 x (honest-small's update - start): a scaled, negated poisoner

It prints each participant's payout under both scorings next to its
reference value: the exact Shapley value of the same update-based utility
(every coalition of the round's updates, FedAvg, scored on the whole pool),
summed over the rounds, with the free-rider's and the copycat's updates
valued 0 (admission excludes them; Shapley's symmetry would otherwise give a
copy its original's value). Then the Spearman rank correlation of payouts
with that reference (raw, and floored at 0 as a payout is), the attackers'
payouts as a share of the honest median, and the final accuracy with and
without the attackers. ``--check`` exits 1 unless the gtg run meets the
targets: attackers at most 1 % of the honest median (of honest-big and
honest-small), ten-rows below both of them, Spearman (floored) at least ``--min-rho``, final
accuracy within 1 point of the run without attackers. The task driver is the
test suite's ``tests/round_world.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

KINDS = ["honest-big", "honest-small", "ten-rows", "noisy-30", "shuffled", "free-rider", "copycat",
         "negated"]  # fmt: skip
SHARE = {"honest-big": 0.42, "honest-small": 0.09, "noisy-30": 0.22, "shuffled": 0.22}
ATTACKERS = ("shuffled", "free-rider", "copycat", "negated")
HONEST = ("honest-big", "honest-small", "ten-rows", "noisy-30")  # the run without attackers
REFERENCE = ("honest-big", "honest-small")  # the honest median; ten-rows must earn less than each
ARCH = {"digits": "logreg:64-10", "breast_cancer": "logreg:30-2", "wine": "logreg:13-3",
        "iris": "logreg:4-3"}  # fmt: skip


def stores(w, tmp: Path, kinds: list[str], dataset: str) -> dict[str, Path]:
    """Each trained kind's store, cut from the rows outside ``w``'s test pool (the same rows for
    the same kind in every run)."""
    import numpy as np

    from din_cli.ml import data

    pool = data.load_store(data.split(dataset, tmp / "pool", participants=1, seed=0)[0])
    assert (data.load_store(w.test_store).x == data.load_store(tmp / "pool" / "test.npz").x).all()
    classes = int(pool.y.max()) + 1
    rng = np.random.default_rng(3)
    order = rng.permutation(len(pool.y))
    x, y = pool.x[order], pool.y[order]
    out, pos = {}, 0
    for kind in kinds:
        if kind not in SHARE and kind != "ten-rows":
            continue
        m = 10 if kind == "ten-rows" else int(SHARE[kind] * len(y))
        xs, ys = x[pos : pos + m], y[pos : pos + m].copy()
        pos += m
        wrong = np.ones(m, bool) if kind == "shuffled" else rng.random(m) < 0.3
        if kind in ("shuffled", "noisy-30"):
            ys[wrong] = (ys[wrong] + rng.integers(1, classes, size=int(wrong.sum()))) % classes
        out[kind] = tmp / f"{kind}.npz"
        data.save_store(out[kind], xs, ys)
    return out


def negated(w, start_cid: str, ref_cid: str, tmp: Path) -> str:
    """The poisoner's update: the starting model pushed twice as far against ``ref``'s progress."""
    from din_cli.ml import models, tensorfile

    ctx = w.ctx()
    start = models.read_model(ctx.fetch(start_cid, tmp / "neg-start.safetensors"))
    ref = models.read_model(ctx.fetch(ref_cid, tmp / "neg-ref.safetensors"))
    weights = {
        k: (v - 2.0 * (ref.weights[k] - v)).astype(v.dtype) for k, v in start.weights.items()
    }
    h = ref.header
    meta = tensorfile.make_metadata(arch=h.arch, kind="update", samples=h.samples, round=h.round,
                                    task=h.task)  # fmt: skip
    out = tmp / "negated.safetensors"
    tensorfile.write(out, weights, meta)
    return ctx.add(out)


def run(tmp: Path, kinds: list[str], scoring: str, rounds: int, rule: dict, dataset: str) -> dict:
    """One task; ``{payouts, per-round updates, final accuracy, test store}``."""
    from round_world import World

    from din_cli.ml.evaluate import evaluate
    from din_cli.protocol import roundflow
    from din_cli.protocol.roundflow import start_model, to_bytes

    n = len(kinds)
    w = World(tmp, participants=n, validators=3, subgroup_size=n, per_group=3, rounds=rounds,
              scoring=scoring, dataset=dataset, arch=ARCH[dataset], **rule)  # fmt: skip
    data = stores(w, tmp, kinds, dataset)
    roundflow.start(w.ctx(w.owner), w.task)
    history, accuracy = [], []
    for r in range(1, rounds + 1):
        start = start_model(w.ctx(), w.task, r)
        cids: dict[str, str] = {}
        for i, kind in enumerate(kinds):
            p = w.parts[i]
            if kind == "free-rider":
                cid = start
            elif kind == "copycat":
                cid = cids["honest-big"]
            elif kind == "negated":
                cid = negated(w, start, cids["honest-small"], tmp)
            else:
                cid = roundflow.train_and_submit(w.ctx(p), w.task, data[kind], epochs=5, lr=0.5)
                cids[kind] = cid = cid["cid"]
                continue
            w.din.submit_update(p.account, w.task, to_bytes(cid))
            cids[kind] = cid
        history.append((start, dict(cids)))
        if w.phase() == "training":
            w.advance()
        w.aggregate_all()
        w.finalize_and_attest()
        model = w.ctx().fetch(roundflow.current_model(w.ctx(), w.task), tmp / f"global-{r}.st")
        accuracy.append(evaluate(model, w.test_store).score_bps)
    w.evaluate_all()
    paid = w.settle_and_claim()
    payouts = {kind: paid[f"p{i}"] for i, kind in enumerate(kinds)}
    out = {"payouts": payouts, "history": history, "accuracy": accuracy, "ctx": w.ctx(),
           "test": w.test_store}  # fmt: skip
    return out


def reference(result: dict, tmp: Path) -> dict[str, float]:
    """Exact Shapley over every round's updates on the whole pool, summed; excluded kinds valued 0."""
    from din_cli.protocol.contribution import contributions

    ctx, total = result["ctx"], {}
    for r, (start, cids) in enumerate(result["history"], 1):
        kinds = [k for k in cids if k not in ("free-rider", "copycat")]
        paths = [ctx.fetch(cids[k], tmp / f"ref-r{r}-{k}.safetensors") for k in kinds]
        s = ctx.fetch(start, tmp / f"ref-r{r}-start.safetensors")
        c = contributions(paths, s, result["test"], method="exact")
        for k, v in zip(kinds, c.values, strict=True):
            total[k] = total.get(k, 0.0) + float(v)
    return {k: total.get(k, 0.0) for k in KINDS}


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    from din_cli.sim.report import spearman as rho

    r = rho(a, b)
    return float("nan") if r is None else r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits", choices=sorted(ARCH))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rule", default="mean", help="the task's aggregation rule")
    ap.add_argument("--clip-norm", default=None, help="norm-bounded: the L2 bound")
    ap.add_argument("--trim", default=None, help="trimmed-mean: the fraction cut at each end")
    ap.add_argument("--check", action="store_true", help="exit 1 unless gtg meets the targets")
    ap.add_argument("--min-rho", type=float, default=0.9, help="--check: least Spearman (floored)")
    args = ap.parse_args(argv)
    unit = 10**18
    rule = {"aggregation": args.rule, "clip_norm": args.clip_norm, "trim": args.trim}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        results = {}
        for scoring in ("update", "gtg"):
            (tmp / scoring).mkdir()
            results[scoring] = run(tmp / scoring, KINDS, scoring, args.rounds, rule, args.dataset)
        (tmp / "clean").mkdir()
        clean = run(tmp / "clean", list(HONEST), "gtg", args.rounds, rule, args.dataset)
        ref = reference(results["gtg"], tmp)
    ref0 = [max(0.0, ref[k]) for k in KINDS]
    print(f"{args.dataset}, {ARCH[args.dataset]}: {len(KINDS)} participants in one subgroup, "
          f"{args.rounds} rounds, rule {args.rule}; payouts in DIN of a 900 DIN pool")  # fmt: skip
    print(f"{'participant':<13} {'exact Shapley (bps)':>20} {'update':>10} {'gtg (default)':>14}")
    for k in KINDS:
        u, g = (results[s]["payouts"][k] / unit for s in ("update", "gtg"))
        print(f"{k:<13} {ref[k]:>20.1f} {u:>10.2f} {g:>14.2f}")
    print()
    for s in ("update", "gtg"):
        r = results[s]
        pay = [r["payouts"][k] for k in KINDS]
        r["rho"] = spearman(pay, [ref[k] for k in KINDS])
        r["rho0"] = spearman(pay, ref0)
        r["median"] = sum(r["payouts"][k] for k in REFERENCE) / len(REFERENCE)
        r["share"] = {k: r["payouts"][k] / r["median"] for k in ATTACKERS}
        r["ten_rows_least"] = all(r["payouts"]["ten-rows"] < r["payouts"][k] for k in REFERENCE)
    rows = [
        ("Spearman(payout, exact Shapley)", lambda r: f"{r['rho']:.3f}"),
        ("  the same, exact Shapley floored at 0", lambda r: f"{r['rho0']:.3f}"),
        *[
            (f"{k} payout / honest median", lambda r, k=k: f"{r['share'][k]:.1%}")
            for k in ATTACKERS
        ],
        ("ten-rows paid less than both honest", lambda r: str(r["ten_rows_least"])),
    ]
    print(f"{'':<44} {'update':>8} {'gtg':>8}")
    for label, f in rows:
        print(f"{label:<44} {f(results['update']):>8} {f(results['gtg']):>8}")
    with_, without = results["gtg"]["accuracy"], clean["accuracy"]
    print(f"global model accuracy by round (bps): {with_} with the attackers, {without} without")
    if not args.check:
        return 0
    g = results["gtg"]
    failed = [
        *(
            f"{k} was paid {g['share'][k]:.1%} of the honest median"
            for k in ATTACKERS
            if g["share"][k] > 0.01
        ),  # fmt: skip
        *([] if g["ten_rows_least"] else ["ten-rows was not paid less than both honest"]),
        *([] if g["rho0"] >= args.min_rho else [f"Spearman {g['rho0']:.3f} < {args.min_rho}"]),
        *(
            []
            if abs(with_[-1] - without[-1]) <= 100
            else [f"final accuracy {with_[-1]} bps vs {without[-1]} without the attackers"]
        ),  # fmt: skip
    ]
    for f in failed:
        print(f"target missed: {f}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
