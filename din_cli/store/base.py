"""The operations every content store offers, written once over get/put of blocks."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

from din_cli.errors import InputError
from din_cli.files import atomic_output, open_input
from din_cli.store import car, unixfs
from din_cli.store.cid import CID, IDENTITY, parse_cid

Progress = Callable[[int], None] | None


@contextlib.contextmanager
def open_source(src) -> Iterator[tuple[BinaryIO, str]]:
    """Yield (binary stream, display name) for a path, ``-`` (stdin) or an open stream."""
    if hasattr(src, "read"):
        name = getattr(src, "name", None)
        yield src, name if isinstance(name, str) else "<stream>"
        return
    with open_input(src) as f:
        yield f, "stdin" if str(src) == "-" else str(src)


def _cids(cids: Iterable[str | CID]) -> list[CID]:
    out = [parse_cid(c) for c in cids]
    if not out:
        raise InputError("no CID given", "name at least one CID")
    return out


class Store:
    """A content store: UnixFS add/cat, CAR import/export, all blocks verified on read."""

    name = "store"

    # -- primitives a backend provides
    def get_block(self, cid: CID) -> bytes:  # pragma: no cover - abstract
        """Return the block's bytes, verified against ``cid``; NotFoundError if absent."""
        raise NotImplementedError

    def has_block(self, cid: CID) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def add(
        self, src, *, cid_version: int = 1, only_hash: bool = False, progress: Progress = None
    ) -> str:  # pragma: no cover
        raise NotImplementedError

    def import_car(self, src) -> list[str]:  # pragma: no cover - abstract
        """Import a CAR v1 (path, ``-`` or stream); return its root CIDs."""
        raise NotImplementedError

    # -- shared behaviour
    def _get(self, cid: CID) -> bytes:
        if cid.hash_code == IDENTITY:
            return cid.digest
        return self.get_block(cid)

    def cat(self, cid: str | CID, *, progress: Progress = None) -> Iterator[bytes]:
        """Stream the file ``cid``; every block is verified before its bytes are yielded."""
        c = parse_cid(cid)
        for piece in unixfs.iter_file(self._get, c):
            if progress:
                progress(len(piece))
            yield piece

    def cat_to(self, cid: str | CID, path, *, progress: Progress = None) -> None:
        """Write the file ``cid`` to ``path`` atomically (``-``: stdout)."""
        c = parse_cid(cid)
        pieces = self.cat(c, progress=progress)
        first = next(pieces, None)  # fail before creating anything if the root is missing
        with atomic_output(path) as out:
            if first is not None:
                out.write(first)
            for piece in pieces:
                out.write(piece)

    def has(self, cid: str | CID) -> bool:
        """Whether every block of ``cid``'s DAG is present (nothing is fetched)."""
        c = parse_cid(cid)
        return self.has_block(c)

    def blocks(self, cids: Iterable[str | CID]) -> Iterator[tuple[CID, bytes]]:
        """Every block reachable from ``cids``, once each, depth-first, verified."""
        return unixfs.dag_blocks(self._get, _cids(cids))

    def export_car(self, cids: Iterable[str | CID], out: BinaryIO) -> int:
        """Write a CAR v1 of the DAGs under ``cids`` to ``out``; return the block count."""
        roots = _cids(cids)
        return car.write_car(out, roots, unixfs.dag_blocks(self._get, roots))

    def export_car_to(self, cids: Iterable[str | CID], path) -> int:
        """Write a CAR v1 to ``path`` atomically (``-``: stdout); nothing is left on failure."""
        roots = _cids(cids)
        blocks = unixfs.dag_blocks(self._get, roots)
        first = next(blocks, None)  # a missing root fails before the file exists
        with atomic_output(path) as out:
            return car.write_car(out, roots, _chain(first, blocks))

    def roots(self) -> list[str]:
        """CIDs added or imported (newest last)."""
        return []


def _chain(first, rest):
    if first is not None:
        yield first
    yield from rest
