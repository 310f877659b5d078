"""Many simulated accounts' transactions from one process: local nonces, JSON-RPC batches.

A node's ``send`` (estimate, nonce, send, wait) costs four round trips per
transaction; ten thousand participants joining or submitting at once would
spend minutes waiting on them. ``send_many`` reads the senders' nonces in one
batch, signs every transaction here counting them up itself (an account with
several transactions in one call gets consecutive nonces), posts them in
JSON-RPC batches, then fetches the receipts in batches. On the embedded
chain it sends them one by one (a revert there is refused before it is
mined, and uses no gas).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from din_cli.errors import BackendUnavailable

CHUNK = 400


@dataclass
class Sent:
    """One transaction's outcome: who sent it, what, the gas it used and whether it succeeded."""

    sender: str
    name: str
    gas: int
    ok: bool
    reason: str = ""


class Batch:
    """Send many accounts' calls at once from one process (``send_many``)."""

    def __init__(self, chain):
        self.chain = chain
        self._nonces: dict[str, int] = {}
        self._session = None

    # ------------------------------------------------------------------ JSON-RPC
    def _post(self, calls: list[tuple[str, list]]) -> list[Any]:
        """One JSON-RPC batch; the results in order (an error's message as an Exception)."""
        import requests

        if self._session is None:
            self._session = requests.Session()
        body = [
            {"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)
        ]
        try:
            r = self._session.post(self.chain.url, json=body, timeout=120)
            r.raise_for_status()
        except requests.RequestException as e:
            raise BackendUnavailable(
                f"cannot reach the chain node at {self.chain.url} ({type(e).__name__})",
                "start the node or fix the scenario's chain",
            ) from None
        answer = r.json()
        if not isinstance(answer, list):  # a node that refuses the batch as a whole
            message = (
                answer.get("error", {}).get("message", answer)
                if isinstance(answer, dict)
                else answer
            )
            raise BackendUnavailable(
                f"the chain node at {self.chain.url} refused a batch of {len(calls)} calls ({message})",
                "use a node that accepts JSON-RPC batches (anvil, geth, reth)",
            )
        by_id = {item["id"]: item for item in answer}
        out = []
        for i in range(len(calls)):
            item = by_id.get(i, {})
            out.append(
                Exception(item["error"].get("message", "error"))
                if "error" in item
                else item.get("result")
            )
        return out

    def _nonce_of(self, addresses: list[str]) -> None:
        missing = [a for a in dict.fromkeys(addresses) if a not in self._nonces]
        for i in range(0, len(missing), CHUNK):
            part = missing[i : i + CHUNK]
            got = self._post([("eth_getTransactionCount", [a, "pending"]) for a in part])
            for a, n in zip(part, got, strict=True):
                if isinstance(n, Exception):
                    raise BackendUnavailable(f"nonce of {a}: {n}", "retry the simulation")
                self._nonces[a] = int(n, 16)

    # ------------------------------------------------------------------ sending
    def send_many(
        self, items: list[tuple[Any, Any]], name: str, *, gas: int | None = None
    ) -> list[Sent]:
        """Send ``(account, contract function)`` pairs; one ``Sent`` per pair, in order.

        The gas limit is the first call's estimate with room for the last one, which may also
        move the task to its next phase (``gas`` overrides it). Reverted transactions are mined
        and reported (``ok`` False, with the reason), not raised: a straggler's late submission
        is an outcome of the run, not an error of it.
        """
        if not items:
            return []
        if self.chain.url is None or not self.chain.url.startswith("http"):
            return self._one_by_one(items, name)
        from eth_utils import to_checksum_address

        if gas is None:  # the first and the last call's estimates (the last may end the phase)
            est = 0
            for acct, fn in {0: items[0], 1: items[-1]}.values():
                try:
                    est = max(est, fn.estimate_gas({"from": acct.address}, "pending"))
                except Exception:  # noqa: BLE001 - it reverts now (a late submission): mined as failed
                    est = max(est, 200_000)
            gas = min(int(est * 1.5) + 300_000, self.chain._block_gas_limit())
        fee = int(self.chain.w3.eth.gas_price) * 2 + 1
        # read each sender's nonce afresh (one batch): the same accounts also send elsewhere
        # (a validator's steps on a worker), so a count kept from the last batch may be stale
        for a, _ in items:
            self._nonces.pop(a.address, None)
        self._nonce_of([a.address for a, _ in items])
        hashes: list[str] = []
        for i in range(0, len(items), CHUNK):
            raws = []
            for acct, fn in items[i : i + CHUNK]:
                tx = {
                    "to": to_checksum_address(fn.address),
                    "data": fn._encode_transaction_data(),
                    "value": 0,
                    "gas": gas,
                    "gasPrice": fee,
                    "nonce": self._nonces[acct.address],
                    "chainId": self.chain.chain_id,
                }
                self._nonces[acct.address] += 1
                raws.append("0x" + bytes(acct.sign_transaction(tx).raw_transaction).hex())
            for h in self._post([("eth_sendRawTransaction", [r]) for r in raws]):
                if isinstance(h, Exception):
                    self._nonces.clear()  # the node's view wins on the next batch
                    raise BackendUnavailable(
                        f"{name}: the node refused a transaction ({h})", "retry"
                    )
                hashes.append(h)
        receipts = self._receipts(hashes)
        out = []
        for (acct, _fn), rc in zip(items, receipts, strict=True):
            ok = int(rc["status"], 16) == 1
            out.append(
                Sent(acct.address, name, int(rc["gasUsed"], 16), ok, "" if ok else "reverted")
            )
        failed = [k for k, s in enumerate(out) if not s.ok]
        if failed:  # the first failure's reason, by replaying it (the rest are usually alike)
            acct, fn = items[failed[0]]
            from din_cli.errors import TransactionReverted

            try:
                self.chain.call(fn, sender=acct.address)
                reason = "reverted"
            except TransactionReverted as e:
                reason = str(e)
            except Exception as e:  # noqa: BLE001 - any reason text will do
                reason = str(e)[:200]
            for k in failed:
                out[k].reason = reason
        return out

    def _receipts(self, hashes: list[str]) -> list[dict]:
        import time

        got: dict[str, dict] = {}
        deadline = time.monotonic() + 300
        while len(got) < len(hashes):
            todo = [h for h in hashes if h not in got]
            for i in range(0, len(todo), CHUNK):
                part = todo[i : i + CHUNK]
                for h, rc in zip(
                    part,
                    self._post([("eth_getTransactionReceipt", [h]) for h in part]),
                    strict=True,
                ):
                    if isinstance(rc, dict):
                        got[h] = rc
            if len(got) < len(hashes):
                if time.monotonic() > deadline:
                    raise BackendUnavailable(
                        f"{len(hashes) - len(got)} transaction(s) not mined within 300 s",
                        "check that the node mines blocks",
                    )
                time.sleep(0.05)
        return [got[h] for h in hashes]

    def _one_by_one(self, items, name: str) -> list[Sent]:
        from din_cli.errors import TransactionReverted

        out = []
        send = type(self.chain).send  # the class's: a caller that records sends counts these itself
        for acct, fn in items:
            try:
                rc = send(self.chain, acct, fn, _name=name)
                out.append(Sent(acct.address, name, int(rc["gasUsed"]), True))
            except TransactionReverted as e:  # refused in its gas estimate: nothing mined
                out.append(Sent(acct.address, name, 0, False, str(e)))
        return out
