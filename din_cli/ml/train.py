"""Local training: a participant's step of a round.

Plain minibatch SGD on cross-entropy, the classic FedAvg client. Every random
choice (batch order) comes from ``seed`` through a private generator, so the
same model, store, options and seed give the same update bytes on the same
CPU setup. The update carries ``din.samples`` = the number of training rows,
the weight FedAvg gives it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from din_cli.errors import InputError, UsageError


@dataclass
class TrainResult:
    samples: int
    epochs: int
    loss: float  # mean loss of the last epoch
    device: str


def resolve_device(device: str = "auto") -> str:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is an error."""
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device {device!r} is not auto, cpu or cuda", "pick one of them")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            "--device cuda: no CUDA GPU is available", "use --device cpu or --device auto"
        )
    return device


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
    import numpy as np
    import torch

    from din_cli.ml import data as data_mod
    from din_cli.ml import models, tensorfile

    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise UsageError(
            "--epochs and --batch-size must be at least 1 and --lr positive",
            "e.g. --epochs 1 --lr 0.1 --batch-size 32",
        )
    dev = resolve_device(device)
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
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    last = 0.0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen).to(dev)
        losses = []
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
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


def _out_features(model, features: int, dev: str) -> int:
    import torch

    with torch.no_grad():
        return int(model(torch.zeros(1, features, device=dev)).shape[1])
