"""The embedded chain against stock eth-tester, side by side.

Sends N DinToken transfers (one block each) on din's embedded chain (SQLite
file, one commit per transaction) and on eth-tester's in-memory chain through
web3's EthereumTesterProvider, then times what commands do all day: read
events (din: its event index; eth-tester: eth_getLogs, which scans every
block), fetch an old receipt (din: py-evm's transaction index; eth-tester: a
backward scan), and open the chain in a new process.

    python benchmarks/chain.py [N]        # default N = 300
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def best_of(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    home = tempfile.mkdtemp(prefix="din-bench-")
    os.environ["DIN_HOME"] = home
    from eth_account import Account
    from web3 import EthereumTesterProvider, Web3

    from din_cli.chain.client import connect, load_artifact

    art = load_artifact("DinToken")
    recipients = [Account.create().address for _ in range(10)]

    # din: embedded chain in $DIN_HOME/chain.sqlite
    chain = connect(None)
    me = chain.dev_account()
    token = chain.contract("DinToken", chain.deploy(me, "DinToken", 10**27))
    t = time.perf_counter()
    hashes = [
        chain.send(me, token.functions.transfer(recipients[i % 10], 1))["transactionHash"]
        for i in range(n)
    ]
    din_send = (time.perf_counter() - t) / n

    # baseline: eth-tester in memory, web3's own transact + receipt
    w3 = Web3(EthereumTesterProvider())
    sender = w3.eth.accounts[0]
    factory = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    address = w3.eth.get_transaction_receipt(
        factory.constructor(10**27).transact({"from": sender})
    )["contractAddress"]
    ref = w3.eth.contract(address=address, abi=art["abi"])
    t = time.perf_counter()
    ref_hashes = []
    for i in range(n):
        h = ref.functions.transfer(recipients[i % 10], 1).transact({"from": sender})
        w3.eth.get_transaction_receipt(h)
        ref_hashes.append(h)
    ref_send = (time.perf_counter() - t) / n

    who = recipients[3]
    din_all = best_of(lambda: chain.logs(token, "Transfer", from_block=2))
    din_one = best_of(lambda: chain.logs(token, "Transfer", to=who))
    transfer = ref.events.Transfer()
    ref_all = best_of(
        lambda: [
            transfer.process_log(x) for x in w3.eth.get_logs({"address": address, "fromBlock": 2})
        ],
        1,
    )
    topic = "0x" + bytes(12).hex() + who[2:].lower()
    ref_one = best_of(
        lambda: w3.eth.get_logs(
            {"address": address, "fromBlock": 0, "topics": [None, None, topic]}
        ),
        1,
    )
    assert len(chain.logs(token, "Transfer", to=who)) == len(
        w3.eth.get_logs({"address": address, "fromBlock": 0, "topics": [None, None, topic]})
    )
    din_rcpt = best_of(lambda: chain.w3.eth.get_transaction_receipt(hashes[0]))
    ref_rcpt = best_of(lambda: w3.eth.get_transaction_receipt(ref_hashes[0]), 1)
    chain.close()

    def in_new_process(code: str) -> float:
        runs = [
            subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
            for _ in range(3)
        ]
        return min(float(r.stdout.split()[-1]) for r in runs)

    din_open = in_new_process(
        "import time;t=time.perf_counter();from din_cli.chain.client import connect;c=connect(None);c.head();print(time.perf_counter()-t)"
    )
    ref_open = in_new_process(
        "import time;t=time.perf_counter();from web3 import Web3,EthereumTesterProvider;"
        "Web3(EthereumTesterProvider()).eth.block_number;print(time.perf_counter()-t)"
    )
    size = sum(p.stat().st_size for p in Path(home).glob("chain.sqlite*"))

    row = "{:<40} {:>10}   {}"
    print(f"embedded chain vs eth-tester, {n} token transfers, one block each")
    print(row.format("", "din", "baseline"))
    print(
        row.format(
            "send + mine + receipt, ms/tx",
            f"{din_send * 1e3:.1f}",
            f"{ref_send * 1e3:.1f}  eth-tester in RAM (web3 transact)",
        )
    )
    print(
        row.format(
            f"decode all {n} Transfer events, ms",
            f"{din_all * 1e3:.1f}",
            f"{ref_all * 1e3:.1f}  eth_getLogs (scans every block)",
        )
    )
    print(
        row.format(
            "Transfer events to one address, ms",
            f"{din_one * 1e3:.1f}",
            f"{ref_one * 1e3:.1f}  eth_getLogs with topic filter",
        )
    )
    print(
        row.format(
            "receipt of the first tx, ms",
            f"{din_rcpt * 1e3:.2f}",
            f"{ref_rcpt * 1e3:.1f}  backward block scan",
        )
    )
    print(
        row.format(
            f"new process: open {n}-block chain, s",
            f"{din_open:.2f}",
            f"{ref_open:.2f}  a fresh empty in-memory chain",
        )
    )
    print(row.format("chain file on disk, KiB", f"{size / 1024:.0f}", "-  (nothing persisted)"))


if __name__ == "__main__":
    main()
