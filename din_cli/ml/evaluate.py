"""Deterministic evaluation: the score a validator reveals on chain.

Scores are integers in basis points (0..10000), the scale the contracts use:

- ``accuracy``: correct / rows;
- ``f1``: macro F1 over the classes present in the labels or predictions;
- ``loss``: mean cross-entropy ``L``, scored as ``exp(-L)`` (the geometric
  mean probability given to the true class), so higher is better like the
  others; the raw loss is reported beside it.

Honest validators must reveal the very same integers, so nothing here may
depend on the machine, the BLAS library, the thread count or the batch size:

- **Logits are bit-exact.** For the built-in families (logreg, mlp, cnn) the
  forward pass is written out in numpy float64 with one fixed order of
  operations: every output element is ``bias``, then ``+ x_k * w_k`` for
  ``k = 0, 1, ...`` in index order (convolutions: channel, then kernel row,
  then kernel column), each step one IEEE multiply and one IEEE add
  (element-wise ufuncs: no BLAS, no threads, no fused multiply-add, no
  reassociation). The float32 weights and features are exact in float64.
  ReLU and max-pooling are exact. So the logits are the same bits on every
  IEEE-754 machine, and so are the argmax predictions (ties: lowest class).
- **Integer ratios** are rounded half-up in integers.
- **The loss** is computed in decimal arithmetic (``decimal``: correctly
  rounded exp and ln, 34 digits, the same on every platform) from the exact
  logits, and ``exp(-L) * 10000`` is rounded half-up there, so no libm or
  SIMD ``exp`` takes part.

On a GPU (``device="cuda"``, ``din evaluate --device cuda``) the same
forward pass runs as torch float64 element-wise kernels in the same order:
one multiply kernel, then one add kernel per step (never ``addcmul`` or a
matmul, which may fuse or reorder), so each step is the same correctly
rounded IEEE operation and the logits hold the same values as the CPU's
(the sign of a zero may differ, which no score can see), hence the same
scores. The same code runs on the CPU as ``device="torch-cpu"``, which is
how the CPU suite checks it without a GPU.

A plugin architecture (``din.models``) has no written-out forward pass; its
logits come from torch in float64 on the CPU with one thread, which is
repeatable on one machine but not promised across machines. It is scored on
the CPU even with ``device="cuda"``, since a GPU's kernels would give other
logits.
:func:`evaluate_rows` takes explicit row indices (with repeats): the on-chain
flow scores a round-seeded resample of the test pool.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from din_cli.errors import UsageError

#: Evaluation metrics; a task stores its metric on chain as the index here (never reorder).
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


def logits(mf, x, *, batch: int = 1024, device: str = "cpu"):
    """Float64 logits of a checked :class:`~din_cli.ml.models.ModelFile` on rows ``x``, bit-exact.

    ``batch`` bounds memory only: every row's logits are computed on their own.
    ``device`` (``cpu``, ``cuda``; ``torch-cpu``: the GPU code on the CPU)
    changes the speed, never a score.
    """
    import numpy as np

    from din_cli.ml import zoo

    family, _ = zoo.parse_arch(mf.arch)
    x = np.asarray(x)
    if family not in zoo.BUILTIN:
        return _torch_logits(mf, x, batch)
    if device != "cpu":
        return _device_logits(mf, x, "cpu" if device == "torch-cpu" else device)
    w = {k: np.asarray(v, dtype=np.float64) for k, v in mf.weights.items()}
    forward = _cnn if family == "cnn" else _dense
    out = [
        forward(mf.arch, w, np.asarray(x[s : s + batch], dtype=np.float64))
        for s in range(0, x.shape[0], batch)
    ]
    return np.concatenate(out) if out else np.zeros((0, 0))


def _linear(h, weight, bias):
    """``bias + sum_k h[:, k] * weight[:, k]``, added in index order ``k = 0, 1, ...``.

    Rows go in blocks whose partial sums stay in cache (~128 KiB); every
    element still sees the same operations in the same order, so blocking
    changes the speed (about 2x on a 1400-wide layer), never a bit.
    """
    import numpy as np

    n, width = h.shape[0], weight.shape[0]
    wt = np.ascontiguousarray(weight.T)  # wt[k] is contiguous
    out = np.empty((n, width), dtype=np.float64)
    rows = max(1, _BLOCK_ELEMENTS // max(1, width))
    tmp = np.empty((min(rows, n), width), dtype=np.float64)
    for s in range(0, n, rows):
        hb, ob = h[s : s + rows], out[s : s + rows]
        tb = tmp[: hb.shape[0]]
        ob[:] = bias
        for k in range(wt.shape[0]):
            np.multiply(hb[:, k : k + 1], wt[k], out=tb)
            np.add(ob, tb, out=ob)
    return out


_BLOCK_ELEMENTS = 16384  # float64s per block of partial sums (128 KiB)


def _dense(arch: str, w: dict, h):
    """logreg / mlp: linear layers with ReLU between them."""
    import numpy as np

    layers = len(w) // 2
    for i in range(layers):
        h = _linear(h, w[f"layers.{2 * i}.weight"], w[f"layers.{2 * i}.bias"])
        if i < layers - 1:
            np.maximum(h, 0.0, out=h)
    return h


def _conv3x3(h, weight, bias):
    """3x3 convolution, padding 1: ``bias``, then ``+ w[o, c, dy, dx] * x[c, y+dy-1, x+dx-1]`` in (c, dy, dx) order."""
    import numpy as np

    n, c, hh, ww = h.shape
    o = weight.shape[0]
    pad = np.zeros((c, n, hh + 2, ww + 2), dtype=np.float64)
    pad[:, :, 1:-1, 1:-1] = h.transpose(1, 0, 2, 3)
    out = np.empty((o, n * hh * ww), dtype=np.float64)  # long rows: few, fast ufunc loops
    out[:] = bias[:, None]
    tmp = np.empty_like(out)
    for ci in range(c):
        for dy in range(3):
            for dx in range(3):
                patch = np.ascontiguousarray(pad[ci, :, dy : dy + hh, dx : dx + ww]).reshape(-1)
                np.multiply(weight[:, ci, dy, dx, None], patch[None, :], out=tmp)
                np.add(out, tmp, out=out)
    return out.reshape(o, n, hh, ww).transpose(1, 0, 2, 3)


def _pool2(h):
    n, c, hh, ww = h.shape
    h = h[:, :, : hh // 2 * 2, : ww // 2 * 2]
    return h.reshape(n, c, hh // 2, 2, ww // 2, 2).max(axis=(3, 5))


def _cnn(arch: str, w: dict, h):
    """cnn: conv-ReLU-pool twice, then a linear classifier (as ``zoo.build_model``)."""
    import numpy as np

    from din_cli.ml import zoo

    c, hh, ww, _ = zoo._cnn_dims(arch, zoo.parse_arch(arch)[1])
    h = h.reshape(h.shape[0], c, hh, ww)
    for conv in ("layers.1", "layers.4"):
        h = _conv3x3(h, w[f"{conv}.weight"], w[f"{conv}.bias"])
        np.maximum(h, 0.0, out=h)
        h = _pool2(h)
    return _linear(h.reshape(h.shape[0], -1), w["layers.8.weight"], w["layers.8.bias"])


# --- the same forward pass as torch element-wise kernels (GPU) ---

DEVICE_BATCH = 8192  # rows per forward pass on the torch path


def _device_logits(mf, x, device: str):
    """:func:`logits` on a torch device: the numpy forward pass, step for step."""
    import numpy as np
    import torch

    from din_cli.ml import zoo

    dev = torch.device(device)
    family, _ = zoo.parse_arch(mf.arch)
    w = {
        k: torch.from_numpy(np.asarray(v, dtype=np.float64)).to(dev) for k, v in mf.weights.items()
    }
    forward = _t_cnn if family == "cnn" else _t_dense
    out = []
    with torch.no_grad():
        for s in range(0, x.shape[0], DEVICE_BATCH):
            rows = torch.from_numpy(np.asarray(x[s : s + DEVICE_BATCH], dtype=np.float64))
            out.append(forward(mf.arch, w, rows.to(dev)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


def _t_linear(h, weight, bias):
    """:func:`_linear`: ``bias``, then ``+ h[:, k] * weight[:, k]`` for k in order, one kernel each."""
    import torch

    wt = weight.t().contiguous()
    out = bias.expand(h.shape[0], -1).clone()
    tmp = torch.empty_like(out)
    for k in range(wt.shape[0]):
        torch.mul(h[:, k : k + 1], wt[k], out=tmp)
        out.add_(tmp)
    return out


def _t_relu(h):
    return h.masked_fill_(h < 0, 0.0)  # NaN stays NaN, as np.maximum(h, 0)


def _t_dense(arch: str, w: dict, h):
    layers = len(w) // 2
    for i in range(layers):
        h = _t_linear(h, w[f"layers.{2 * i}.weight"], w[f"layers.{2 * i}.bias"])
        if i < layers - 1:
            _t_relu(h)
    return h


def _t_conv3x3(h, weight, bias):
    """:func:`_conv3x3`: the (c, dy, dx) order, one multiply and one add kernel per step."""
    import torch

    n, c, hh, ww = h.shape
    o = weight.shape[0]
    pad = torch.zeros((c, n, hh + 2, ww + 2), dtype=torch.float64, device=h.device)
    pad[:, :, 1:-1, 1:-1] = h.permute(1, 0, 2, 3)
    out = bias[:, None].expand(o, n * hh * ww).clone()
    tmp = torch.empty_like(out)
    for ci in range(c):
        for dy in range(3):
            for dx in range(3):
                patch = pad[ci, :, dy : dy + hh, dx : dx + ww].reshape(-1)
                torch.mul(weight[:, ci, dy, dx, None], patch[None, :], out=tmp)
                out.add_(tmp)
    return out.reshape(o, n, hh, ww).permute(1, 0, 2, 3)


def _t_cnn(arch: str, w: dict, h):
    from din_cli.ml import zoo

    c, hh, ww, _ = zoo._cnn_dims(arch, zoo.parse_arch(arch)[1])
    h = h.reshape(h.shape[0], c, hh, ww)
    for conv in ("layers.1", "layers.4"):
        h = _t_relu(_t_conv3x3(h, w[f"{conv}.weight"], w[f"{conv}.bias"]))
        n, ch, y, x = h.shape
        h = h[:, :, : y // 2 * 2, : x // 2 * 2]
        h = h.reshape(n, ch, y // 2, 2, x // 2, 2).amax(dim=(3, 5))
    return _t_linear(h.reshape(h.shape[0], -1), w["layers.8.weight"], w["layers.8.bias"])


def _torch_logits(mf, x, batch: int):
    """A plugin's logits: torch float64 on the CPU, one thread (repeatable on one machine)."""
    import numpy as np
    import torch

    from din_cli.ml import models

    model = models.to_torch(mf).double().eval()
    threads = torch.get_num_threads()
    out = []
    try:
        torch.set_num_threads(1)
        with torch.no_grad():
            for s in range(0, x.shape[0], batch):
                rows = np.ascontiguousarray(x[s : s + batch], dtype=np.float64)
                out.append(model(torch.from_numpy(rows)).numpy())
    finally:
        torch.set_num_threads(threads)
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
    if int(y.max()) >= z.shape[1]:
        raise UsageError(
            f"label {int(y.max())} but the model has {z.shape[1]} classes",
            "use a store made for this model",
        )
    loss, bps = _loss_bps(z, y)
    return Score(metric, max(0, min(BPS, bps)), loss, n, correct)


def _loss_bps(z, y) -> tuple[float, int]:
    """Mean cross-entropy and ``round(10000 * exp(-loss))``, half up, in decimal arithmetic.

    ``decimal``'s exp and ln are correctly rounded, so the result is the same
    on every platform (no libm, no SIMD exp). The sum is taken in row order.
    """
    import decimal

    import numpy as np

    if not np.isfinite(z).all():  # overflowed logits: no probability to speak of
        return float("inf"), 0
    ctx = decimal.Context(prec=34, rounding=decimal.ROUND_HALF_EVEN)
    D = decimal.Decimal
    total = D(0)
    for row, label in zip(z.tolist(), y.tolist(), strict=True):
        top = max(row)
        s = D(0)
        for v in row:
            s = ctx.add(s, ctx.exp(ctx.subtract(D(v), D(top))))
        total = ctx.add(total, ctx.subtract(ctx.add(ctx.ln(s), D(top)), D(row[label])))
    mean = ctx.divide(total, D(len(z)))
    scaled = ctx.multiply(ctx.exp(ctx.minus(mean)), D(BPS))
    return float(mean), int(scaled.quantize(D(1), rounding=decimal.ROUND_HALF_UP, context=ctx))


def evaluate_rows(
    model_path: str | os.PathLike,
    data: str | os.PathLike,
    indices=None,
    *,
    metric: str = "accuracy",
    device: str = "cpu",
) -> Score:
    """Score the model file on the store ``data``, on rows ``indices`` (all rows when None).

    ``device`` as in :func:`logits`: the score is the same on either.
    """
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
    z = logits(mf, ds.x, device=device)
    return score(metric, z, ds.y)


def evaluate(
    model_path: str | os.PathLike,
    data: str | os.PathLike,
    *,
    metric: str = "accuracy",
    device: str = "cpu",
) -> Score:
    """Score the model file on every row of the store ``data`` (on ``device``: same score)."""
    return evaluate_rows(model_path, data, None, metric=metric, device=device)
