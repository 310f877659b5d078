"""Model files: make a genesis model, read one with every check, describe one."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from din_cli.ml import tensorfile, zoo


@dataclass
class ModelFile:
    """A checked model file: its header and float32 weights by name."""

    header: tensorfile.Header
    weights: dict[str, Any]

    @property
    def arch(self) -> str:
        return self.header.arch


def init_model(arch: str, output: str | os.PathLike, *, seed: int = 0, task: str = "") -> None:
    """Write a genesis model for ``arch``, initialised from ``seed``, to ``output`` (``-``: stdout)."""
    import torch

    zoo.param_shapes(arch)  # validates the string before torch work
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(int(seed))
        model = zoo.build_model(arch)
    finally:
        torch.random.set_rng_state(gen_state)
    weights = state_to_numpy(model)
    tensorfile.write(
        output,
        weights,
        tensorfile.make_metadata(arch=arch, kind="model", samples=0, round=0, task=task),
    )


def state_to_numpy(model) -> dict[str, Any]:
    """A module's parameters as contiguous float32 numpy arrays."""
    import numpy as np

    out = {}
    for name, t in model.state_dict().items():
        a = t.detach().to("cpu").numpy()
        if a.dtype != np.float32:
            from din_cli.errors import InputError

            raise InputError(
                f"parameter {name} is {a.dtype}, din models hold float32 only", "use float32 layers"
            )
        out[name] = np.ascontiguousarray(a)
    return out


def read_model(
    path: str | os.PathLike,
    *,
    arch: str | None = None,
    kinds: tuple[str, ...] = tensorfile.KINDS,
    finite: bool = True,
) -> ModelFile:
    """Read and check a model file: header, architecture, names, shapes, dtype, finiteness."""
    header = tensorfile.read_header(path)
    if not header.arch:
        from din_cli.errors import InputError

        raise InputError(
            f"{header.path}: no din.arch metadata", "write models with `din model init`"
        )
    expected = zoo.param_shapes(header.arch)
    tensorfile.check_model(header, expected, arch=arch, kinds=kinds)
    weights = tensorfile.load_arrays(header)
    if finite:
        tensorfile.check_finite(header, weights)
    return ModelFile(header, weights)


def to_torch(mf: ModelFile, device: str = "cpu"):
    """Build ``mf``'s architecture and load its weights into it."""
    import torch

    model = zoo.build_model(mf.arch)
    state = {k: torch.from_numpy(v.copy()) for k, v in mf.weights.items()}
    model.load_state_dict(state, strict=True)
    return model.to(device)


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """Arch, kind, samples, round, task, encoding, parameter count and size of a model file."""
    header = tensorfile.read_header(path)
    expected = zoo.param_shapes(header.arch) if header.arch else {}
    tensorfile.check_model(header, expected)
    return {
        "arch": header.arch,
        "kind": header.kind,
        "samples": header.samples,
        "round": header.round,
        "task": header.task,
        "encoding": header.metadata.get("din.encoding", ""),
        "params": header.params,
        "tensors": len(header.tensors),
        "bytes": header.file_size,
    }
