"""Local training: a participant's step of a round.

Plain minibatch SGD on cross-entropy, the classic FedAvg client. Every random
choice (batch order) comes from ``seed`` through a private generator, so the
same model, store, options and seed give the same update bytes on the same
CPU setup. The update carries ``din.samples`` = the number of training rows,
the weight FedAvg gives it.

On a GPU training runs under torch's deterministic algorithms (cuDNN's
deterministic kernels, no autotuning, no TF32, cuBLAS with a fixed
workspace), so the same inputs and seed give the same bytes on the same GPU
model and software; a GPU's update differs from the CPU's in the last bits,
which is fine: aggregation and scoring, not training, must agree across
machines.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from din_cli.errors import InputError, UsageError
from din_cli.ml.device import resolve as resolve_device


@dataclass
class TrainResult:
    samples: int
    epochs: int
    loss: float  # mean loss of the last epoch
    device: str
    deterministic: bool = True  # the same inputs and seed give the same bytes on this device


@contextlib.contextmanager
def deterministic(dev: str):
    """torch's deterministic algorithms for the duration (restored after), on ``dev``."""
    import torch

    if dev != "cuda":
        yield
        return
    # cuBLAS reproducibility needs a fixed workspace, set before its first handle is made
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    saved = (
        (
            torch._C._get_deterministic_algorithms(),
            torch._C._get_deterministic_algorithms_warn_only(),
        ),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
    )
    # torch.use_deterministic_algorithms also sets torch._inductor's config, and importing that
    # pulls in torch._dynamo (~4.7 s on a GPU machine's first call); din compiles nothing, so
    # it sets the flag itself. warn_only: an op without a deterministic kernel warns (see train).
    torch._C._set_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch._C._set_deterministic_algorithms(saved[0][0], warn_only=saved[0][1])
        (
            _,
            torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark,
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
        ) = saved


def check_features(arch: str, ds, path: str) -> None:
    from din_cli.ml import zoo

    want = zoo.input_features(arch)
    if want is not None and ds.x.shape[1] != want:
        raise InputError(
            f"{path}: rows have {ds.x.shape[1]} features, {arch} expects {want}",
            "use a store made for this model",
        )


def train(
    model_path: str | os.PathLike,
    data: str | os.PathLike,
    output: str | os.PathLike,
    *,
    epochs: int = 1,
    lr: float = 0.1,
    batch_size: int = 32,
    seed: int = 0,
    device: str = "auto",
    progress: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train the model file at ``model_path`` on the store ``data``; write the update to ``output``."""
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise UsageError(
            "--epochs and --batch-size must be at least 1 and --lr positive",
            "e.g. --epochs 1 --lr 0.1 --batch-size 32",
        )
    dev = resolve_device(device)
    with deterministic(dev), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _train(model_path, data, output, epochs, lr, batch_size, seed, dev, progress)
    for w in caught:
        if "deterministic" in str(w.message):
            result.deterministic = False  # an op of this model has no deterministic kernel here
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return result


def _train(model_path, data, output, epochs, lr, batch_size, seed, dev, progress) -> TrainResult:
    import numpy as np
    import torch

    from din_cli.ml import data as data_mod
    from din_cli.ml import models, tensorfile

    mf = models.read_model(model_path)
    ds = data_mod.load_store(data)
    check_features(mf.arch, ds, str(data))
    model = models.to_torch(mf, dev)
    classes = _out_features(model, ds.x.shape[1], dev)
    if int(ds.y.max()) >= classes:
        raise InputError(
            f"{data}: label {int(ds.y.max())} but {mf.arch} has {classes} classes",
            "use a store made for this model",
        )

    x = torch.from_numpy(ds.x).to(dev)
    y = torch.from_numpy(ds.y).to(dev)
    n = len(ds)
    gen = torch.Generator().manual_seed(int(seed))
    params = list(model.parameters())
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    last = 0.0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen).to(dev)
        losses = []
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            for p in params:
                p.grad = None
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            _sgd_step(params, lr)
            losses.append(loss.detach())
        # mean loss over rows: batches weighted by their sizes, summed once per epoch
        sizes = torch.full((len(losses),), float(batch_size), dtype=torch.float64, device=dev)
        sizes[-1] = float(n - batch_size * (len(losses) - 1))
        last = float(torch.stack(losses).double() @ sizes) / n
        if not np.isfinite(last):
            raise InputError(f"training diverged (loss {last})", "lower --lr")
        if progress:
            progress(1)
    weights = models.state_to_numpy(model)
    meta = tensorfile.make_metadata(
        arch=mf.arch, kind="update", samples=n, round=mf.header.round + 1, task=mf.header.task
    )
    for name in sorted(weights):
        if not np.isfinite(weights[name]).all():
            raise InputError(f"training produced non-finite weights in {name}", "lower --lr")
    tensorfile.write(output, weights, meta)
    return TrainResult(samples=n, epochs=epochs, loss=last, device=dev)


def _sgd_step(params, lr: float) -> None:
    """``p -= lr * grad``: torch.optim.SGD's plain step (no momentum, no weight decay), the
    same ``add_(grad, alpha=-lr)`` it runs per tensor on the CPU, without importing
    torch.optim, whose construction pulls in torch._dynamo (about a second of start-up)."""
    import torch

    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.add_(p.grad, alpha=-lr)


def _out_features(model, features: int, dev: str) -> int:
    import torch

    with torch.no_grad():
        return int(model(torch.zeros(1, features, device=dev)).shape[1])
