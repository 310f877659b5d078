"""The embedded chain: py-evm (through eth-tester) with all its state in one SQLite file.

Everything py-evm keeps (headers, blocks, receipts, the state trie, the
canonical head) lives in the ``kv`` table of ``$DIN_HOME/chain.sqlite``; din
adds a ``logs`` table (the event index) and a ``meta`` table. A command opens
one SQLite transaction (``BEGIN IMMEDIATE``) for its writes, so commands that
run at once serialise, and a crash leaves the file at the last commit.

Automine: every transaction is mined in its own block whose timestamp is
``max(wall clock + offset, parent + 1)``; ``advance_time`` raises the offset.
Nothing here replays history: opening reads the canonical head and goes.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from din_cli.errors import BackendUnavailable, InputError, NotFoundError

#: Chain id of every embedded chain: "din" in ASCII.
EMBEDDED_CHAIN_ID = 0x64696E
#: The dev faucet: private key 0x...01 (well known, like eth-tester's first
#: account), funded at genesis. Dev chains only.
FAUCET_KEY = "0x" + "00" * 31 + "01"
FAUCET_BALANCE = 10**9 * 10**18
GAS_LIMIT = 60_000_000
#: Gas limit of every transaction sent without one (only the gas used is paid).
TX_GAS = 30_000_000
SCHEMA_VERSION = 1
#: Seconds a command waits for another command's write transaction.
BUSY_TIMEOUT = 120

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS logs (
    block INTEGER NOT NULL,
    log_index INTEGER NOT NULL,
    tx_index INTEGER NOT NULL,
    tx_hash BLOB NOT NULL,
    block_hash BLOB NOT NULL,
    address BLOB NOT NULL,
    topic0 BLOB, topic1 BLOB, topic2 BLOB, topic3 BLOB,
    data BLOB NOT NULL,
    PRIMARY KEY (block, log_index)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS logs_by_event ON logs (address, topic0, block);
"""


def _kv_class():
    from eth.db.backends.base import BaseDB

    class SQLiteKV(BaseDB):
        """py-evm's key-value database as one SQLite table."""

        def __init__(self, conn: sqlite3.Connection):
            self.conn = conn

        def __getitem__(self, key: bytes) -> bytes:
            row = self.conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
            if row is None:
                raise KeyError(key)
            return row[0]

        def __setitem__(self, key: bytes, value: bytes) -> None:
            self.conn.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, value))

        def __delitem__(self, key: bytes) -> None:
            cur = self.conn.execute("DELETE FROM kv WHERE key = ?", (key,))
            if cur.rowcount == 0:
                raise KeyError(key)

        def _exists(self, key: bytes) -> bool:
            return (
                self.conn.execute("SELECT 1 FROM kv WHERE key = ?", (key,)).fetchone() is not None
            )

    return SQLiteKV


def _chain_class():
    from eth.chains.base import MiningChain
    from eth.vm.forks import PragueVM

    class DinChain(MiningChain):
        chain_id = EMBEDDED_CHAIN_ID
        vm_configuration = ((0, PragueVM),)

        def create_header_from_parent(self, parent_header, **header_params):
            header_params["gas_limit"] = parent_header.gas_limit  # constant gas limit
            return super().create_header_from_parent(parent_header, **header_params)

        def get_transaction_builder(self):
            return super().get_vm().get_transaction_builder()

    return DinChain


def revert_data(exc: BaseException) -> bytes | None:
    """The raw revert bytes behind an eth-tester failure (walks the cause chain)."""
    from eth.exceptions import Revert

    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, Revert):
            data = e.args[0] if e.args else b""
            return bytes(data) if isinstance(data, (bytes, bytearray)) else b""
        e = e.__cause__ or e.__context__
    return None


def _backend_class():
    from eth.exceptions import Revert
    from eth.vm.spoof import SpoofTransaction
    from eth_tester.backends.pyevm.main import (
        PyEVMBackend,
        _get_block_by_number,
        serialize_transaction,
        serialize_transaction_receipt,
    )
    from eth_tester.exceptions import TransactionFailed, TransactionNotFound
    from eth_utils import encode_hex

    class DinBackend(PyEVMBackend):
        """eth-tester's py-evm backend on din's store: automine with wall-clock time,
        O(1) receipt lookup, revert data kept for decoding, and an event index."""

        def __init__(self, store: EmbeddedStore):  # noqa: F821 (defined below)
            self.store = store
            self.account_keys = ()
            self.chain = store.new_chain()

        # Mining ---------------------------------------------------------
        def prepare_block(self) -> None:
            """Give the pending block the timestamp max(now + offset, parent + 1) and a fresh
            random mix_hash, so its transactions see a real ``block.prevrandao``."""
            if self.chain.get_block().transactions:
                return
            parent = self.chain.get_canonical_head()
            ts = max(int(time.time()) + self.store.time_offset(), parent.timestamp + 1)
            self.chain.header = self.chain.header.copy(timestamp=ts, mix_hash=os.urandom(32))

        def send_raw_transaction(self, raw_transaction):
            self.prepare_block()
            return super().send_raw_transaction(raw_transaction)

        def mine_blocks(self, num_blocks=1, coinbase=b"\0" * 20):
            """Seal blocks keeping the mix_hash the pending transactions ran with (eth-tester
            would draw another one after execution); an empty block gets a fresh one."""
            from eth_tester.backends.pyevm.main import PragueVM, get_total_blob_gas

            hashes = []
            for _ in range(num_blocks):
                pending = self.chain.get_block().transactions
                kw = {
                    "coinbase": coinbase,
                    "mix_hash": self.chain.header.mix_hash if pending else os.urandom(32),
                }
                if isinstance(self.chain.get_vm(), PragueVM):
                    kw["blob_gas_used"] = sum(get_total_blob_gas(tx) for tx in pending)
                block = self.chain.mine_block(**kw)
                self.store.index_block(block, self.chain.chaindb)
                hashes.append(block.hash)
            return tuple(hashes)

        # Lookups by hash in O(1) (eth-tester scans every block) ---------
        def _locate(self, transaction_hash):
            try:
                number, index = self.chain.chaindb.get_transaction_index(transaction_hash)
            except Exception:
                raise TransactionNotFound(
                    f"No transaction found for transaction hash: {encode_hex(transaction_hash)}"
                ) from None
            block = self.chain.get_canonical_block_by_number(number)
            return block, block.transactions[index], index

        def get_transaction_by_hash(self, transaction_hash):
            block, tx, index = self._locate(transaction_hash)
            return serialize_transaction(block, tx, index, False)

        def get_transaction_receipt(self, transaction_hash):
            block, tx, index = self._locate(transaction_hash)
            receipts = block.get_receipts(self.chain.chaindb)
            vm = self.chain.get_vm(at_header=block.header)
            return serialize_transaction_receipt(block, receipts, tx, index, False, vm)

        # Calls keep the revert data (eth-tester keeps only a string) ----
        def call(self, transaction, block_number="latest"):
            tx = dict(transaction)
            tx.setdefault("gas", self._max_available_gas())
            unsigned = self._get_normalized_and_unsigned_evm_transaction(tx, block_number)
            sender = transaction["from"]
            spoofed = SpoofTransaction(unsigned, from_=sender)
            block = _get_block_by_number(self.chain, block_number)
            state = self.chain.get_vm(at_header=block.header).state
            snapshot = state.snapshot()
            try:
                # like geth's eth_call: the caller need not afford the gas
                need = unsigned.gas * unsigned.max_fee_per_gas + unsigned.value
                if state.get_balance(sender) < need:
                    state.set_balance(sender, need)
                computation = state.apply_transaction(spoofed)
            finally:
                state.revert(snapshot)
            if computation.is_error:
                err = computation._error
                if isinstance(err, Revert):
                    raise TransactionFailed("execution reverted") from err
                raise TransactionFailed(str(err)) from err
            return computation.output

    return DinBackend


def _provider_class():
    from eth_tester.exceptions import TransactionFailed
    from web3.providers.eth_tester import EthereumTesterProvider

    class DinProvider(EthereumTesterProvider):
        """web3 provider over eth-tester that reports reverts like a JSON-RPC node
        (code 3 with the revert data), so one decoder serves both chains."""

        def __init__(self, tester):
            from web3.providers.eth_tester.defaults import API_ENDPOINTS

            endpoints = {ns: dict(methods) for ns, methods in API_ENDPOINTS.items()}
            endpoints["eth"]["chainId"] = lambda *args, **kwargs: EMBEDDED_CHAIN_ID
            endpoints["net"]["version"] = lambda *args, **kwargs: str(EMBEDDED_CHAIN_ID)
            super().__init__(tester, endpoints)

        def make_request(self, method, params):
            try:
                return super().make_request(method, params)
            except TransactionFailed as e:
                if method not in ("eth_call", "eth_estimateGas"):
                    raise
                data = revert_data(e)
                if data is None:
                    raise
                message = "execution reverted"
                if data[:4] == bytes.fromhex("08c379a0"):
                    from eth_abi import decode

                    with contextlib.suppress(Exception):
                        message += ": " + decode(["string"], data[4:])[0]
                return {
                    "jsonrpc": "2.0",
                    "id": 0,
                    "error": {"code": 3, "message": message, "data": "0x" + data.hex()},
                }

    return DinProvider


class EmbeddedStore:
    """The SQLite file (or ``:memory:``) holding one chain."""

    def __init__(self, path: str | os.PathLike, *, create: bool = True):
        self.path = str(path)
        memory = self.path == ":memory:"
        if not memory:
            p = Path(self.path)
            if not p.exists():
                if not create:
                    raise NotFoundError(f"{p}: no embedded chain here", "run `din init` first")
                p.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(
                self.path, isolation_level=None, timeout=BUSY_TIMEOUT, check_same_thread=False
            )
            if not memory:
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise InputError(
                f"{self.path}: not a din chain file ({e})", "move it away and run `din init` again"
            ) from e
        from eth.db.atomic import AtomicDB

        self.kv = _kv_class()(self.conn)
        self.db = AtomicDB(self.kv)
        self.depth = 0

    # Transactions -------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[bool]:
        """``BEGIN IMMEDIATE`` .. ``COMMIT`` (nested calls join the outer one).

        Yields True for the outermost level, whose caller must resync its view.
        """
        outer = self.depth == 0
        if outer:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as e:
                raise BackendUnavailable(
                    f"{self.path}: {e} (another din command has held it for {BUSY_TIMEOUT} s)",
                    "wait for that command to finish, or stop it",
                ) from None
        self.depth += 1
        try:
            yield outer
        except BaseException:
            self.depth -= 1
            if outer:
                self.conn.execute("ROLLBACK")
            raise
        self.depth -= 1
        if outer:
            try:
                self.conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    self.conn.execute("ROLLBACK")
                raise

    # Meta ---------------------------------------------------------------
    def get_meta(self, name: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return default if row is None else row[0]

    def set_meta(self, name: str, value: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, str(value))
        )

    def time_offset(self) -> int:
        return int(self.get_meta("time_offset", "0"))

    # The chain ----------------------------------------------------------
    def head_hash(self) -> bytes | None:
        from eth.db.schema import SchemaV1

        try:
            return self.kv[SchemaV1.make_canonical_head_hash_lookup_key()]
        except KeyError:
            return None

    def new_chain(self):
        """A py-evm chain object at the stored head (genesis on a new file)."""
        DinChain = _chain_class()
        if self.head_hash() is not None:
            return DinChain(self.db)
        with self.transaction():
            if self.head_hash() is not None:  # another process made it meanwhile
                return DinChain(self.db)
            return self._genesis(DinChain)

    def _genesis(self, DinChain):
        from eth.constants import (
            BLANK_ROOT_HASH,
            POST_MERGE_DIFFICULTY,
            POST_MERGE_MIX_HASH,
            POST_MERGE_NONCE,
        )
        from eth_keys import keys

        faucet = keys.PrivateKey(bytes.fromhex(FAUCET_KEY[2:])).public_key.to_canonical_address()
        params = {
            "coinbase": b"\0" * 20,
            "difficulty": POST_MERGE_DIFFICULTY,
            "extra_data": b"din",
            "gas_limit": GAS_LIMIT,
            "mix_hash": POST_MERGE_MIX_HASH,
            "nonce": POST_MERGE_NONCE,
            "receipt_root": BLANK_ROOT_HASH,
            "timestamp": int(time.time()),
            "transaction_root": BLANK_ROOT_HASH,
        }
        state = {faucet: {"balance": FAUCET_BALANCE, "nonce": 0, "code": b"", "storage": {}}}
        chain = DinChain.from_genesis(self.db, params, state)
        self.set_meta("schema", str(SCHEMA_VERSION))
        self.set_meta("time_offset", "0")
        return chain

    # Event index --------------------------------------------------------
    def index_block(self, block, chaindb) -> None:
        receipts = block.get_receipts(chaindb)
        rows = []
        log_index = 0
        for tx_index, (tx, receipt) in enumerate(zip(block.transactions, receipts, strict=True)):
            for log in receipt.logs:
                topics = [
                    t.to_bytes(32, "big") if isinstance(t, int) else bytes(t) for t in log.topics
                ]
                topics += [None] * (4 - len(topics))
                rows.append(
                    (
                        block.number,
                        log_index,
                        tx_index,
                        tx.hash,
                        block.hash,
                        bytes(log.address),
                        *topics[:4],
                        bytes(log.data),
                    )
                )
                log_index += 1
        if rows:
            self.conn.executemany(
                "INSERT OR REPLACE INTO logs VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows
            )

    def query_logs(
        self,
        address: bytes,
        topics: list[bytes | list[bytes] | None],
        from_block: int,
        to_block: int | None,
    ):
        """Raw logs of ``address`` matching ``topics`` (None = any; a list = any of)."""
        sql = [
            "SELECT block, log_index, tx_index, tx_hash, block_hash, address, topic0, topic1, topic2, topic3, data FROM logs WHERE address = ? AND block >= ?"
        ]
        args: list = [address, from_block]
        if to_block is not None:
            sql.append("AND block <= ?")
            args.append(to_block)
        for i, t in enumerate(topics[:4]):
            if t is None:
                continue
            if isinstance(t, list):
                sql.append(f"AND topic{i} IN ({','.join('?' * len(t))})")
                args.extend(t)
            else:
                sql.append(f"AND topic{i} = ?")
                args.append(t)
        sql.append("ORDER BY block, log_index")
        return self.conn.execute(" ".join(sql), args).fetchall()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


def open_embedded(path: str | os.PathLike, *, create: bool = True):
    """(store, backend, web3) for the chain in ``path`` (``:memory:`` for none)."""
    from eth_tester import EthereumTester
    from web3 import Web3

    store = EmbeddedStore(path, create=create)
    backend = _backend_class()(store)
    tester = EthereumTester(backend, auto_mine_transactions=True)
    w3 = Web3(_provider_class()(tester))
    return store, backend, w3
