"""One object per command: the chain, the deployment, the content store and the acting key.

``open_context`` connects to the chain named by ``--chain`` (default: the
embedded one), checks it against ``$DIN_HOME/deployment.json``, and opens the
content store lazily (``--ipfs``, default the local store). The acting
identity (an unlocked ``din_cli.crypto.keystore.Identity``) is passed in by the
CLI, which owns password prompts.

Example:
    with open_context(identity=ident) as ctx:
        ctx.din.task_info(1).phase
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from din_cli.errors import UsageError


@dataclass
class Context:
    """What a protocol step needs: ``chain``, ``deployment``, ``din`` (the contract wrapper), ``store``, ``identity``."""

    chain: Any
    deployment: dict
    ipfs_api: str | None = None
    identity: Any = None
    _store: Any = field(default=None, repr=False)
    _din: Any = field(default=None, repr=False)
    _owns_chain: bool = field(default=True, repr=False)

    @property
    def din(self):
        if self._din is None:
            from din_cli.chain.din import Din

            self._din = Din(self.chain, self.deployment)
        return self._din

    @property
    def store(self):
        if self._store is None:
            from din_cli.store import open_store

            self._store = open_store(self.ipfs_api)
        return self._store

    @property
    def account(self):
        """The acting eth-account LocalAccount; UsageError when no key was chosen."""
        if self.identity is None:
            raise UsageError(
                "this step acts on chain and needs a key", "choose one with --key NAME (or DIN_KEY)"
            )
        return getattr(self.identity, "account", self.identity)

    @property
    def address(self) -> str:
        return self.account.address

    def close(self) -> None:
        if self._owns_chain:
            self.chain.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- content
    def add(self, path: str | Path) -> str:
        """Add a file to the content store; its CID text."""
        return str(self.store.add(str(path)))

    @contextlib.contextmanager
    def workdir(self) -> Iterator[Path]:
        """A private temporary folder under ``$DIN_HOME``, removed afterwards."""
        from din_cli.config import ensure_home

        tmp = Path(tempfile.mkdtemp(prefix="work-", dir=ensure_home()))
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def fetch(self, cid: bytes | str, dest: Path) -> Path:
        """Fetch the CID (binary or text) from the store into ``dest``, verified block by block."""
        from din_cli.protocol.cids import to_text

        text = cid if isinstance(cid, str) else to_text(cid)
        self.store.cat_to(text, dest)
        return dest

    # -- local records that let a killed command resume (commit -> reveal)
    def record_path(self, task_id: int, round_: int, kind: str) -> Path:
        from din_cli.config import din_home

        tasks = self.deployment["DinTasks"].lower()
        name = f"{self.deployment['chain_id']}-{tasks[2:10]}-{task_id}-{round_}-{kind}-{self.address.lower()}.json"
        return din_home() / "commits" / name

    def save_record(self, task_id: int, round_: int, kind: str, doc: dict) -> None:
        from din_cli.files import write_atomic

        path = self.record_path(task_id, round_, kind)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, (json.dumps(doc, indent=2) + "\n").encode(), mode=0o600)

    def load_record(self, task_id: int, round_: int, kind: str) -> dict | None:
        path = self.record_path(task_id, round_, kind)
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None


def open_context(
    chain_url: str | None = None,
    ipfs_api: str | None = None,
    identity: Any = None,
    *,
    chain: Any = None,
    deployment: dict | None = None,
    store: Any = None,
) -> Context:
    """Connect to the deployment's chain (or use ``chain``) and return a Context.

    ``identity`` is an unlocked Identity or an eth-account LocalAccount (tests).
    """
    if chain is not None:
        if deployment is None:
            raise UsageError("a chain without its deployment", "pass deployment= as well")
        return Context(chain, deployment, ipfs_api, identity, _store=store, _owns_chain=False)
    from din_cli.chain.network import open_network

    chain, dep = open_network(chain_url, deployment)
    return Context(chain, dep, ipfs_api, identity, _store=store)
