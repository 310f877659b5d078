"""One chain client over two kinds of chain: the embedded one and any JSON-RPC node.

``connect()`` gives the embedded chain in ``$DIN_HOME/chain.sqlite``;
``connect("http://127.0.0.1:8545")`` a JSON-RPC node (anvil, geth, an L2);
``connect("memory")`` a throw-away embedded chain for tests. Every
``Chain`` signs locally, reports reverts with the contract's decoded reason
(``TransactionReverted``), and returns decoded events.

Heavy libraries (web3, eth-tester, py-evm) are imported inside functions so
that importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from din_cli.errors import (
    BackendUnavailable,
    InputError,
    NotFoundError,
    TransactionReverted,
    UsageError,
)

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
#: anvil's (and hardhat's) first default account; used as the dev faucet there.
ANVIL_FAUCET_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
PANIC_CODES = {
    0x00: "generic panic",
    0x01: "assert(false)",
    0x11: "arithmetic overflow or underflow",
    0x12: "division or modulo by zero",
    0x21: "invalid enum value",
    0x22: "bad storage byte array encoding",
    0x31: "pop() on an empty array",
    0x32: "array index out of bounds",
    0x41: "out of memory",
    0x51: "call to a zero-initialised function",
}


_HELD: dict[str, list] = {}
_HELD_GUARD = threading.Lock()


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive lock on ``path`` across processes (fcntl), re-entrant within one process."""
    import fcntl

    key = str(Path(path).absolute())
    with _HELD_GUARD:
        entry = _HELD.setdefault(key, [None, 0, threading.RLock()])
    with entry[2]:
        if entry[1] == 0:
            Path(key).parent.mkdir(parents=True, exist_ok=True)
            f = open(key, "a+")
            fcntl.flock(f, fcntl.LOCK_EX)
            entry[0] = f
        entry[1] += 1
        try:
            yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                fcntl.flock(entry[0], fcntl.LOCK_UN)
                entry[0].close()
                entry[0] = None


def connect(url: str | None = None) -> Chain:
    """Open a chain: ``None`` the embedded one, ``"memory"`` a throw-away one, else JSON-RPC.

    Example:
        chain = connect()                       # $DIN_HOME/chain.sqlite
        chain = connect("http://127.0.0.1:8545")
    """
    if url is None or url in ("", "embedded"):
        from din_cli.config import din_home

        return EmbeddedChain(din_home() / "chain.sqlite")
    if url == "memory":
        return EmbeddedChain(":memory:")
    if url.startswith(("http://", "https://")):
        return RpcChain(url)
    if url.startswith(("sqlite:", "file:")):
        return EmbeddedChain(url.split(":", 1)[1])
    raise UsageError(
        f"--chain {url}: not a chain URL",
        "give http://HOST:PORT, or leave it out for the embedded chain",
    )


@functools.lru_cache(maxsize=64)
def _artifact_text(name: str) -> str:
    path = ARTIFACTS / f"{name}.json"
    try:
        return path.read_text()
    except FileNotFoundError:
        raise NotFoundError(
            f"contract artifact {name!r} not found in {ARTIFACTS}", "rebuild the contracts"
        ) from None


def load_artifact(name: str) -> dict:
    """The compiled contract ``name``: ``{"abi": [...], "bytecode": "0x..."}``."""
    try:
        return json.loads(_artifact_text(name))
    except json.JSONDecodeError as e:
        raise InputError(
            f"contract artifact {name!r} is not valid JSON ({e})", "rebuild the contracts"
        ) from e


def link(art: dict, libraries: dict) -> str:
    """The creation code of ``art`` with each linked library's address written in."""
    code = art["bytecode"]
    links = art.get("links", {})
    missing = sorted(set(links) - set(libraries))
    if missing:
        raise UsageError(
            f"contract needs the address of library {missing[0]}", "deploy the library first"
        )
    chars = list(code)
    for lib, starts in links.items():
        address = libraries[lib].lower().removeprefix("0x")
        for start in starts:
            at = 2 + 2 * start  # after "0x"
            chars[at : at + 40] = address
    return "".join(chars)


def _art(artifact: str | dict) -> dict:
    """An artifact by name, or one given as a dict with ``abi`` (and ``bytecode``)."""
    return artifact if isinstance(artifact, dict) else load_artifact(artifact)


@functools.lru_cache(maxsize=1)
def _known_errors() -> dict[bytes, dict]:
    """Selector -> error ABI entry, over every artifact (a call may revert in another contract)."""
    from eth_utils import function_abi_to_4byte_selector

    table: dict[bytes, dict] = {}
    if ARTIFACTS.is_dir():
        for path in sorted(ARTIFACTS.glob("*.json")):
            with contextlib.suppress(Exception):
                for entry in json.loads(path.read_text()).get("abi", []):
                    if entry.get("type") == "error":
                        table.setdefault(function_abi_to_4byte_selector(entry), entry)
    return table


def _abi_type(inp: dict) -> str:
    t = inp["type"]
    if t.startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in inp.get("components", [])) + ")" + t[5:]
    return t


def _show(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def decode_revert(data: bytes | str | None, abi: list | None = None) -> str:
    """A readable reason for revert ``data``: Error(string), Panic(uint256) or a custom error."""
    from eth_abi import decode
    from eth_utils import function_abi_to_4byte_selector, to_bytes

    if isinstance(data, str):
        try:
            data = to_bytes(hexstr=data)
        except Exception:
            return data
    if not data:
        return "reverted without a reason"
    selector, body = data[:4], data[4:]
    if selector == bytes.fromhex("08c379a0"):
        with contextlib.suppress(Exception):
            return decode(["string"], body)[0]
    if selector == bytes.fromhex("4e487b71"):
        with contextlib.suppress(Exception):
            code = decode(["uint256"], body)[0]
            return f"panic 0x{code:02x} ({PANIC_CODES.get(code, 'unknown')})"
    errors = {function_abi_to_4byte_selector(e): e for e in (abi or []) if e.get("type") == "error"}
    entry = errors.get(selector) or _known_errors().get(selector)
    if entry is None:
        return f"custom error 0x{data.hex()}"
    inputs = entry.get("inputs", [])
    try:
        values = decode([_abi_type(i) for i in inputs], body)
    except Exception:
        return f"{entry['name']}(0x{body.hex()})"
    args = ", ".join(
        f"{i['name']}={_show(v)}" if i.get("name") else _show(v)
        for i, v in zip(inputs, values, strict=True)
    )
    return f"{entry['name']}({args})"


def _fn_name(fn) -> str:
    name = getattr(fn, "fn_name", None) or getattr(fn, "abi_element_identifier", None)
    if name:
        return str(name).split("(")[0]
    return "constructor"


def _revert_from_exception(e: Exception, abi: list | None) -> str | None:
    """The decoded reason if ``e`` is web3's report of a revert, else None."""
    from web3.exceptions import ContractLogicError

    if not isinstance(e, ContractLogicError):
        return None
    data = getattr(e, "data", None)
    if isinstance(data, str) and data.startswith("0x"):
        return decode_revert(data, abi)
    if isinstance(data, (bytes, bytearray)):
        return decode_revert(bytes(data), abi)
    msg = str(getattr(e, "message", None) or e)
    return (
        msg.removeprefix("execution reverted: ").removeprefix("execution reverted")
        or "reverted without a reason"
    )


def _topic_for(inp: dict, value: Any) -> bytes | None:
    """The topic an indexed argument with ``value`` has (None: cannot be matched by topic)."""
    from eth_abi import encode
    from eth_utils import keccak

    t = inp["type"]
    if t == "string":
        return keccak(text=value) if isinstance(value, str) else None
    if t == "bytes":
        return keccak(bytes(value))
    if t.endswith("]") or t.startswith("tuple"):
        return None
    try:
        return encode([t], [value])
    except Exception:
        return None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str) and a.startswith("0x") and b.startswith("0x"):
        return a.lower() == b.lower()
    if isinstance(a, (bytes, bytearray)) and isinstance(b, str):
        return "0x" + bytes(a).hex() == b.lower()
    return a == b


class Chain:
    """A chain din talks to: send, deploy, call, read events, (on dev chains) move time."""

    w3: Any
    chain_id: int
    url: str | None
    is_dev: bool

    #: decoded logs kept per query (see ``logs``); the least recently used beyond this are dropped
    LOG_CACHE_ENTRIES = 256

    def __init__(self, w3, *, url: str | None, is_dev: bool):
        from collections import OrderedDict

        self.w3 = w3
        self.url = url
        self.is_dev = is_dev
        self._log_cache: OrderedDict[tuple, tuple[int, bytes, list]] = OrderedDict()
        with self._rpc_errors():
            self.chain_id = int(w3.eth.chain_id)

    # Hooks for the two kinds ---------------------------------------------
    def writing(self) -> contextlib.AbstractContextManager[None]:
        """One atomic unit of writes (a SQLite transaction on the embedded chain)."""
        return contextlib.nullcontext()

    def _send_lock(self, address: str) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def _pending_nonce(self, address: str) -> int:
        return self.w3.eth.get_transaction_count(address, "pending")

    @contextlib.contextmanager
    def _rpc_errors(self) -> Iterator[None]:
        yield

    def _head(self) -> tuple[int, bytes]:
        """Number and hash of the latest block."""
        block = self.w3.eth.get_block("latest")
        return int(block["number"]), bytes(block["hash"])

    def _block_hash(self, number: int) -> bytes | None:
        """Hash of the canonical block ``number`` (None when the chain is shorter)."""
        from web3.exceptions import BlockNotFound

        try:
            return bytes(self.w3.eth.get_block(int(number))["hash"])
        except BlockNotFound:
            return None

    def _fresh(self) -> None:
        """Catch up with writes other processes committed (embedded chain)."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # Contracts ------------------------------------------------------------
    def contract(self, artifact: str, address: str):
        """A web3 contract at ``address`` with the ABI of ``artifact``."""
        from eth_utils import is_address, to_checksum_address

        if not isinstance(address, str) or not is_address(address):
            raise InputError(f"{address!r}: not an address", "give a 0x-prefixed 20-byte address")
        return self.w3.eth.contract(address=to_checksum_address(address), abi=_art(artifact)["abi"])

    def deploy(self, account, artifact: str, *args, libraries: dict | None = None) -> str:
        """Deploy ``artifact`` with constructor ``args`` from ``account``; the checksum address.

        ``libraries`` maps each linked library the artifact lists under ``links`` to its deployed
        address.
        """
        art = _art(artifact)
        factory = self.w3.eth.contract(abi=art["abi"], bytecode=link(art, libraries or {}))
        label = artifact if isinstance(artifact, str) else art.get("contractName", "contract")
        receipt = self.send(
            account, factory.constructor(*args), _name=f"{label} constructor", _abi=art["abi"]
        )
        return receipt["contractAddress"]

    def call(self, fn, *, sender: str | None = None):
        """Run ``fn`` with eth_call; a revert raises TransactionReverted with its reason."""
        self._fresh()
        params = {"from": sender or "0x" + "00" * 20}
        with self._rpc_errors():
            try:
                return fn.call(params)
            except Exception as e:
                reason = _revert_from_exception(e, getattr(fn, "contract_abi", None))
                if reason is None:
                    raise
                raise TransactionReverted(reason, function=_fn_name(fn)) from None

    def send(
        self,
        account,
        fn,
        *,
        value: int = 0,
        gas: int | None = None,
        _name: str | None = None,
        _abi=None,
    ) -> Any:
        """Sign ``fn`` locally with ``account``, send it, wait for it; the receipt.

        A revert (in the gas estimate or on chain) raises TransactionReverted
        with the contract's reason. Nonces are safe across processes.
        """
        name = _name or _fn_name(fn)
        abi = _abi or getattr(fn, "contract_abi", None)
        with self._rpc_errors(), self.writing(), self._send_lock(account.address):
            params: dict[str, Any] = {
                "from": account.address,
                "value": int(value),
                "chainId": self.chain_id,
            }
            if gas is None:
                try:
                    gas = self._gas_for(fn, params)
                except Exception as e:
                    reason = _revert_from_exception(e, abi)
                    if reason is None:
                        raise self._send_error(e, name, account.address) from e
                    raise TransactionReverted(reason, function=name) from None
            params["gas"] = int(gas)
            for attempt in range(5):
                params["nonce"] = self._pending_nonce(account.address)
                try:
                    tx = fn.build_transaction(params)
                    signed = account.sign_transaction(tx)
                    tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
                    break
                except Exception as e:
                    text = str(e).lower()
                    if attempt < 4 and (
                        "nonce too low" in text
                        or "already known" in text
                        or "replacement transaction" in text
                    ):
                        time.sleep(0.05 * (attempt + 1))
                        continue
                    reason = _revert_from_exception(e, abi)
                    if reason is not None:
                        raise TransactionReverted(reason, function=name) from None
                    raise self._send_error(e, name, account.address) from e
            receipt = self.w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=120, poll_latency=0.05
            )
            if receipt["status"] != 1:
                raise TransactionReverted(self._replay_reason(tx, receipt, abi), function=name)
            return receipt

    def _gas_for(self, fn, params: dict) -> int:
        """Gas limit for ``fn``: the node's estimate plus a margin (a revert raises here).

        Estimated in the pending block, the one the transaction goes into, so a call that
        needs a later block than the latest (a dispute's committee draw) is not refused. The
        fixed part of the margin covers the registry's emission: any staking call first mints
        what the schedule released since the last one, and whether anything is due can change
        between the estimate and the block (up to ~125k gas more: the network's first mint
        writes fresh slots)."""
        estimate = fn.estimate_gas(params, "pending")
        return min(int(estimate * 1.25) + 200_000, self._block_gas_limit())

    def _send_error(self, e: Exception, name: str, sender: str = "the sender") -> Exception:
        import requests

        from din_cli.errors import DinError

        if isinstance(
            e, (DinError, requests.exceptions.ConnectionError, requests.exceptions.Timeout)
        ):
            return e
        text = " ".join(str(e).split())
        low = text.lower()
        if (
            "insufficient funds" in low
            or "cannot afford" in low
            or "doesn't have enough funds" in low
        ):
            return InputError(
                f"{sender} cannot pay for the gas of {name}",
                "fund the account with ether (`din init` funds dev accounts on dev chains)",
            )
        if "nonce" in low:
            return BackendUnavailable(
                f"{name}: the node refused the nonce ({text[:160]})", "retry the command"
            )
        return TransactionReverted(text or type(e).__name__, function=name)

    def _replay_reason(self, tx: dict, receipt, abi) -> str:
        """Why a mined transaction failed: replay it as a call at its parent block."""
        call = {
            k: tx[k]
            for k in ("from", "to", "data", "value", "gas")
            if k in tx and tx[k] is not None
        }
        call.setdefault("from", receipt["from"])
        try:
            self.w3.eth.call(call, receipt["blockNumber"] - 1)
        except Exception as e:
            reason = _revert_from_exception(e, abi)
            if reason is not None:
                return reason
        if receipt["gasUsed"] >= tx.get("gas", 0):
            return "out of gas"
        return "reverted without a reason"

    def _block_gas_limit(self) -> int:
        return int(self.w3.eth.get_block("latest")["gasLimit"])

    # Events ---------------------------------------------------------------
    def logs(
        self,
        contract,
        event: str,
        *,
        from_block: int = 0,
        to_block: int | None = None,
        **argument_filters,
    ) -> list:
        """Decoded ``event`` logs of ``contract`` (args, blockNumber, transactionHash, logIndex).

        Keyword arguments filter on event arguments (a list means any of).
        """
        from eth_utils import event_abi_to_log_topic
        from web3.datastructures import AttributeDict

        self._fresh()
        ev = contract.events[event]
        ev_abi = ev.abi
        inputs = {i["name"]: i for i in ev_abi.get("inputs", [])}
        unknown = set(argument_filters) - set(inputs)
        if unknown:
            raise UsageError(
                f"event {event} has no argument {', '.join(sorted(unknown))}",
                f"use one of: {', '.join(inputs) or 'none'}",
            )
        topics: list = [event_abi_to_log_topic(ev_abi)]
        indexed = [i for i in ev_abi["inputs"] if i.get("indexed")]
        for inp in indexed:
            want = argument_filters.get(inp["name"])
            if want is None:
                topics.append(None)
                continue
            values = (
                want
                if isinstance(want, (list, set, tuple)) and not inp["type"].endswith("]")
                else [want]
            )
            encoded = [_topic_for(inp, v) for v in values]
            topics.append(
                None
                if any(t is None for t in encoded)
                else (encoded[0] if len(encoded) == 1 else encoded)
            )
        while topics and topics[-1] is None:
            topics.pop()

        def fetch(start: int, end: int | None) -> list:
            with self._rpc_errors():
                raw = self._raw_logs(contract.address, topics, start, end)
            return [AttributeDict.recursive(ev.process_log(log)) for log in raw]

        if to_block is None:
            decoded = self._cached_logs(
                (contract.address, event, repr(topics), int(from_block)), fetch
            )
        else:
            decoded = fetch(from_block, to_block)
        return [
            e
            for e in decoded
            if all(
                self._matches(e["args"].get(k), v, inputs[k]) for k, v in argument_filters.items()
            )
        ]

    def _cached_logs(self, key: tuple, fetch) -> list:
        """The logs of one query up to the head, decoding only blocks not seen before.

        Decoding is most of a read's cost (web3 decodes ~1 ms per event), and a node reads the
        same queries every few seconds as a task's history grows. An entry remembers the block it
        was read up to and that block's hash; a new head fetches the blocks after it, and a block
        that is no longer canonical (anvil's evm_revert, a reorganisation, the embedded chain's
        rolled-back write) drops the entry and reads the query again from its first block.
        """
        with self._rpc_errors():
            number, head = self._head()
        cached = self._log_cache.get(key)
        if cached is not None and cached[1] == head:
            self._log_cache.move_to_end(key)
            return cached[2]
        if cached is not None and cached[0] <= number:
            with self._rpc_errors():
                still = self._block_hash(cached[0]) == cached[1]
            logs = cached[2] + fetch(cached[0] + 1, number) if still else None
        else:
            logs = None
        if logs is None:
            logs = fetch(key[3], number)
        self._log_cache[key] = (number, head, logs)
        self._log_cache.move_to_end(key)
        while len(self._log_cache) > self.LOG_CACHE_ENTRIES:
            self._log_cache.popitem(last=False)
        return logs

    @staticmethod
    def _matches(actual: Any, want: Any, inp: dict) -> bool:
        if want is None:
            return True
        t = inp["type"]
        if inp.get("indexed") and (
            t in ("string", "bytes") or t.endswith("]") or t.startswith("tuple")
        ):
            return True  # only a hash is in the log: matched by topic (or not comparable)
        choices = (
            want
            if isinstance(want, (list, set, tuple)) and not inp["type"].endswith("]")
            else [want]
        )
        return any(_same(actual, c) for c in choices)

    def _raw_logs(self, address: str, topics: list, from_block: int, to_block: int | None) -> list:
        from hexbytes import HexBytes

        def hexify(t):
            if t is None:
                return None
            if isinstance(t, list):
                return [HexBytes(x).to_0x_hex() for x in t]
            return HexBytes(t).to_0x_hex()

        flt = {
            "address": address,
            "fromBlock": int(from_block),
            "toBlock": "latest" if to_block is None else int(to_block),
            "topics": [hexify(t) for t in topics],
        }
        return self.w3.eth.get_logs(flt)

    # Time and money (dev chains) ------------------------------------------
    def now(self) -> int:
        """Timestamp of the latest block."""
        self._fresh()
        with self._rpc_errors():
            return int(self.w3.eth.get_block("latest")["timestamp"])

    def clock(self) -> int:
        """The least timestamp a block mined now carries: the wall clock (plus a dev chain's offset).

        ``now()`` stands still on a chain that mines on demand; this does not.
        """
        return int(time.time())

    def block_time(self, number: int) -> int:
        """Timestamp of block ``number``."""
        self._fresh()
        with self._rpc_errors():
            return int(self.w3.eth.get_block(int(number))["timestamp"])

    def head(self) -> int:
        """Number of the latest block."""
        self._fresh()
        with self._rpc_errors():
            return int(self.w3.eth.block_number)

    def balance(self, address: str) -> int:
        """Ether balance of ``address`` in wei."""
        self._fresh()
        with self._rpc_errors():
            return int(self.w3.eth.get_balance(address))

    def _require_dev(self, what: str) -> None:
        if not self.is_dev:
            raise UsageError(
                f"{what} works only on a dev chain (embedded or anvil)",
                "use the embedded chain or anvil",
            )

    def advance_time(self, seconds: int) -> None:
        """Make the next block at least ``seconds`` later (dev chains only); mines one block."""
        raise NotImplementedError

    def fund(self, address: str, wei: int) -> None:
        """Give ``address`` ``wei`` more ether (dev chains only)."""
        raise NotImplementedError

    def dev_account(self):
        """The funded dev account of a dev chain (an eth_account LocalAccount)."""
        raise NotImplementedError


class EmbeddedChain(Chain):
    """py-evm through eth-tester, persisted in one SQLite file (or in memory)."""

    def __init__(self, path: str | os.PathLike):
        from din_cli.chain.embedded import open_embedded

        self.path = str(path)
        self.store, self.backend, w3 = open_embedded(self.path)
        self._calls_at: bytes | None = None
        self._calls: dict[tuple, Any] = {}
        super().__init__(w3, url="memory" if self.path == ":memory:" else None, is_dev=True)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE``: concurrent commands serialise; an error or crash keeps nothing."""
        try:
            with self.store.transaction() as outer:
                if outer:
                    self._fresh(force=False)
                yield
        except BaseException:
            if self.store.depth == 0:
                self.backend.chain = (
                    self.store.new_chain()
                )  # drop in-memory state of the rolled-back work
            raise

    def _fresh(self, force: bool = False) -> None:
        head = self.store.head_hash()
        if force or head != self.backend.chain.header.parent_hash:  # the pending block's parent
            self.backend.chain = self.store.new_chain()

    def call(self, fn, *, sender: str | None = None):
        """As ``Chain.call``, answered from memory when the same call was made at the same head.

        A py-evm eth_call costs ~20 ms whatever it reads (building the VM state dominates), and a
        node asks the same views (``taskWords``, ``roundSeed``) many times between two blocks. A
        view's result at the latest block is fixed by that block, so the memo keys on its hash
        and is emptied when the head moves; reverts are not kept.
        """
        import copy

        _, head = self._head()
        key = (fn.address, fn._encode_transaction_data(), sender)
        if key in self._calls:
            return copy.deepcopy(self._calls[key])
        result = super().call(fn, sender=sender)
        # kept only when no other process's block came between the head read and the call
        if self.backend.chain.get_canonical_head().hash == head:
            if len(self._calls) >= 1024:
                self._calls.clear()
            self._calls[key] = copy.deepcopy(result)
        return result

    def _head(self) -> tuple[int, bytes]:
        self._fresh()
        header = self.backend.chain.get_canonical_head()
        if self._calls_at != header.hash:  # a new head: what was kept for the last one goes
            from trie import HexaryTrie

            self._calls_at, self._calls = header.hash, {}
            # py-evm's trie keeps node encodings in a class-wide LRU cache (4096 entries) that
            # also holds every trie object it saw; a long-running node would carry ~2 MiB of
            # dead state roots. It only speeds up writes within one block.
            HexaryTrie._cached_create_node_to_db_mapping.cache_clear()
        return int(header.block_number), bytes(header.hash)

    def _block_hash(self, number: int) -> bytes | None:
        from eth.exceptions import HeaderNotFound

        try:
            return bytes(self.backend.chain.get_canonical_block_hash(int(number)))
        except HeaderNotFound:
            return None

    def _pending_nonce(self, address: str) -> int:
        return self.w3.eth.get_transaction_count(address, "latest")

    def _gas_for(self, fn, params: dict) -> int:
        """One dry run instead of a binary search (a dozen runs): gas costs nothing here,
        so the limit is generous; a revert in the dry run raises with its reason. It runs in
        the block the transaction will be mined in (like a node's estimate at "pending"), so
        ``block.number`` and ``block.timestamp`` are the ones the transaction will see."""
        from din_cli.chain.embedded import TX_GAS

        tx = fn.build_transaction({**params, "gas": TX_GAS, "nonce": 0})
        call = {k: tx[k] for k in ("from", "to", "data", "value", "gas") if k in tx}
        self.backend.prepare_block()
        self.w3.eth.call(call, "pending")
        return TX_GAS

    def _raw_logs(self, address: str, topics: list, from_block: int, to_block: int | None) -> list:
        from eth_utils import to_bytes, to_checksum_address
        from hexbytes import HexBytes

        rows = self.store.query_logs(to_bytes(hexstr=address), topics, int(from_block), to_block)
        out = []
        for block, log_index, tx_index, tx_hash, block_hash, addr, t0, t1, t2, t3, data in rows:
            out.append(
                {
                    "address": to_checksum_address(addr),
                    "topics": [HexBytes(t) for t in (t0, t1, t2, t3) if t is not None],
                    "data": HexBytes(data),
                    "blockNumber": block,
                    "blockHash": HexBytes(block_hash),
                    "transactionHash": HexBytes(tx_hash),
                    "transactionIndex": tx_index,
                    "logIndex": log_index,
                    "removed": False,
                }
            )
        return out

    def now(self) -> int:
        self._fresh()
        return int(self.backend.chain.get_canonical_head().timestamp)

    def clock(self) -> int:
        return int(time.time()) + self.store.time_offset()

    def head(self) -> int:
        self._fresh()
        return int(self.backend.chain.get_canonical_head().block_number)

    def block_time(self, number: int) -> int:
        self._fresh()
        return int(self.backend.chain.get_canonical_block_header_by_number(int(number)).timestamp)

    def advance_time(self, seconds: int) -> None:
        seconds = int(seconds)
        if seconds < 0:
            raise UsageError("cannot move time backwards", "give a positive number of seconds")
        with self.writing():
            head = self.backend.chain.get_canonical_head()
            offset = max(
                self.store.time_offset() + seconds, head.timestamp + seconds - int(time.time())
            )
            self.store.set_meta("time_offset", str(offset))
            self.backend.prepare_block()
            self.backend.mine_blocks(1)

    def dev_account(self):
        from eth_account import Account

        from din_cli.chain.embedded import FAUCET_KEY

        return Account.from_key(FAUCET_KEY)

    def fund(self, address: str, wei: int) -> None:
        from eth_utils import to_checksum_address

        faucet = self.dev_account()
        with self.writing():
            block = self.w3.eth.get_block("latest")
            tx = {
                "to": to_checksum_address(address),
                "value": int(wei),
                "gas": 21000,
                "nonce": self.w3.eth.get_transaction_count(faucet.address),
                "chainId": self.chain_id,
                "maxFeePerGas": 2 * int(block["baseFeePerGas"]) + 10**9,
                "maxPriorityFeePerGas": 10**9,
            }
            h = self.w3.eth.send_raw_transaction(faucet.sign_transaction(tx).raw_transaction)
            self.w3.eth.get_transaction_receipt(h)

    def close(self) -> None:
        self.store.close()


class RpcChain(Chain):
    """Any JSON-RPC node; transactions are signed here, nonces locked per key."""

    def __init__(self, url: str):
        from web3 import HTTPProvider, Web3

        self._url = url
        w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": 30}))
        super().__init__(w3, url=url, is_dev=False)
        with self._rpc_errors():
            try:
                client = str(w3.client_version).lower()
            except Exception:
                client = ""
        self.client_version = client
        self.is_dev = any(name in client for name in ("anvil", "hardhat", "ganache"))

    @contextlib.contextmanager
    def _rpc_errors(self) -> Iterator[None]:
        import requests
        from web3.exceptions import TimeExhausted

        try:
            yield
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
            raise BackendUnavailable(
                f"cannot reach the chain node at {self._url} ({type(e).__name__})",
                "start the node or fix --chain / DIN_CHAIN",
            ) from None
        except TimeExhausted:
            raise BackendUnavailable(
                f"the chain node at {self._url} did not mine the transaction within 120 s",
                "check that the node mines blocks, then run the command again",
            ) from None

    def _lock(self, name: str):
        from din_cli.config import din_home

        return file_lock(din_home() / "locks" / f"{name}.lock")

    def _send_lock(self, address: str):
        """One sender per key at a time (nonces), across processes sharing this DIN_HOME."""
        return self._lock(f"nonce-{self.chain_id}-{address.lower()}")

    def writing(self):
        """Serialise din commands that write to this node (as BEGIN IMMEDIATE does on the
        embedded chain), so read-then-send steps (allowance, then stake) do not interleave.
        Not atomic: a node has no rollback; a failed command keeps its mined transactions."""
        return self._lock(f"chain-{self.chain_id}")

    def _rpc(self, method: str, params: list) -> Any:
        with self._rpc_errors():
            response = self.w3.provider.make_request(method, params)
        if "error" in response:
            raise UsageError(
                f"{method}: {response['error'].get('message')}",
                "this node does not support dev methods",
            )
        return response.get("result")

    def advance_time(self, seconds: int) -> None:
        self._require_dev("advancing time")
        if int(seconds) < 0:
            raise UsageError("cannot move time backwards", "give a positive number of seconds")
        self._rpc("evm_increaseTime", [int(seconds)])
        self._rpc("evm_mine", [])

    def dev_account(self):
        from eth_account import Account

        self._require_dev("the dev account")
        return Account.from_key(ANVIL_FAUCET_KEY)

    def fund(self, address: str, wei: int) -> None:
        from eth_utils import to_checksum_address

        self._require_dev("funding accounts")
        address = to_checksum_address(address)
        balance = self.balance(address)
        method = "hardhat_setBalance" if "hardhat" in self.client_version else "anvil_setBalance"
        self._rpc(method, [address, hex(balance + int(wei))])
