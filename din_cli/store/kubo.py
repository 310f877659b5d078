"""KuboStore: an IPFS node's RPC API (Kubo, or js-ipfs) through ipfshttpclient.

The node is trusted for nothing: an add is hashed by din as the bytes stream
out and the node's CID must equal din's; every block read back is verified
against its CID before its bytes are used.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Iterator

from din_cli.errors import (
    BackendUnavailable,
    DinError,
    InputError,
    NotFoundError,
    UsageError,
    VerificationError,
)
from din_cli.store import car, dagpb, unixfs
from din_cli.store.base import Progress, Store, open_source
from din_cli.store.cid import CID, DAG_PB, IDENTITY, RAW, SHA2_256, encode_varint, parse_cid

# How long the node may search for a block it does not hold before din gives up.
DEFAULT_TIMEOUT = "60s"


class _Tee:
    """A read-only stream that hashes what passes through it (and reports progress)."""

    def __init__(self, f, hasher: unixfs.StreamHasher, progress: Progress):
        self.f, self.hasher, self.progress = f, hasher, progress
        self.name = "file"

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        if data:
            self.hasher.write(data)
            if self.progress:
                self.progress(len(data))
        return data


class _CarStream:
    """A CAR re-encoded section by section from a verifying reader (stops at the first bad block)."""

    def __init__(self, reader: car.CarReader):
        header = car.encode_header(reader.roots)
        self._pieces = self._gen(reader, encode_varint(len(header)) + header)
        self._buf = b""
        self.name = "dag.car"
        self.error: DinError | None = None

    def _gen(self, reader, head):
        yield head
        try:
            for cid, block in reader:
                cb = cid.to_bytes()
                yield encode_varint(len(cb) + len(block)) + cb + block
        except DinError as e:  # raised again once the request is over
            self.error = e

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            piece = next(self._pieces, None)
            if piece is None:
                break
            self._buf += piece
        if n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out


class _Exact:
    """Read exact byte counts from an iterator of chunks (a streamed ``cat`` response)."""

    def __init__(self, chunks, store: KuboStore):
        self.chunks = iter(chunks)
        self.store = store
        self.buf = bytearray()
        self.done = False

    def read(self, n: int) -> bytes:
        while len(self.buf) < n and not self.done:
            try:
                with self.store._rpc("cat"):
                    piece = next(self.chunks)
            except StopIteration:
                self.done = True
                break
            self.buf += piece
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def close(self) -> None:
        close = getattr(self.chunks, "close", None)
        if close:
            close()


class KuboStore(Store):
    """Content store behind an IPFS RPC API (``/ip4/127.0.0.1/tcp/5001``)."""

    def __init__(self, addr: str, *, timeout: str | None = None):
        import ipfshttpclient

        self.addr = addr
        self.name = f"the IPFS node at {addr}"
        self.timeout = timeout or os.environ.get("DIN_IPFS_TIMEOUT") or DEFAULT_TIMEOUT
        warnings.filterwarnings("ignore", category=FutureWarning, module="urllib3")
        try:
            # Client() directly: connect() refuses daemons newer than the client knows.
            self.client = ipfshttpclient.Client(addr, timeout=None)
        except ipfshttpclient.exceptions.AddressError as e:
            raise UsageError(
                f"{addr!r} is not an IPFS API multiaddr ({e})",
                "use the form /ip4/127.0.0.1/tcp/5001 (flag --ipfs or DIN_IPFS)",
            ) from None

    # -- error mapping
    @contextlib.contextmanager
    def _rpc(self, what: str, cid: CID | None = None):
        from ipfshttpclient import exceptions as ex

        try:
            yield
        except (ex.ConnectionError, ex.TimeoutError, ex.ProtocolError) as e:
            raise BackendUnavailable(
                f"cannot reach the IPFS API at {self.addr} ({what}: {type(e).__name__})",
                "start the IPFS daemon, or drop --ipfs/DIN_IPFS to use the local store",
            ) from None
        except ex.ErrorResponse as e:
            msg = str(e)
            low = msg.lower()
            if cid is not None and (
                "not found" in low or "timed out" in low or "timeout" in low or "aborted" in low
            ):
                raise NotFoundError(
                    f"{cid} was not found by {self.name} ({msg})",
                    "add it to that node or import a CAR there",
                ) from None
            raise InputError(f"{self.name} refused {what}: {msg}", "check the node's log") from None
        except ex.StatusError as e:
            raise BackendUnavailable(
                f"{self.name} answered {what} with an error ({e})", "check the node's log"
            ) from None

    # -- blocks
    def get_block(self, cid: CID) -> bytes:
        with self._rpc("block/get", cid):
            data = self.client.block.get(str(cid), opts={"timeout": self.timeout})
        if not cid.matches(data):
            raise VerificationError(
                f"{self.name} returned bytes for block {cid} that do not match its CID",
                "the node's store is corrupt or it is not trustworthy",
            )
        return data

    def _stat(self, cid: CID) -> bool:
        try:
            with self._rpc("block/stat", cid):
                self.client.block.stat(str(cid), opts={"offline": True, "timeout": "2s"})
        except (NotFoundError, InputError):
            return False
        return True

    def has_block(self, cid: CID) -> bool:
        """Whether the node holds every block of the DAG (it is asked not to search the network)."""
        stack = [cid]
        while stack:
            c = stack.pop()
            if c.hash_code == IDENTITY:
                continue
            if c.codec != DAG_PB:
                if not self._stat(c):
                    return False
                continue
            try:
                with self._rpc("block/get", c):
                    data = self.client.block.get(str(c), opts={"offline": True, "timeout": "2s"})
            except NotFoundError:
                return False
            try:
                links, _ = dagpb.decode_node(data)
            except ValueError:
                return True
            stack.extend(link.cid for link in links)
        return True

    # -- files
    def add(
        self, src, *, cid_version: int = 1, only_hash: bool = False, progress: Progress = None
    ) -> str:
        """Add through the node; din hashes the same bytes and the two CIDs must agree."""
        if cid_version not in (0, 1):
            raise UsageError(f"CID version {cid_version} is not supported", "use 0 or 1")
        hasher = unixfs.StreamHasher(cid_version)
        with open_source(src) as (f, _name), self._rpc("add"):
            resp = self.client.add(
                _Tee(f, hasher, progress),
                cid_version=cid_version,
                raw_leaves=cid_version == 1,
                chunker="size-262144",
                only_hash=only_hash,
                pin=True,
            )
        ours = hasher.finish()
        theirs = parse_cid(resp["Hash"])
        if theirs.to_v1() != ours.to_v1() or theirs.version != ours.version:
            raise VerificationError(
                f"{self.name} computed {theirs} but din computed {ours} for the same bytes",
                "the node may use a different chunker or layout; check its config",
            )
        return ours.encode()

    def cat(self, cid: str | CID, *, progress: Progress = None) -> Iterator[bytes]:
        """Stream the file through ``cat``, each leaf's bytes verified against its CID.

        Internal nodes come from ``block/get`` (verified) and give the leaf CIDs
        and sizes; the file's bytes stream from ``cat`` and are cut into leaves
        and hashed before they are yielded. A leaf whose streamed bytes do not
        match is fetched with ``block/get`` instead (and verified).
        """
        c = parse_cid(cid)
        for piece in self._cat(c):
            if progress:
                progress(len(piece))
            yield piece

    def _cat(self, root: CID) -> Iterator[bytes]:
        if root.codec != DAG_PB:
            yield from super().cat(root)
            return
        block = self._get(root)
        try:
            links, data = dagpb.decode_node(block)
            fs = dagpb.decode_unixfs(data or b"")
        except ValueError:
            links, fs = [], None
        if (
            fs is None
            or fs.type not in (dagpb.T_FILE, dagpb.T_RAW)
            or len(fs.blocksizes) != len(links)
            or not links
        ):
            yield from unixfs.iter_file(self._get, root)  # plain block-by-block walk
            return
        with self._rpc("cat", root):
            response = self.client.cat(str(root), stream=True, opts={"timeout": self.timeout})
        stream = _Exact(response, self)
        try:
            total = 0
            if fs.data:
                stream.read(len(fs.data))
                total += len(fs.data)
                yield fs.data
            for link, size in zip(links, fs.blocksizes, strict=True):
                for piece in self._subtree(link, size, stream):
                    total += len(piece)
                    yield piece
            if fs.filesize is not None and total != fs.filesize:
                raise InputError(
                    f"{root}: file has {total} bytes but its root says {fs.filesize}",
                    "the DAG is malformed",
                )
        finally:
            stream.close()

    def _subtree(self, link, size: int, stream: _Exact) -> Iterator[bytes]:
        c = link.cid
        if c.codec == RAW or (
            c.codec == DAG_PB and link.tsize is not None and link.tsize - size <= 32
        ):
            piece = stream.read(size)
            if len(piece) == size:
                if c.codec == RAW:
                    ok = c.matches(piece)
                else:
                    prefix, suffix = dagpb.leaf_wrapping(size)
                    h = hashlib.sha256(prefix)
                    h.update(piece)
                    h.update(suffix)
                    ok = c.hash_code == SHA2_256 and h.digest() == c.digest
                if ok:
                    yield piece
                    return
            got = 0  # not the bytes the CID names (or an unusual leaf): fetch and verify the blocks
            for part in unixfs.iter_file(self._get, c):
                got += len(part)
                yield part
            if got != size:
                raise InputError(
                    f"block {c} holds {got} bytes but its parent says {size}",
                    "the DAG is malformed",
                )
            return
        block = self._get(c)
        try:
            links, data = dagpb.decode_node(block)
            fs = dagpb.decode_unixfs(data or b"")
        except ValueError as e:
            raise InputError(
                f"block {c} is not a valid UnixFS node ({e})", "the DAG is malformed"
            ) from None
        if len(fs.blocksizes) != len(links) or fs.type not in (dagpb.T_FILE, dagpb.T_RAW):
            raise InputError(f"block {c} is not a UnixFS file node", "the DAG is malformed")
        if fs.data:
            stream.read(len(fs.data))
            yield fs.data
        for child, child_size in zip(links, fs.blocksizes, strict=True):
            yield from self._subtree(child, child_size, stream)

    # -- CARs
    def import_car(self, src) -> list[str]:
        """Import a CAR through ``dag/import``; blocks are verified by din as they stream."""
        with open_source(src) as (f, name):
            reader = car.CarReader(f, name)
            stream = _CarStream(reader)
            try:
                with self._rpc("dag/import"):
                    resp = self.client.dag.imprt(stream)
            except DinError:
                if stream.error is None:
                    raise
            if stream.error is not None:
                raise stream.error
        for r in reader.roots:
            if not self.has_block(r):
                raise NotFoundError(
                    f"{name}: root {r} did not reach {self.name}",
                    "export the CAR again with its whole DAG",
                )
        del resp
        return [r.encode() for r in reader.roots]

    def roots(self) -> list[str]:
        """The node's recursive pins."""
        with self._rpc("pin/ls"):
            resp = self.client.pin.ls(type="recursive")
        keys = resp.get("Keys") or {}
        return sorted(parse_cid(k).to_v1().encode() for k in keys)
