"""LocalStore: blocks in a folder (the embedded default, ``$DIN_HOME/blocks``).

One file per block, named by the base32 of its multihash and sharded by the
next-to-last two characters (Kubo's flatfs layout). Blocks are written to a
temp file and renamed, so a reader never sees half a block; every read
re-hashes the block and refuses one that does not match its CID.
"""

from __future__ import annotations

import base64
import os
import threading
from pathlib import Path

from din_cli.errors import InputError, NotFoundError, VerificationError
from din_cli.store import dagpb, unixfs
from din_cli.store.base import Progress, Store, open_source
from din_cli.store.car import CarReader
from din_cli.store.cid import CID, DAG_PB, IDENTITY, parse_cid

ROOTS_DIR = "roots"


class LocalStore(Store):
    """Content store in a local folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.name = f"the local store ({self.root})"
        self._dirs: set[Path] = set()
        self._tmp_counter = 0
        self._lock = threading.Lock()

    # -- layout
    def block_path(self, cid: CID | str) -> Path:
        """The file holding ``cid``'s block (it may not exist)."""
        c = parse_cid(cid)
        key = base64.b32encode(c.multihash).decode("ascii").rstrip("=")
        return self.root / key[-3:-1] / key

    # -- blocks
    def put_block(self, cid: CID, parts: tuple) -> None:
        """Store a block given as a tuple of buffers; a no-op if it is already there.

        Renamed into place without fsync (a crash can at worst leave a block
        that fails verification on read; adding the content again repairs it).
        """
        path = self.block_path(cid)
        folder = path.parent
        if folder not in self._dirs:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise InputError(
                    f"cannot create the store folder {folder} ({e.strerror or e})",
                    "check the permissions of $DIN_HOME",
                ) from None
            self._dirs.add(folder)
        try:
            if path.stat().st_size == sum(len(p) for p in parts):
                return  # already stored (a wrong-sized leftover is replaced)
        except FileNotFoundError:
            pass
        with self._lock:
            self._tmp_counter += 1
            n = self._tmp_counter
        tmp = folder / f".{path.name}.{os.getpid()}.{n}.tmp"
        try:
            with open(tmp, "wb") as f:
                for p in parts:
                    f.write(p)
            os.replace(tmp, path)
        except BaseException as e:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            if isinstance(e, OSError):
                raise InputError(
                    f"cannot write block {cid} to {folder} ({e.strerror or e})",
                    "check free space and permissions of the store folder ($DIN_HOME/blocks)",
                ) from None
            raise

    def get_block(self, cid: CID) -> bytes:
        path = self.block_path(cid)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(
                f"block {cid} is not in {self.name}",
                "add the content, import a CAR with `din ipfs car import`, or read from a node with --ipfs",
            ) from None
        if not cid.matches(data):
            raise VerificationError(
                f"block {cid} at {path} does not match its CID (corrupted on disk)",
                "delete that file, then add or import the content again",
            )
        return data

    def has_block(self, cid: CID) -> bool:
        """Whether the whole DAG under ``cid`` is present (internal nodes are read, leaves stat'ed)."""
        stack = [cid]
        while stack:
            c = stack.pop()
            if c.hash_code == IDENTITY:
                continue
            path = self.block_path(c)
            if c.codec != DAG_PB:
                if not path.exists():
                    return False
                continue
            try:
                links, _ = dagpb.decode_node(path.read_bytes())
            except FileNotFoundError:
                return False
            except ValueError:
                return True  # present; malformed content is reported when read
            stack.extend(link.cid for link in links)
        return True

    # -- roots
    def _record_root(self, cid: CID) -> None:
        folder = self.root / ROOTS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        (folder / cid.encode()).touch()

    def roots(self) -> list[str]:
        folder = self.root / ROOTS_DIR
        if not folder.is_dir():
            return []
        entries = [
            (p.stat().st_mtime_ns, p.name) for p in folder.iterdir() if not p.name.startswith(".")
        ]
        return [name for _, name in sorted(entries)]

    # -- files and CARs
    def add(
        self, src, *, cid_version: int = 1, only_hash: bool = False, progress: Progress = None
    ) -> str:
        """Add a file (path, ``-`` for stdin, or a binary stream); return its CID text."""
        with open_source(src) as (f, _name):
            put = None if only_hash else self.put_block
            cid = unixfs.import_stream(f, cid_version=cid_version, put=put, progress=progress)
        if not only_hash:
            self._record_root(cid)
        return cid.encode()

    def import_car(self, src) -> list[str]:
        """Import a CAR v1; every block is verified first. Returns the root CIDs."""
        with open_source(src) as (f, name):
            reader = CarReader(f, name)
            for cid, block in reader:
                self.put_block(cid, (block,))
            roots = reader.roots
        for r in roots:
            if not self.block_path(r).exists() and r.hash_code != IDENTITY:
                raise NotFoundError(
                    f"{name}: root {r} is neither in the CAR nor in {self.name}",
                    "export the CAR again with its whole DAG",
                )
        for r in roots:
            self._record_root(r)
        return [r.encode() for r in roots]
