"""Data stores: a participant's local training rows, never uploaded.

A store is a file or a folder:

- CSV with a header row and a label column named ``label`` (or ``target``,
  ``y``, ``class``); every other column is a numeric feature;
- NPZ with arrays ``x`` and ``y`` (``X`` is accepted too);
- safetensors with tensors ``x`` and ``y``;
- a folder: every ``*.csv``, ``*.npz`` and ``*.safetensors`` in it, in name
  order, concatenated.

Features load as float32 rows ``(N, F)``, labels as int64 class ids.

:func:`split` cuts a dataset (a bundled scikit-learn one, or a CSV) into one
store per participant (IID, or Dirichlet non-IID with concentration
``alpha``) plus the model owner's reserved test pool.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from din_cli.errors import InputError, NotFoundError, UsageError

LABEL_COLUMNS = ("label", "target", "y", "class")
BUNDLED = ("digits", "breast_cancer", "wine", "iris")
SUFFIXES = (".csv", ".npz", ".safetensors")


@dataclass
class Dataset:
    """Rows of a store: float32 features ``x`` (N, F) and int64 labels ``y`` (N,)."""

    x: Any
    y: Any
    source: str = ""

    def __len__(self) -> int:
        return int(self.y.shape[0])


def load_store(path: str | os.PathLike) -> Dataset:
    """Load a data store (file or folder) and check it is usable."""
    p = Path(path)
    if not p.exists():
        raise NotFoundError(
            f"{p}: no such data store", "pass a CSV, NPZ or safetensors file, or a folder of them"
        )
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix in SUFFIXES and f.is_file())
        if not files:
            raise InputError(
                f"{p}: data store folder holds no .csv, .npz or .safetensors file",
                "put the participant's data in it",
            )
        parts = [_load_file(f) for f in files]
        import numpy as np

        widths = {d.x.shape[1] for d in parts}
        if len(widths) != 1:
            raise InputError(
                f"{p}: files in the store have different feature counts {sorted(widths)}",
                "keep one schema per store",
            )
        ds = Dataset(
            np.concatenate([d.x for d in parts]), np.concatenate([d.y for d in parts]), str(p)
        )
    else:
        ds = _load_file(p)
    if len(ds) == 0:
        raise InputError(f"{p}: data store is empty", "add rows to it")
    return ds


def _load_file(p: Path) -> Dataset:
    suffix = p.suffix.lower()
    if suffix == ".csv":
        return _load_csv(p)
    if suffix == ".npz":
        return _load_npz(p)
    if suffix == ".safetensors":
        return _load_st(p)
    raise InputError(
        f"{p}: unknown data store format {suffix or '(no suffix)'}",
        "use .csv, .npz or .safetensors",
    )


def _finish(x, y, source: str) -> Dataset:
    import numpy as np

    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    if x.ndim > 2:
        x = x.reshape(x.shape[0], -1)
    if x.shape[0] != y.reshape(-1).shape[0]:
        raise InputError(
            f"{source}: {x.shape[0]} feature rows but {y.size} labels", "store one label per row"
        )
    try:
        xf = x.astype(np.float32)
    except (TypeError, ValueError):
        raise InputError(
            f"{source}: features are not numeric", "encode features as numbers"
        ) from None
    if not np.isfinite(xf).all():
        raise InputError(f"{source}: features contain NaN or Inf", "clean the data first")
    y = y.reshape(-1)
    if y.size and (
        not np.issubdtype(y.dtype, np.number)
        or np.any(np.asarray(y, dtype=np.float64) != np.round(np.asarray(y, dtype=np.float64)))
    ):
        raise InputError(f"{source}: labels must be integer class ids", "map classes to 0..K-1")
    yi = y.astype(np.int64)
    if yi.size and yi.min() < 0:
        raise InputError(
            f"{source}: labels must be non-negative class ids", "map classes to 0..K-1"
        )
    return Dataset(np.ascontiguousarray(xf), yi, source)


def _load_csv(p: Path) -> Dataset:
    import csv

    import numpy as np

    with open(p, newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise InputError(
                f"{p}: data store is empty", "add a header row and data rows"
            ) from None
        names = [h.strip() for h in header]
        lower = [h.lower() for h in names]
        col = next((lower.index(c) for c in LABEL_COLUMNS if c in lower), None)
        if col is None:
            raise InputError(
                f"{p}: no label column (looked for {', '.join(LABEL_COLUMNS)})",
                "name the label column 'label'",
            )
        rows = []
        for lineno, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(names):
                raise InputError(
                    f"{p}:{lineno}: {len(row)} fields, header has {len(names)}", "fix the row"
                )
            try:
                rows.append([float(c) for c in row])
            except ValueError:
                raise InputError(
                    f"{p}:{lineno}: a field is not a number",
                    "CSV stores hold numeric features and integer labels",
                ) from None
    if not rows:
        raise InputError(f"{p}: data store is empty", "add data rows below the header")
    a = np.asarray(rows, dtype=np.float64)
    y = a[:, col]
    x = np.delete(a, col, axis=1)
    return _finish(x, y, str(p))


def _load_npz(p: Path) -> Dataset:
    import zipfile

    import numpy as np

    try:
        with np.load(p, allow_pickle=False) as z:
            keys = set(z.files)
            xk = "x" if "x" in keys else "X" if "X" in keys else None
            if xk is None or "y" not in keys:
                raise InputError(
                    f"{p}: NPZ store needs arrays 'x' and 'y' (has {sorted(keys)})",
                    "save with np.savez(path, x=..., y=...)",
                )
            return _finish(z[xk], z["y"], str(p))
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise InputError(
            f"{p}: not a readable NPZ file ({e})", "save with np.savez(path, x=..., y=...)"
        ) from None


def _load_st(p: Path) -> Dataset:
    from din_cli.ml import tensorfile

    header = tensorfile.read_header(p)
    if "x" not in header.tensors or "y" not in header.tensors:
        raise InputError(
            f"{p}: safetensors store needs tensors 'x' and 'y'", "save x (rows) and y (labels)"
        )
    arrays = tensorfile.load_arrays(header, names=["x", "y"])
    return _finish(arrays["x"], arrays["y"], str(p))


def save_store(path: str | os.PathLike, x, y) -> None:
    """Write a store as NPZ (``x`` float32, ``y`` int64), atomically."""
    import io

    import numpy as np

    from din_cli.files import write_atomic

    buf = io.BytesIO()
    np.savez(buf, x=np.asarray(x, dtype=np.float32), y=np.asarray(y, dtype=np.int64))
    write_atomic(path, buf.getvalue())


def load_dataset(name: str) -> Dataset:
    """A bundled scikit-learn dataset (scaled for training) or a CSV/NPZ/safetensors store."""
    import numpy as np

    if name in BUNDLED:
        from sklearn import datasets

        bunch = getattr(datasets, f"load_{name}")()
        x = np.asarray(bunch.data, dtype=np.float64)
        if name == "digits":
            x = x / 16.0
        else:
            std = x.std(axis=0)
            x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
        return _finish(x, bunch.target, name)
    if not Path(name).exists():
        raise NotFoundError(
            f"dataset {name!r}: not a bundled dataset or a file",
            f"use one of {', '.join(BUNDLED)}, or a CSV path",
        )
    return load_store(name)


def split(
    dataset: str,
    out_dir: str | os.PathLike,
    *,
    participants: int,
    alpha: float | None = None,
    test_fraction: float = 0.4,
    seed: int = 0,
    shuffle_labels: tuple[int, ...] = (),
    min_rows: int = 2,
) -> list[Path]:
    """Write ``participant-NN.npz`` stores and ``test.npz`` into ``out_dir``; return their paths.

    ``alpha=None`` is IID; otherwise each class is divided among participants
    by proportions drawn from Dirichlet(``alpha``). Participants listed in
    ``shuffle_labels`` (1-based) get their labels permuted (a dishonest
    participant for demos: every label becomes a random wrong class). All randomness comes from ``seed``.
    """
    import numpy as np

    if participants < 1:
        raise UsageError("--participants must be at least 1", "e.g. --participants 10")
    if not 0.0 <= test_fraction < 1.0:
        raise UsageError(
            f"--test-fraction {test_fraction} is outside [0, 1)", "e.g. --test-fraction 0.4"
        )
    if alpha is not None and alpha <= 0:
        raise UsageError(
            f"--alpha {alpha} must be positive",
            "small values (0.1) are very non-IID, large (100) nearly IID",
        )
    bad = [k for k in shuffle_labels if not 1 <= k <= participants]
    if bad:
        raise UsageError(
            f"--shuffle-labels {bad[0]} is not a participant number 1..{participants}",
            "number participants from 1",
        )
    out = Path(out_dir)
    ds = load_dataset(dataset)
    n = len(ds)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_test = int(round(n * test_fraction))
    if n - n_test < participants * min_rows:
        raise UsageError(
            f"{n - n_test} training rows cannot feed {participants} participants",
            "use fewer participants or a smaller --test-fraction",
        )
    test_idx, train_idx = np.sort(order[:n_test]), order[n_test:]
    y_train = ds.y[train_idx]
    if alpha is None:
        parts = np.array_split(train_idx, participants)
    else:
        parts = _dirichlet(train_idx, y_train, participants, alpha, rng, min_rows)
    out.mkdir(parents=True, exist_ok=True)
    width = max(2, len(str(participants)))
    written = []
    for k, idx in enumerate(parts, start=1):
        idx = np.sort(idx)
        y = ds.y[idx].copy()
        if k in shuffle_labels:
            y = _corrupt(y, int(ds.y.max()) + 1, rng)
        path = out / f"participant-{k:0{width}d}.npz"
        save_store(path, ds.x[idx], y)
        written.append(path)
    if n_test:
        path = out / "test.npz"
        save_store(path, ds.x[test_idx], ds.y[test_idx])
        written.append(path)
    return written


def _corrupt(y, classes: int, rng):
    """Every label replaced by a random wrong class (none keeps its true label)."""
    k = max(classes, 2)
    return (y + rng.integers(1, k, size=y.size)) % k


def _dirichlet(train_idx, y_train, participants: int, alpha: float, rng, min_rows: int):
    import numpy as np

    classes = np.unique(y_train)
    for _ in range(1000):
        buckets: list[list] = [[] for _ in range(participants)]
        for c in classes:
            idx = train_idx[y_train == c]
            idx = idx[rng.permutation(idx.size)]
            props = rng.dirichlet(np.full(participants, alpha))
            cuts = (np.cumsum(props)[:-1] * idx.size).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                buckets[k].extend(chunk.tolist())
        if min(len(b) for b in buckets) >= min_rows:
            return [np.asarray(b, dtype=np.int64) for b in buckets]
    raise UsageError(
        f"could not give every participant {min_rows} rows with --alpha {alpha}",
        "raise --alpha or use fewer participants",
    )


def select_rows(ds: Dataset, indices) -> Dataset:
    """The rows ``indices`` (with repeats allowed) of ``ds``."""
    import numpy as np

    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        raise UsageError("no rows selected", "pass at least one row index")
    if idx.min() < 0 or idx.max() >= len(ds):
        raise UsageError(
            f"row index out of range 0..{len(ds) - 1}", "indices refer to rows of the store"
        )
    return Dataset(ds.x[idx], ds.y[idx], ds.source)
