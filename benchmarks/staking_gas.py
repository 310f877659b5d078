"""Gas of delegated staking at 1, 100 and 10,000 delegators, and of a quadratic-funding finalize.

Staking: the contracts as ``deploy_all`` deploys them (the ECONOMY defaults), one validator
(10 % commission) and a pool grown to each size in turn; at each size one delegator that has
just joined claims its rewards, compounds, tops up, undelegates part and withdraws it after the
unbonding delay, then a fresh account delegates for the first time and the validator claims
(its commission too). Time moves 60 s before every measured call, so each also mints and
spreads the emission due (what a real call pays); the registry's totals are already nonzero
(the validator claimed once first), as on a running network.
The delegators are plain addresses driven through anvil's impersonation (``anvil_setBalance``,
``anvil_autoImpersonateAccount``, ``eth_sendTransaction`` in JSON-RPC batches).

Grants: ``DinGrants.finalize`` of rounds with 2/10/50/200 projects and 10/1,000 contributions
(spread round-robin over the projects from up to 1,000 contributors), twice: with the deployed
grants contract, whose credits come from DinGovernor (earned in settled tasks, so none here:
no contribution counts toward matching and finalize takes the no-match path), and with a
second DinGrants whose credits oracle is a stub answering 1 for everyone (every contribution
counts, so finalize splits the fund). Gas is each transaction's ``gasUsed`` (21,000 base and
calldata included).

Runs on DIN_TEST_ANVIL when set, else starts its own anvil (node_modules' binary) on a free port
with ``--prune-history`` and stops it at the end. Without that flag anvil writes old blocks'
states under ~/.foundry/anvil/tmp, several MB a block once 10,000 delegators exist: tens of GB
in one run (mind that on a DIN_TEST_ANVIL node, and use --sizes 1,100 there).

    python benchmarks/staking_gas.py [--json] [--sizes 1,100,10000] [--projects 2,10,50,200]
                                     [--contributions 10,1000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ANVIL = REPO / "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
UNIT = 10**18
MIN_STAKE = 100 * UNIT
DELAY = 3600
KEY = (9).to_bytes(32, "little")  # an X25519 public key the registry accepts (u = 9)
CHUNK = 500
GAS_LIMIT = 2_000_000_000  # our anvil's blocks: a batch of setup transactions fits in one
#: runtime code answering every call with the 32-byte word 1: creditsAt(...) = 1 for everyone
CREDITS_STUB = "0x600160005260206000f3"
STAKING_OPS = (
    ("claim", "claimRewards (claim)"),
    ("compound", "claimRewards (compound)"),
    ("topup", "delegate (top-up)"),
    ("undelegate", "undelegate"),
    ("withdraw", "withdrawUnbonded"),
    ("delegate", "delegate (new delegator)"),
    ("validator_claim", "claimRewards (validator: commission too)"),
)


# ---------------------------------------------------------------- the node


@contextlib.contextmanager
def anvil_node():
    """DIN_TEST_ANVIL, or an anvil of our own on a free loopback port (stopped afterwards)."""
    url = os.environ.get("DIN_TEST_ANVIL")
    if url:
        yield url
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(ANVIL), "--port", str(port), "--host", "127.0.0.1", "--silent"]
        + ["--gas-limit", str(GAS_LIMIT), "--prune-history", "64"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


class Node:
    """JSON-RPC to anvil: single calls, batches, impersonated transactions and their receipts."""

    def __init__(self, url: str):
        import requests

        self.url = url
        self.session = requests.Session()

    def call(self, method: str, *params):
        return self.batch([(method, list(params))])[0]

    def batch(self, calls: list[tuple[str, list]]) -> list:
        out = []
        for i in range(0, len(calls), CHUNK):
            part = calls[i : i + CHUNK]
            body = [
                {"jsonrpc": "2.0", "id": j, "method": m, "params": p}
                for j, (m, p) in enumerate(part)
            ]
            answer = {
                a["id"]: a for a in self.session.post(self.url, json=body, timeout=300).json()
            }
            for j, (m, _) in enumerate(part):
                if "error" in answer[j]:
                    raise RuntimeError(f"{m}: {answer[j]['error'].get('message')}")
                out.append(answer[j]["result"])
        return out

    def send_many(self, txs: list[dict]) -> list[dict]:
        """Send impersonated transactions (``from``, ``to``, ``data``; a sender with several
        gets consecutive explicit nonces) in chunks, each mined before the next is sent (a
        pool of thousands of pending transactions slows anvil down badly); their receipts,
        each checked for success."""
        senders = list(dict.fromkeys(t["from"] for t in txs))
        counts = self.batch([("eth_getTransactionCount", [a, "pending"]) for a in senders])
        nonces = {a: int(n, 16) for a, n in zip(senders, counts, strict=True)}
        receipts: list[dict] = []
        for start in range(0, len(txs), CHUNK):
            chunk = txs[start : start + CHUNK]
            calls = []
            for t in chunk:
                sent = {k: v for k, v in t.items() if k != "label"}
                sent = {"gas": hex(400_000), **sent, "nonce": hex(nonces[t["from"]])}
                nonces[t["from"]] += 1
                calls.append(("eth_sendTransaction", [sent]))
            hashes = self.batch(calls)
            got = self.batch([("eth_getTransactionReceipt", [h]) for h in hashes])
            for _ in range(600):  # a full block leaves some pending: mine them
                missing = [i for i, r in enumerate(got) if r is None]
                if not missing:
                    break
                self.call("evm_mine")
                again = self.batch([("eth_getTransactionReceipt", [hashes[i]]) for i in missing])
                for i, r in zip(missing, again, strict=True):
                    got[i] = r
            for t, r in zip(chunk, got, strict=True):
                if r is None or int(r["status"], 16) != 1:
                    raise RuntimeError(f"{t.get('label', t['data'][:10])} failed: {r}")
            receipts += got
        return receipts

    def send(self, sender: str, fn, label: str = "") -> int:
        """One impersonated call; its gas used."""
        tx = {"from": sender, "to": fn.address, "data": fn._encode_transaction_data()}
        tx["gas"] = hex(20_000_000)  # rounds of 200 projects need millions; only use is paid
        return int(self.send_many([{**tx, "label": label}])[0]["gasUsed"], 16)

    def advance(self, seconds: int) -> None:
        self.batch([("evm_increaseTime", [int(seconds)]), ("evm_mine", [])])


def addresses(tag: int, n: int, start: int = 0) -> list[str]:
    """``n`` distinct plain addresses (no key: anvil impersonates them)."""
    from eth_utils import to_checksum_address

    return [to_checksum_address(f"0x{tag:08x}{i:032x}") for i in range(start, start + n)]


def tx(sender: str, fn) -> dict:
    return {"from": sender, "to": fn.address, "data": fn._encode_transaction_data()}


def fund(node: Node, dev: str, token, spender: str, accounts: list[str], tokens: int) -> None:
    """Ether, ``tokens`` from the dev account and an unlimited allowance to ``spender``."""
    node.batch([("anvil_setBalance", [a, hex(10 * UNIT)]) for a in accounts])
    node.send_many([tx(dev, token.functions.transfer(a, tokens)) for a in accounts])
    node.send_many([tx(a, token.functions.approve(spender, 2**256 - 1)) for a in accounts])


# ---------------------------------------------------------------- staking


def staking(chain, node: Node, dep: dict, sizes: list[int]) -> dict[str, dict[int, int]]:
    reg = chain.contract("ValidatorRegistry", dep["ValidatorRegistry"])
    token = chain.contract("DinToken", dep["DinToken"])
    dev = chain.dev_account().address
    validator = addresses(0xA11DA7E0, 1)[0]
    fund(node, dev, token, reg.address, [validator], 10 * MIN_STAKE)
    node.send(validator, reg.functions.stake(MIN_STAKE, KEY), "stake")
    node.send(validator, reg.functions.setCommission(1000), "setCommission")  # at once: alone
    # steady state: emission minted and rewards paid once already (first writes of the
    # registry's totals cost 17,100 gas more each, once in the network's life)
    node.advance(60)
    node.send(validator, reg.functions.claimRewards(validator, False), "first claim")
    gas: dict[str, dict[int, int]] = {key: {} for key, _ in STAKING_OPS}
    joined = 0
    fresh = addresses(0xF7E5, len(sizes))
    fund(node, dev, token, reg.address, fresh, 1000 * UNIT)
    for k, n in enumerate(sorted(sizes)):
        if n > joined:  # grow the pool to n delegators
            new = addresses(0xDE1E, n - joined, start=joined)
            fund(node, dev, token, reg.address, new, 1000 * UNIT)
            node.send_many(
                [tx(a, reg.functions.delegate(validator, 10 * UNIT + i)) for i, a in enumerate(new)]
            )
            joined = n
        assert chain.call(reg.functions.pools(validator))[1] > 0
        me = addresses(0xDE1E, 1, start=n - 1)[0]  # the last delegator to join
        steps = [
            ("claim", me, reg.functions.claimRewards(validator, False), 60),
            ("compound", me, reg.functions.claimRewards(validator, True), 60),
            ("topup", me, reg.functions.delegate(validator, 5 * UNIT), 60),
            ("undelegate", me, reg.functions.undelegate(validator, UNIT), 60),
            ("withdraw", me, reg.functions.withdrawUnbonded(validator), DELAY + 1),
            ("delegate", fresh[k], reg.functions.delegate(validator, 10 * UNIT), 60),
            ("validator_claim", validator, reg.functions.claimRewards(validator, False), 60),
        ]
        for key, sender, fn, wait in steps:
            node.advance(wait)
            gas[key][n] = node.send(sender, fn, key)
        print(f"  staking: measured at {n} delegators", file=sys.stderr)
    return gas


# ---------------------------------------------------------------- grants


def grants_rounds(
    chain, node: Node, dep: dict, projects: list[int], contributions: list[int]
) -> list[dict]:
    token = chain.contract("DinToken", dep["DinToken"])
    dev_account = chain.dev_account()
    dev = dev_account.address
    eco = dep["economy"]
    stub = addresses(0xC7ED175, 1)[0]
    node.call("anvil_setCode", stub, CREDITS_STUB)
    stubbed = chain.deploy(
        dev_account,
        "DinGrants",
        token.address,
        stub,
        int(eco["round_share_bps"]),
        int(eco["contribution_cap"]),
    )
    contracts = {False: dep["DinGrants"], True: stubbed}
    n_contributors = max(contributions)
    people = addresses(0xC0DE, min(n_contributors, 1000))
    node.batch([("anvil_setBalance", [a, hex(10 * UNIT)]) for a in people])
    node.send_many([tx(dev, token.functions.transfer(a, 10_000 * UNIT)) for a in people])
    for address in contracts.values():
        node.send_many([tx(a, token.functions.approve(address, 2**256 - 1)) for a in people])
    rows = []
    for counted, address in contracts.items():
        grants = chain.contract("DinGrants", address)
        for p in projects:
            for c in contributions:
                node.send(dev, token.functions.transfer(address, 1000 * UNIT), "donate")
                recipients = addresses(0x9E0, p, start=1000 * p)
                cids = [b"\x01\x55\x12\x20" + i.to_bytes(32, "big") for i in range(p)]
                open_gas = node.send(
                    dev, grants.functions.openRound(recipients, cids, 3600), "open"
                )
                rid = chain.call(grants.functions.roundCount())
                # contribution i goes to project i mod p from contributor i div p: a project's
                # contributions come from different accounts (a lone one gets no match)
                node.send_many(
                    [
                        tx(
                            people[(i // p) % len(people)],
                            grants.functions.contribute(rid, i % p, UNIT + i),
                        )
                        for i in range(c)
                    ]
                )
                node.advance(3601)
                gas = node.send(dev, grants.functions.finalize(rid), "finalize")
                first = chain.call(grants.functions.projects(rid, 0))
                assert (first[2] > 0) == counted  # its counted sum: credits made it count
                matched = sum(
                    1
                    for i in range(min(p, c))
                    if chain.call(grants.functions.projects(rid, i))[4] > 0
                )
                rows.append(
                    {
                        "projects": p,
                        "contributions": c,
                        "counted": counted,
                        "matched_projects": matched,
                        "finalize_gas": gas,
                        "open_round_gas": open_gas,
                    }
                )
                print(
                    f"  grants: {p} projects, {c} contributions, counted={counted}", file=sys.stderr
                )
    return rows


# ---------------------------------------------------------------- report


def table(staking_gas: dict, sizes: list[int], rows: list[dict]) -> str:
    lines = ["Delegated staking: gas per call, one validator's pool of N delegators", ""]
    head = f"{'operation':42}" + "".join(f"{f'N={n:,}':>12}" for n in sizes)
    lines += [head, "-" * len(head)]
    for key, label in STAKING_OPS:
        lines.append(f"{label:42}" + "".join(f"{staking_gas[key][n]:>12,}" for n in sizes))
    lines += [
        "",
        "(each call 60 s after the previous one: it mints and spreads the emission due too;",
        " withdrawUnbonded after the one-hour unbonding delay. A difference between columns is",
        " a storage slot going from zero to nonzero (17,100 gas more), e.g. the pool's unclaimed",
        " commission right after the validator claimed it, never a loop over delegators.)",
        "",
        "DinGrants: gas of finalize (and openRound) per round",
        "",
    ]
    head = (
        f"{'projects':>9}{'contributions':>15}{'counted':>9}{'matched':>9}"
        f"{'finalize':>12}{'openRound':>12}"
    )
    lines += [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['projects']:>9}{r['contributions']:>15,}{'yes' if r['counted'] else 'no':>9}"
            f"{r['matched_projects']:>9}"
            f"{r['finalize_gas']:>12,}{r['open_round_gas']:>12,}"
        )
    lines += [
        "",
        "counted = no:  the deployed DinGrants; its credits come from DinGovernor and nobody here",
        "               has any (credits are earned in settled tasks), so no contribution counts",
        "               toward matching and finalize takes the no-match path (the fund returns).",
        "counted = yes: a second DinGrants whose credits oracle is a stub answering 1 for every",
        "               account, so every contribution counts and finalize splits the fund.",
        "matched:       projects that got a share of the matching fund (a project needs two or",
        "               more contributors: a lone contribution c matches (sqrt c)^2 - c = 0).",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--sizes", default="1,100,10000", help="pool sizes (delegators)")
    ap.add_argument("--projects", default="2,10,50,200", help="projects per round")
    ap.add_argument("--contributions", default="10,1000", help="contributions per round")
    args = ap.parse_args()
    sizes = sorted(int(x) for x in args.sizes.split(","))
    projects = [int(x) for x in args.projects.split(",")]
    contributions = [int(x) for x in args.contributions.split(",")]

    from din_cli.chain.client import connect
    from din_cli.chain.din import deploy_all

    t0 = time.time()
    with anvil_node() as url:
        chain = connect(url)
        node = Node(url)
        node.call("anvil_autoImpersonateAccount", True)
        dev = chain.dev_account()
        dep = deploy_all(chain, dev, min_stake=MIN_STAKE, unstake_delay=DELAY)
        # grants first: once 10,000 delegators are in, anvil takes seconds to mine each block
        rows = grants_rounds(chain, node, dep, projects, contributions)
        staking_gas = staking(chain, node, dep, sizes)
        client = chain.client_version
        chain.close()
    if args.json:
        out = {
            "node": client,
            "seconds": round(time.time() - t0, 1),
            "staking": {
                label: {str(n): staking_gas[key][n] for n in sizes} for key, label in STAKING_OPS
            },
            "grants": rows,
        }
        print(json.dumps(out, indent=2))
    else:
        print(table(staking_gas, sizes, rows))
        print(f"\n({client}, {time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
