"""Gas of the dispute path: file, draw, the committee's commit and reveal, resolve.

One task with one subgroup of 5 validators, 3 of them colluding on a wrong
aggregate that is accepted; a dispute is filed, a committee of the deployed size
(default 21, the deployment default) is drawn from the other stakers, every
member votes for the right CID and the dispute is upheld (3 slashes and a replay).
Then the same for scores: 3 of the 5 evaluation validators reveal a lying score
vector, the honest two's dispute (``fileScores``) is upheld and ``settle`` takes
the committee's vector, slashing the three.
Runs on the embedded chain, and on anvil too when DIN_TEST_ANVIL is set.

    python benchmarks/dispute_gas.py [--committee 21] [--stakers 40]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

UNIT = 10**18
MIN_STAKE = 100 * UNIT
SPAN = 600


def cid(tag: str) -> bytes:
    return b"\x01\x55\x12\x20" + hashlib.sha256(tag.encode()).digest()


def run(
    url: str | None, committee: int, n_stakers: int, scores: bool = False
) -> dict[str, list[int]]:
    from eth_account import Account

    from din_cli.chain.client import connect
    from din_cli.chain.din import DURATION_NAMES, Din, deploy_all
    from din_cli.crypto.hpke import generate_keypair

    chain = connect(url or "memory")
    dev = chain.dev_account()
    dep = deploy_all(chain, dev, min_stake=MIN_STAKE, unstake_delay=3600, committee=committee)
    din = Din(chain, dep)
    gas: dict[str, list[int]] = defaultdict(list)
    send = chain.send

    def recording(account, fn, **kw):
        receipt = send(account, fn, **kw)
        gas[getattr(fn, "fn_name", "?")].append(int(receipt["gasUsed"]))
        return receipt

    def funded(tokens: int = 0):
        a = Account.create()
        chain.fund(a.address, UNIT)
        if tokens:
            din.transfer(dev, a.address, tokens)
        return a

    def staker():
        a = funded(2 * MIN_STAKE)
        din.stake(a, MIN_STAKE, generate_keypair()[1])
        return a

    owner = funded(2000 * UNIT)
    parts = [funded() for _ in range(3)]
    vals = [staker() for _ in range(5)]
    others = {a.address: a for a in (staker() for _ in range(n_stakers))}
    task = din.create_task(
        owner,
        genesis_cid=cid("genesis"),
        arch="mlp-test",
        deposit=1000 * UNIT,
        test_set_hash=bytes.fromhex("5e" * 32),
        subgroup_size=3,
        validators_per_subgroup=5,
        max_rounds=1 if scores else 2,
        slash_amount=MIN_STAKE // 10,
        durations=dict.fromkeys(DURATION_NAMES, SPAN),
    )
    for p in parts:
        din.join_task(p, task, os.urandom(32))
    for v in vals:
        din.register_validator_for_task(v, task)
    din.start_round(owner, task)
    for p in parts:
        din.submit_update(p, task, cid(f"update-{p.address}"))
    by = {v.address: v for v in vals}
    slots = [by[a] for a in din.members(task, 0)["validators"]]
    right, wrong = cid("right"), cid("poisoned")
    if scores:
        return _scores(chain, din, dev, owner, task, slots, others, gas, recording, send)
    for j, v in enumerate(slots):
        din.commit_aggregate(v, task, wrong if j % 2 == 0 else right)
    for j, v in enumerate(slots):
        din.reveal_aggregate(v, task, wrong if j % 2 == 0 else right)
    filer = funded(100 * UNIT)
    chain.send = recording
    did = din.file_dispute(filer, task, 1, 0, right)
    chain.advance_time(1)
    members = din.draw_committee(dev, did)
    for m in members:
        din.dispute_commit(others[m], did, right)
    for m in members:
        din.dispute_reveal(others[m], did, right)
    outcome = din.resolve_dispute(dev, did)
    chain.send = send
    chain.close()
    if outcome["state"] != "upheld":
        raise SystemExit(f"expected the dispute upheld, got {outcome['state']}")
    gas["committee size"] = [len(members)]
    return gas


def _scores(chain, din, dev, owner, task, slots, others, gas, recording, send) -> dict:
    """The score dispute: an honest round, then 3 of 5 evaluation validators lie."""
    right = cid("right")
    for step in (din.commit_aggregate, din.reveal_aggregate):
        for v in slots:
            step(v, task, right)
    din.post_global_model(owner, task, right)
    for v in slots[:3]:
        din.attest_global(v, task, right)
    ev = {v.address: v for v in slots}
    evals = [ev[a] for a in din.members(task, 0, 0)["validators"]]
    din.post_test_set(owner, task, cid("test-set"), {v.address: b"k" for v in evals})
    lie, truth = [10000, 0, 0], [3000, 3000, 4000]
    for step in (din.commit_scores, din.reveal_scores):
        for j, v in enumerate(evals):
            step(v, task, lie if j % 2 == 0 else truth)
    filer = evals[1]
    chain.send = recording
    did = din.file_score_dispute(filer, task, 0, truth)
    chain.advance_time(1)
    members = din.draw_committee(dev, did)
    for m in members:
        din.dispute_commit(others[m], did, b"", scores=truth)
    for m in members:
        din.dispute_reveal(others[m], did, b"", scores=truth)
    outcome = din.resolve_dispute(dev, did)
    din.settle(dev, task)
    chain.send = send
    chain.close()
    if outcome["state"] != "upheld":
        raise SystemExit(f"expected the score dispute upheld, got {outcome['state']}")
    gas["committee size"] = [len(members)]
    return gas


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--committee", type=int, default=21)
    ap.add_argument("--stakers", type=int, default=40, help="stakers besides the task's validators")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["DIN_HOME"] = home
        chains = {"embedded": None}
        if os.environ.get("DIN_TEST_ANVIL"):
            chains["anvil"] = os.environ["DIN_TEST_ANVIL"]
        for name, url in chains.items():
            for scores in (False, True):
                gas = run(url, args.committee, args.stakers, scores)
                size = gas.pop("committee size")[0]
                what = "scores" if scores else "aggregate"
                print(
                    f"{what} dispute gas on {name}: committee {size} of {args.stakers} other stakers"
                )
                print(f"{'operation':<16}{'txs':>5}{'gas mean':>11}{'gas max':>10}")
                for op in ("file", "fileScores", "draw", "commit", "reveal", "resolve", "settle"):
                    g = gas.get(op, [])
                    if g:
                        print(f"{op:<16}{len(g):>5}{statistics.mean(g):>11.0f}{max(g):>10}")


if __name__ == "__main__":
    main()
