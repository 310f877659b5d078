"""File plumbing shared by every layer: ``-`` for stdin/stdout, atomic writes,
secret files.

Nothing is ever half-written: outputs go to a temporary file in the target's
folder and are renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from din_cli.errors import InputError, NotFoundError, UsageError

STDIO = "-"


def is_stdio(path: str | os.PathLike | None) -> bool:
    return path is not None and str(path) == STDIO


@contextlib.contextmanager
def open_input(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open ``path`` for binary reading; ``-`` is stdin."""
    if is_stdio(path):
        yield sys.stdin.buffer
        return
    p = Path(path)
    try:
        f = open(p, "rb")
    except FileNotFoundError:
        raise NotFoundError(f"{p}: no such file", "check the path") from None
    except IsADirectoryError:
        raise InputError(f"{p}: is a folder, not a file", "name a file") from None
    except PermissionError:
        raise InputError(f"{p}: permission denied", "check the file's mode") from None
    with f:
        yield f


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike, *, mode: int = 0o644, overwrite: bool = True
) -> Iterator[BinaryIO]:
    """Write ``path`` atomically: a temp file beside it, fsync, rename.

    ``-`` writes to stdout. On any exception the temp file is removed and the
    target is untouched. With ``overwrite=False`` an existing target is an
    error (and it is checked again at the rename, with a hard link).
    """
    if is_stdio(path):
        out = sys.stdout.buffer
        yield out
        out.flush()
        return
    target = Path(path)
    if not overwrite and target.exists():
        raise UsageError(
            f"{target}: already exists", "choose another name; din never overwrites it"
        )
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise NotFoundError(f"{folder}: no such folder", "create it first")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=folder)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)  # fails if target appeared meanwhile
            except FileExistsError:
                raise UsageError(
                    f"{target}: already exists", "choose another name; din never overwrites it"
                ) from None
            os.unlink(tmp)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_atomic(
    path: str | os.PathLike, data: bytes, *, mode: int = 0o644, overwrite: bool = True
) -> None:
    with atomic_output(path, mode=mode, overwrite=overwrite) as f:
        f.write(data)


def write_secret(path: str | os.PathLike, data: bytes) -> None:
    """Write a secret: mode 600, never overwriting an existing file (``-``: stdout)."""
    write_atomic(path, data, mode=0o600, overwrite=False)


def readinto_full(src: BinaryIO, view: memoryview) -> int:
    """Fill ``view`` from ``src`` as far as the stream goes; return the byte count.

    Pipes and sockets return short reads; this keeps reading until ``view``
    is full or the stream ends, and works on streams without ``readinto``.
    """
    got, want = 0, len(view)
    readinto = getattr(src, "readinto", None)
    while got < want:
        if readinto is not None:
            n = readinto(view[got:])
        else:
            data = src.read(want - got)
            n = len(data) if data else 0
            view[got : got + n] = data or b""
        if not n:
            break
        got += n
    return got
