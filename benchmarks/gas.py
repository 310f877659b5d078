"""Gas and wall time of every DIN contract operation on one task.

One subgroup of 100 participants and 10 validators, driven end to end through
``din_cli.chain.din``: the embedded chain (``connect(None)`` in a temporary
DIN_HOME) always, and anvil too when DIN_TEST_ANVIL is set. Prints, per
operation, the gas (mean / max over its transactions) against the budget and
the mean wall time per call on each chain.

    python benchmarks/gas.py [--participants 100] [--validators 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BUDGETS = {
    "joinTask": 80_000,
    "registerValidator": 80_000,
    "submitUpdate": 60_000,
    "commit+reveal aggregate": 120_000,
    "commit+reveal scores": 120_000,
    "settle per participant": 30_000,
}


class Recorder:
    """Wraps Chain.send to record gas and wall time per contract function."""

    def __init__(self, chain):
        self.chain = chain
        self.gas = defaultdict(list)
        self.wall = defaultdict(list)
        self._send = chain.send

        def send(account, fn, **kw):
            t0 = time.perf_counter()
            receipt = self._send(account, fn, **kw)
            name = getattr(fn, "fn_name", None) or kw.get("_name") or "deploy"
            self.wall[name].append(time.perf_counter() - t0)
            self.gas[name].append(int(receipt["gasUsed"]))
            return receipt

        chain.send = send


def run(url: str | None, n_participants: int, n_validators: int) -> Recorder:
    from eth_account import Account

    from din_cli.chain.assignment import per_group
    from din_cli.chain.client import connect
    from din_cli.chain.din import Din, deploy_all
    from din_cli.crypto.hpke import generate_keypair

    def x25519_public():
        return generate_keypair()[1]

    chain = connect(url)
    dev = chain.dev_account()
    rec = Recorder(chain)
    dep = deploy_all(chain, dev, min_stake=100 * 10**18)
    din = Din(chain, dep)
    people = [Account.create() for _ in range(1 + n_participants + n_validators)]
    owner, parts, vals = people[0], people[1 : 1 + n_participants], people[1 + n_participants :]
    for a in people:
        chain.fund(a.address, 10**18)
    din.transfer(dev, owner.address, 10**24)
    for v in vals:
        din.transfer(dev, v.address, 10**21)
    task = din.create_task(
        owner,
        genesis_cid=b"\x01\x55\x12\x20" + bytes(32),
        arch="mlp-bench",
        deposit=10**21,
        subgroup_size=n_participants,
        validators_per_subgroup=n_validators,
        max_rounds=1,
        test_set_hash=b"\x5e" * 32,
    )
    for p in parts:
        din.join_task(p, task, os.urandom(32))
    for v in vals:
        din.stake(v, 100 * 10**18, x25519_public())
        din.register_validator_for_task(v, task)
    din.start_round(owner, task)
    for i, p in enumerate(parts):
        din.submit_update(p, task, b"\x01\x55\x12\x20" + i.to_bytes(32, "big"))
    agg = b"\x01\x55\x12\x20" + b"\xaa" * 32
    info = din.task_info(task)
    assert per_group(info.validators, info.groups, n_validators) == info.per_group
    everyone = (1 << n_participants) - 1  # the result's bitmap: every update admitted
    for v in vals:
        din.commit_aggregate(v, task, agg, admitted=everyone)
    for v in vals:
        din.reveal_aggregate(v, task, agg, admitted=everyone)
    din.post_global_model(owner, task, agg)
    for v in vals[: n_validators // 2 + 1]:
        din.attest_global(v, task, agg)
    din.post_test_set(
        owner, task, b"\x01\x55\x12\x20" + b"\xbb" * 32, {v.address: os.urandom(80) for v in vals}
    )
    ev = din.round_info(task, 0)
    by_index = {i: v for i, v in enumerate(din.validators(task))}
    acct = {v.address: v for v in vals}
    vectors = {}
    for g, members in enumerate(ev.participant_groups):
        for i in ev.validator_groups[g]:
            vectors[by_index[i]] = [
                (7919 * (k + 1)) % 5000 + 4000
                for k in range(len(members))  # honest: all agree
            ]
    for addr, scores in vectors.items():
        din.commit_scores(acct[addr], task, scores)
    for addr, scores in vectors.items():
        din.reveal_scores(acct[addr], task, scores)
    for p in parts[:10]:  # the contributors' split by record: one proof per participant and task
        din.prove_record(p, task)
    din.settle(owner, task)
    paid = 0
    for a in people:
        if din.claimable(task, a.address):
            paid += din.claim(a, task)
    assert paid == 10**21, paid
    rec.groups = info.groups
    rec.participants = n_participants
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--participants", type=int, default=100)
    ap.add_argument("--validators", type=int, default=10)
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as home:
        os.environ["DIN_HOME"] = home
        t0 = time.perf_counter()
        results["embedded"] = run(None, args.participants, args.validators)
        results["embedded"].total = time.perf_counter() - t0
    anvil = os.environ.get("DIN_TEST_ANVIL")
    if anvil:
        t0 = time.perf_counter()
        results["anvil"] = run(anvil, args.participants, args.validators)
        results["anvil"].total = time.perf_counter() - t0
    rec = results["embedded"]
    chains = list(results)
    print(
        f"DIN contract gas: 1 task, {args.participants} participants in {rec.groups} subgroup(s), {args.validators} validators"
    )
    head = (
        f"{'operation':<28}{'txs':>5}{'gas mean':>11}{'gas max':>10}{'budget':>10}  ok "
        + "".join(f"{c + ' ms/call':>18}" for c in chains)
    )
    print(head)
    print("-" * len(head))
    for name, gases in rec.gas.items():
        budget = BUDGETS.get(name)
        ok = "" if budget is None else ("yes" if max(gases) <= budget else "NO")
        walls = "".join(
            f"{statistics.mean(results[c].wall.get(name, [0])) * 1000:>18.1f}" for c in chains
        )
        print(
            f"{name:<28}{len(gases):>5}{statistics.mean(gases):>11.0f}{max(gases):>10}{budget or '':>10}  {ok:<3}{walls}"
        )
    cr = [
        c + r for c, r in zip(rec.gas["commitAggregate"], rec.gas["revealAggregate"], strict=True)
    ]
    crs = [c + r for c, r in zip(rec.gas["commitScores"], rec.gas["revealScores"], strict=True)]
    per_p = sum(rec.gas["settle"]) / rec.participants
    for name, value in (
        ("commit+reveal aggregate", max(cr)),
        ("commit+reveal scores", max(crs)),  # a vector of one score per subgroup participant
        ("settle per participant", per_p),
    ):
        budget = BUDGETS[name]
        print(
            f"{name:<28}{'':>5}{'':>11}{value:>10.0f}{budget:>10}  {'yes' if value <= budget else 'NO'}"
        )
    if "anvil" in results:
        other = results["anvil"].gas
        worst = max(
            abs(statistics.mean(other[k]) - statistics.mean(v)) / statistics.mean(v)
            for k, v in rec.gas.items()
            if k in other
        )
        print(
            f"anvil gas differs from embedded by at most {worst:.1%} per operation"
            " (random accounts, keys and round seeds change calldata and assignment walks)"
        )
    for c in chains:
        print(
            f"{c}: whole run {results[c].total:.1f} s for {sum(len(v) for v in results[c].wall.values())} transactions"
        )


if __name__ == "__main__":
    main()
