"""UnixFS file importer and reader producing exactly Kubo's CIDs.

Importer (like ``ipfs add``): fixed 256 KiB chunks, balanced layout with at
most 174 links per node. CIDv1 (the default, ``--cid-version=1``): raw leaves,
dag-pb internal nodes, base32 text. CIDv0: dag-pb leaves wrapping each chunk
in UnixFS ``Data{Type: File}``, ``Qm…`` text.

It streams: one batch of chunks (a reused buffer) plus at most 174 links per
tree level are held in memory, whatever the file size.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

from din_cli.errors import InputError
from din_cli.files import readinto_full
from din_cli.store import dagpb
from din_cli.store.cid import CID, DAG_PB, RAW

CHUNK_SIZE = 256 * 1024
MAX_LINKS = 174
BATCH_CHUNKS = 16  # chunks read per readinto batch (4 MiB buffer)

# put(cid, parts): store a block whose bytes are the concatenation of parts.
PutFn = Callable[[CID, tuple], None]
GetFn = Callable[[CID], bytes]


def hash_threads() -> int:
    """Threads hashing leaves in parallel (hashlib releases the GIL): DIN_HASH_THREADS or up to 4."""
    env = os.environ.get("DIN_HASH_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(4, os.cpu_count() or 1))


class Builder:
    """Balanced UnixFS DAG built from chunks fed in order (go-unixfs ``balanced``)."""

    def __init__(self, cid_version: int = 1, put: PutFn | None = None):
        if cid_version not in (0, 1):
            raise InputError(f"CID version {cid_version} is not supported", "use 0 or 1")
        self.version = cid_version
        self.put = put
        # levels[i]: links (cid, tsize, filesize) waiting to become a node of depth i+1
        self.levels: list[list[tuple[CID, int, int]]] = [[]]
        self.size = 0

    # -- leaves
    def leaf_digest(self, chunk) -> bytes:
        if self.version == 1:
            return hashlib.sha256(chunk).digest()
        prefix, suffix = dagpb.leaf_wrapping(len(chunk))
        h = hashlib.sha256(prefix)
        h.update(chunk)
        h.update(suffix)
        return h.digest()

    def add_leaf(self, chunk, digest: bytes | None = None) -> None:
        """Add the next chunk (``digest`` if already computed by :meth:`leaf_digest`)."""
        if digest is None:
            digest = self.leaf_digest(chunk)
        n = len(chunk)
        if self.version == 1:
            cid = CID.v1(RAW, digest)
            if self.put:
                self.put(cid, (chunk,))
            tsize = n
        else:
            cid = CID.v0(digest)
            prefix, suffix = dagpb.leaf_wrapping(n)
            if self.put:
                self.put(cid, (prefix, chunk, suffix))
            tsize = len(prefix) + n + len(suffix)
        self.size += n
        self._push(0, (cid, tsize, n))

    # -- internal nodes
    def _push(self, level: int, link: tuple[CID, int, int]) -> None:
        while True:
            if level == len(self.levels):
                self.levels.append([])
            links = self.levels[level]
            links.append(link)
            if len(links) < MAX_LINKS:
                return
            self.levels[level] = []
            link = self._node(links)
            level += 1

    def _node(self, links: list[tuple[CID, int, int]]) -> tuple[CID, int, int]:
        filesize = sum(fs for _, _, fs in links)
        data = dagpb.encode_file_data(filesize, [fs for _, _, fs in links])
        block = dagpb.encode_node([dagpb.encode_link(c.to_bytes(), ts) for c, ts, _ in links], data)
        digest = hashlib.sha256(block).digest()
        cid = CID.v0(digest) if self.version == 0 else CID.v1(DAG_PB, digest)
        if self.put:
            self.put(cid, (block,))
        return cid, len(block) + sum(ts for _, ts, _ in links), filesize

    def finish(self) -> CID:
        """Close every open level and return the root CID."""
        top = max((i for i, links in enumerate(self.levels) if links), default=-1)
        if top < 0:  # empty file
            if self.version == 1:
                self.add_leaf(b"")
                return self.levels[0][0][0]
            block = dagpb.encode_node([], dagpb.encode_file_data(0))
            cid = CID.v0(hashlib.sha256(block).digest())
            if self.put:
                self.put(cid, (block,))
            return cid
        for level in range(top):
            links = self.levels[level]
            if links:
                self.levels[level] = []
                self.levels[level + 1].append(self._node(links))
        root_links = self.levels[top]
        if len(root_links) == 1:
            return root_links[0][0]
        return self._node(root_links)[0]


def import_stream(
    f: BinaryIO,
    *,
    cid_version: int = 1,
    put: PutFn | None = None,
    progress: Callable[[int], None] | None = None,
    threads: int | None = None,
) -> CID:
    """Chunk ``f`` and build its UnixFS DAG; ``put`` receives every block (None: only hash)."""
    builder = Builder(cid_version, put)
    threads = threads or hash_threads()
    buf = bytearray(CHUNK_SIZE * BATCH_CHUNKS)
    mv = memoryview(buf)
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    try:
        while True:
            n = readinto_full(f, mv)
            if not n:
                break
            chunks = [mv[i : min(i + CHUNK_SIZE, n)] for i in range(0, n, CHUNK_SIZE)]
            if pool is not None and len(chunks) > 1:
                digests = list(pool.map(builder.leaf_digest, chunks))
            else:
                digests = [builder.leaf_digest(c) for c in chunks]
            for chunk, digest in zip(chunks, digests, strict=True):
                builder.add_leaf(chunk, digest)
            del chunks
            if progress:
                progress(n)
            if n < len(mv):
                break
    finally:
        if pool is not None:
            pool.shutdown()
    return builder.finish()


class StreamHasher:
    """Push-style importer: ``write`` bytes in any pieces, ``finish()`` gives the CID.

    Used to check a remote node's answer against the CID din computes itself.
    """

    def __init__(self, cid_version: int = 1):
        self.builder = Builder(cid_version)
        self.pending = bytearray()

    def write(self, data: bytes) -> None:
        self.pending += data
        if len(self.pending) >= CHUNK_SIZE:
            mv = memoryview(self.pending)
            full = len(self.pending) - len(self.pending) % CHUNK_SIZE
            for i in range(0, full, CHUNK_SIZE):
                self.builder.add_leaf(mv[i : i + CHUNK_SIZE])
            mv.release()
            del self.pending[:full]

    def finish(self) -> CID:
        if self.pending:
            self.builder.add_leaf(bytes(self.pending))
            self.pending.clear()
        return self.builder.finish()


# --------------------------------------------------------------------- reader
def iter_file(get: GetFn, cid: CID, *, what: str | None = None) -> Iterator[bytes]:
    """Yield the bytes of the UnixFS file (or raw block) ``cid``; ``get`` returns verified blocks."""
    root_text = what or str(cid)
    expected = None
    written = 0
    stack: list[CID] = [cid]
    first = True
    while stack:
        c = stack.pop()
        if c.codec == RAW:
            block = get(c)
            written += len(block)
            yield block
            first = False
            continue
        if c.codec != DAG_PB:
            raise InputError(
                f"{root_text}: block {c} has codec 0x{c.codec:x}, not a UnixFS file",
                "cat reads files added with `din ipfs add` or `ipfs add`",
            )
        block = get(c)
        try:
            links, data = dagpb.decode_node(block)
            fs = dagpb.decode_unixfs(data or b"")
        except ValueError as e:
            raise InputError(
                f"{root_text}: block {c} is not a valid UnixFS node ({e})",
                "the content was not made by a UnixFS importer",
            ) from None
        if fs.type not in (dagpb.T_FILE, dagpb.T_RAW):
            raise InputError(
                f"{root_text} is a UnixFS {dagpb.TYPE_NAMES.get(fs.type, fs.type)}, not a file",
                "cat reads files; name a file's CID",
            )
        if first:
            expected = fs.filesize
            first = False
        if fs.data:
            written += len(fs.data)
            yield fs.data
        stack.extend(link.cid for link in reversed(links))
    if expected is not None and written != expected:
        raise InputError(
            f"{root_text}: file has {written} bytes but its root says {expected}",
            "the DAG is malformed",
        )


def dag_blocks(get: GetFn, roots: list[CID]) -> Iterator[tuple[CID, bytes]]:
    """Yield every block reachable from ``roots`` once, depth-first (the order of ``ipfs dag export``)."""
    seen: set[bytes] = set()
    stack: list[CID] = list(reversed(roots))
    while stack:
        c = stack.pop()
        key = c.multihash
        if key in seen:
            continue
        seen.add(key)
        block = get(c)
        yield c, block
        if c.codec == DAG_PB:
            try:
                links, _ = dagpb.decode_node(block)
            except ValueError as e:
                raise InputError(
                    f"block {c} is not valid dag-pb ({e})", "the DAG is malformed"
                ) from None
            stack.extend(link.cid for link in reversed(links))
