"""What privacy costs: one task run open, sealed and secagg, side by side, on the embedded chain.

    python benchmarks/sealed.py                         # logreg:64-10 and mlp:64-1024-1024-10
    python benchmarks/sealed.py --arch mlp:64-256-10 --repeat 5 --json
    python benchmarks/sealed.py --mode open --mode secagg

Each run publishes a one-round task (6 participants on digits, 2 subgroups of
3, 2 validators per subgroup, 4 validators), then times, through din's
protocol code: the round (every participant trains 1 epoch and submits;
every validator aggregates, commits and reveals; the owner posts the global
model; the validators attest; in a secagg task every participant reveals its
shares once training closes, before the validators sum) and the evaluation
(in a sealed task each validator first grants its keys; then the test set is
posted and every evaluation validator scores, commits and reveals). The
modes alternate; the figures are medians. One epoch keeps training short, so
the privacy share is an upper bound of what a real round pays.

Target (issue 12): sealed mode adds <= 20 % to a round's wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

UNIT = 10**18


def _identity(name: str):
    from eth_account import Account

    from din_cli.crypto import hpke
    from din_cli.crypto.keystore import Identity

    acct = Account.create()
    private, public = hpke.generate_keypair()
    return Identity(name, acct.address, bytes(acct.key), private, public)


def run(arch: str, privacy: str, tmp: Path) -> dict:
    from din_cli.chain.client import connect
    from din_cli.chain.din import DURATION_NAMES, Din, deploy_all, file_sha256
    from din_cli.ml.data import split
    from din_cli.ml.models import init_model
    from din_cli.protocol import evaluation, roundflow, sealing, secagg
    from din_cli.protocol.context import open_context

    chain = connect("memory")
    dev = chain.dev_account()
    dep = deploy_all(chain, dev, min_stake=100 * UNIT, unstake_delay=3600)
    din = Din(chain, dep)
    owner, parts = _identity("owner"), [_identity(f"p{i}") for i in range(6)]
    vals = [_identity(f"v{i}") for i in range(4)]
    for who in [owner, *parts, *vals]:
        chain.fund(who.address, UNIT)
    din.transfer(dev, owner.address, 10_000 * UNIT)
    for v in vals:
        din.transfer(dev, v.address, 200 * UNIT)
    stores = split("digits", tmp / "stores", participants=6, alpha=None, seed=0)
    init_model(arch, tmp / "genesis.safetensors", seed=0)

    def ctx(who=None):
        return open_context(identity=who, chain=chain, deployment=dep)

    task = roundflow.publish(
        ctx(owner),
        tmp / "genesis.safetensors",
        1000 * UNIT,
        subgroup_size=3,
        validators_per_subgroup=2,
        max_rounds=1,
        durations={n: 600 for n in DURATION_NAMES},
        privacy_mode=privacy,
        test_set_hash=file_sha256(stores[-1]),
    )["task_id"]
    for v in vals:
        din.stake(v.account, 100 * UNIT, v.hpke_public)
        din.register_validator_for_task(v.account, task)
    for p in parts:
        din.join_task(p.account, task, p.hpke_public)
    by = {v.address: v for v in vals}

    def assigned(round_):
        info = din.round_info(task, round_)
        addrs = din.validators(task)
        return [by[addrs[i]] for g in info.validator_groups for i in g]

    t0 = time.perf_counter()
    roundflow.start(ctx(owner), task)
    for i, p in enumerate(parts):
        roundflow.train_and_submit(ctx(p), task, stores[i], epochs=1, lr=0.5)
    if privacy == "secagg":
        for p in parts:
            secagg.reveal(ctx(p), task)
    for v in assigned(1):
        roundflow.aggregate_commit(ctx(v), task)
    for v in assigned(1):
        roundflow.aggregate_reveal(ctx(v), task)
    roundflow.finalize(ctx(owner), task)
    for v in assigned(1):
        if din.task_info(task).phase != "global-model":
            break
        roundflow.attest(ctx(v), task)
    t1 = time.perf_counter()
    if privacy == "sealed":
        for v in vals:
            sealing.grant_for_evaluation(ctx(v), task)
    evaluation.post_test_set(ctx(owner), task, stores[-1])
    for v in assigned(0):
        evaluation.evaluate_commit(ctx(v), task)
    for v in assigned(0):
        evaluation.evaluate_reveal(ctx(v), task)
    t2 = time.perf_counter()
    assert din.task_info(task).phase == "settling", din.task_info(task).phase
    chain.close()
    return {"round_s": t1 - t0, "evaluation_s": t2 - t1}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", action="append", help="architectures (default: two)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--mode", action="append", choices=["open", "sealed", "secagg"], help="(default: all three)"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    archs = args.arch or ["logreg:64-10", "mlp:64-1024-1024-10"]
    modes = list(dict.fromkeys(["open", *(args.mode or ["sealed", "secagg"])]))
    rows = []
    for arch in archs:
        runs: dict[str, list] = {m: [] for m in modes}
        for _ in range(args.repeat):
            for mode in modes:
                with tempfile.TemporaryDirectory() as d:
                    runs[mode].append(run(arch, mode, Path(d)))
        med = {
            m: {k: statistics.median(r[k] for r in rs) for k in ("round_s", "evaluation_s")}
            for m, rs in runs.items()
        }
        row = {"arch": arch, **med}
        for m in modes[1:]:
            row[f"{m}_round_overhead"] = med[m]["round_s"] / med["open"]["round_s"] - 1
            row[f"{m}_evaluation_overhead"] = (
                med[m]["evaluation_s"] / med["open"]["evaluation_s"] - 1
            )
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    head = ["arch", "open round s"]
    head += [f"{m} round s (+%)" for m in modes[1:]]
    head += ["open eval s"] + [f"{m} eval s (+%)" for m in modes[1:]]
    print("\t".join(head))
    for r in rows:
        cells = [r["arch"], f"{r['open']['round_s']:.2f}"]
        cells += [
            f"{r[m]['round_s']:.2f} ({100 * r[f'{m}_round_overhead']:+.1f})" for m in modes[1:]
        ]
        cells.append(f"{r['open']['evaluation_s']:.2f}")
        cells += [
            f"{r[m]['evaluation_s']:.2f} ({100 * r[f'{m}_evaluation_overhead']:+.1f})"
            for m in modes[1:]
        ]
        print("\t".join(cells))
    print(
        f"target: a sealed round <= +20 % ({args.repeat} alternated runs per mode, medians)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
