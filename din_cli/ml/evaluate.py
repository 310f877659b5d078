"""Deterministic evaluation: the score a validator reveals on chain.

Scores are integers in basis points (0..10000), the scale the contracts use:

- ``accuracy``: correct / rows;
- ``f1``: macro F1 over the classes present in the labels or predictions;
- ``loss``: mean cross-entropy ``L``, scored as ``exp(-L)`` (the geometric
  mean probability given to the true class), so higher is better like the
  others; the raw loss is reported beside it.

Integer ratios are rounded half-up with integer arithmetic. The forward pass
runs on the CPU in float64 from the file's float32 weights, in a fixed batch
order, so predictions agree across machines unless two logits tie to within
float64 rounding. :func:`evaluate_rows` takes explicit row indices (with
repeats): the on-chain flow scores a round-seeded resample of the test pool.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

from din_cli.errors import UsageError

METRICS = ("accuracy", "f1", "loss")
BPS = 10000


@dataclass
class Score:
    metric: str
    score_bps: int  # the on-chain integer, 0..10000
    value: float  # the metric itself (accuracy, F1, or mean loss)
    rows: int
    correct: int

    def to_dict(self) -> dict:
        return asdict(self)


def _ratio_bps(num: int, den: int) -> int:
    """round(num / den * 10000), half up, in integers."""
    return (2 * BPS * num + den) // (2 * den) if den else 0


def logits(mf, x, *, batch: int = 4096):
    """Float64 logits of a checked :class:`~din_cli.ml.models.ModelFile` on rows ``x``."""
    import numpy as np
    import torch

    from din_cli.ml import models

    model = models.to_torch(mf).double().eval()
    out = []
    with torch.no_grad():
        for s in range(0, x.shape[0], batch):
            out.append(
                model(
                    torch.from_numpy(np.ascontiguousarray(x[s : s + batch], dtype=np.float64))
                ).numpy()
            )
    return np.concatenate(out) if out else np.zeros((0, 0))


def score(metric: str, z, y) -> Score:
    """Score float64 logits ``z`` against labels ``y``."""
    import numpy as np

    if metric not in METRICS:
        raise UsageError(
            f"--metric {metric!r} is not one of {', '.join(METRICS)}", "pick accuracy, f1 or loss"
        )
    n = int(y.shape[0])
    pred = np.argmax(z, axis=1)  # ties: lowest class index
    correct = int((pred == y).sum())
    if metric == "accuracy":
        return Score(metric, _ratio_bps(correct, n), correct / n, n, correct)
    if metric == "f1":
        classes = np.union1d(np.unique(y), np.unique(pred))
        f1_bps = []
        for c in classes:
            tp = int(((pred == c) & (y == c)).sum())
            fp = int(((pred == c) & (y != c)).sum())
            fn = int(((pred != c) & (y == c)).sum())
            f1_bps.append(_ratio_bps(2 * tp, 2 * tp + fp + fn))
        bps = (2 * sum(f1_bps) + len(f1_bps)) // (2 * len(f1_bps))
        return Score(metric, bps, bps / BPS, n, correct)
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    if int(y.max()) >= z.shape[1]:
        raise UsageError(
            f"label {int(y.max())} but the model has {z.shape[1]} classes",
            "use a store made for this model",
        )
    loss = float(np.mean(lse - z[np.arange(n), y]))
    bps = int(math.floor(BPS * math.exp(-loss) + 0.5))
    return Score(metric, max(0, min(BPS, bps)), loss, n, correct)


def evaluate_rows(
    model_path: str | os.PathLike,
    data: str | os.PathLike,
    indices=None,
    *,
    metric: str = "accuracy",
) -> Score:
    """Score the model file on the store ``data``, on rows ``indices`` (all rows when None)."""
    from din_cli.ml import data as data_mod
    from din_cli.ml.train import check_features

    if metric not in METRICS:
        raise UsageError(
            f"--metric {metric!r} is not one of {', '.join(METRICS)}", "pick accuracy, f1 or loss"
        )
    ds = data_mod.load_store(data)
    if indices is not None:
        ds = data_mod.select_rows(ds, indices)
    from din_cli.ml import models

    mf = models.read_model(model_path)
    check_features(mf.arch, ds, str(data))
    z = logits(mf, ds.x)
    return score(metric, z, ds.y)


def evaluate(
    model_path: str | os.PathLike, data: str | os.PathLike, *, metric: str = "accuracy"
) -> Score:
    """Score the model file on every row of the store ``data``."""
    return evaluate_rows(model_path, data, None, metric=metric)
