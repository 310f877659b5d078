"""stdout is data, stderr is people.

``emit``/``emit_json`` write data to stdout; ``note``, ``table`` and
``progress`` write to stderr through rich, styled only on a terminal and
silent under ``-q``.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

_quiet = False
_console = None


def set_quiet(value: bool) -> None:
    global _quiet
    _quiet = bool(value)


def console():
    """The stderr console (rich), created on first use."""
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(stderr=True, highlight=False, soft_wrap=True)
    return _console


def emit(*lines: Any) -> None:
    """Print data lines on stdout (CIDs, ids, paths)."""
    out = sys.stdout
    for line in lines:
        out.write(f"{line}\n")
    out.flush()


def emit_json(doc: Any) -> None:
    """Print one JSON document on stdout."""
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def emit_ndjson(records) -> None:
    for r in records:
        sys.stdout.write(json.dumps(r, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def emit_doc(doc: Any, as_json: bool, *lines: Any) -> None:
    """``doc`` as one JSON document under --json, else the plain ``lines`` (none: nothing)."""
    if as_json:
        emit_json(doc)
    else:
        emit(*lines)


def emit_fields(rows) -> None:
    """KEY<TAB>VALUE lines from (key, value) pairs; a None value prints as ``-``."""
    emit(*(f"{k}\t{'-' if v is None else v}" for k, v in rows))


#: The fields `din task status` and `din round status` print first, in this order.
TASK_STATUS_FIELDS = (
    "task_id",
    "phase",
    "round",
    "last_round",
    "deadline",
    "seconds_left",
    "participants",
    "validators",
    "groups",
)


def emit_task_status(doc: dict, more: tuple[str, ...], rows=()) -> None:
    """A task status document as KEY<TAB>VALUE lines: the common fields, ``more`` of them, ``rows``, your role."""
    fields = [(k, doc[k]) for k in (*TASK_STATUS_FIELDS, *more) if k in doc]
    you = [("you", doc["you"]["role"])] if "you" in doc else []
    emit_fields([*fields, *rows, *you])


def note(message: str) -> None:
    """A human note on stderr (suppressed by -q)."""
    if not _quiet:
        console().print(message, markup=False)


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    """A table on stderr: rich on a terminal, tab-separated otherwise."""
    if _quiet:
        return
    c = console()
    if c.is_terminal:
        from rich.table import Table

        t = Table(title=title)
        for col in columns:
            t.add_column(col)
        for row in rows:
            t.add_row(*[str(v) for v in row])
        c.print(t)
    else:
        if title:
            sys.stderr.write(f"# {title}\n")
        sys.stderr.write("\t".join(columns) + "\n")
        for row in rows:
            sys.stderr.write("\t".join(str(v) for v in row) + "\n")
        sys.stderr.flush()


@contextlib.contextmanager
def progress(
    description: str, total: float | None = None, unit: str = ""
) -> Iterator[Callable[[float], None]]:
    """A progress bar on stderr; yields ``advance(n)``.

    Shown only when stderr is a terminal and not under -q; rich shows it only
    once the work has taken a moment (transient), so quick runs stay clean.
    """
    if _quiet or not console().is_terminal:
        yield lambda n=1: None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    cols = [TextColumn("{task.description}"), BarColumn()]
    cols.append(
        DownloadColumn() if unit == "bytes" else TextColumn("{task.completed:.0f}/{task.total:.0f}")
    )
    cols.append(TimeRemainingColumn())
    with Progress(*cols, console=console(), transient=True) as p:
        task = p.add_task(description, total=total)
        yield lambda n=1: p.advance(task, n)
