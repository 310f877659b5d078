"""Resolve FILE|CID|- arguments to local files.

A path that exists is a file; ``-`` is stdin (spooled to a temporary file);
otherwise the text must parse as a CID and is fetched from the content store
(the local store by default, a Kubo node with ``--ipfs``), verified block by
block. Fetched and spooled files live in a temporary folder under
``$DIN_HOME`` that is removed when the context ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from din_cli.errors import NotFoundError, UsageError


@contextlib.contextmanager
def resolved(refs: Sequence[str], ipfs_api: str | None = None) -> Iterator[list[Path]]:
    """Yield local paths for ``refs`` (files, CIDs or ``-``), in the same order."""
    from din_cli.config import ensure_home

    tmp: str | None = None
    store = None
    out: list[Path] = []
    stdin_used = False
    try:
        for i, ref in enumerate(refs):
            ref = str(ref)
            if ref == "-":
                if stdin_used:
                    raise UsageError("'-' (stdin) given twice", "pass stdin once")
                stdin_used = True
                tmp = tmp or tempfile.mkdtemp(prefix="inputs-", dir=ensure_home())
                path = Path(tmp) / f"{i:06d}-stdin"
                with open(path, "wb") as f:
                    shutil.copyfileobj(sys.stdin.buffer, f, 1 << 20)
                out.append(path)
                continue
            if os.path.exists(ref):
                out.append(Path(ref))
                continue
            cid = _as_cid(ref)
            if store is None:
                from din_cli.store import open_store

                store = open_store(ipfs_api)
            tmp = tmp or tempfile.mkdtemp(prefix="inputs-", dir=ensure_home())
            path = Path(tmp) / f"{i:06d}-{cid}"
            store.cat_to(cid, path)
            out.append(path)
        yield out
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _as_cid(ref: str):
    looks_like_path = (
        os.sep in ref or ref.endswith((".safetensors", ".npz", ".csv")) or ref.startswith(".")
    )
    if looks_like_path:
        raise NotFoundError(f"{ref}: no such file", "check the path")
    try:
        from din_cli.store.cid import parse_cid
    except ImportError:  # pragma: no cover - the store ships with din
        raise NotFoundError(f"{ref}: no such file", "check the path") from None
    try:
        return parse_cid(ref)
    except UsageError:
        raise NotFoundError(
            f"{ref}: no such file, and not a CID", "pass an existing file or a CID"
        ) from None


def read_refs(refs: Sequence[str], stdin=None) -> list[str]:
    """``refs`` as given, or one per line from stdin when none are given."""
    if refs:
        return list(refs)
    stream = stdin or sys.stdin
    if stream.isatty():
        raise UsageError("no inputs given", "pass files or CIDs, or pipe them one per line")
    return [line.strip() for line in stream if line.strip() and not line.lstrip().startswith("#")]
