"""The model zoo: architecture strings, their parameter shapes, and torch modules.

An architecture is a string ``family:spec`` stored in every file's
``din.arch`` metadata, so any file says how to build its model:

- ``logreg:IN-OUT`` -- multinomial logistic regression (one linear layer);
- ``mlp:IN-H1-...-OUT`` -- linear layers with ReLU between them;
- ``cnn:CxHxW-OUT`` -- two 3x3 convolutions (16 and 32 channels, ReLU, 2x2
  max-pool each) and a linear classifier; input rows are flat ``C*H*W``
  vectors (e.g. ``cnn:1x8x8-10`` for scikit-learn's digits).

Every model maps a float32 batch of flat feature rows ``(N, IN)`` to class
logits ``(N, OUT)``.

Plugins: a package adds a family through the ``din.models`` entry point
group; the entry point's name is the family and its value a callable taking
the spec (the text after the colon) and returning a ``torch.nn.Module``
with float32 parameters only, e.g. in its ``pyproject.toml``::

    [project.entry-points."din.models"]
    tinyresnet = "my_pkg.models:tinyresnet"

after which ``din model init --arch tinyresnet:3x32x32-10`` works.
Shapes of built-in families are computed without importing torch (so
``din aggregate`` starts fast); a plugin's are read from the module it builds.
"""

from __future__ import annotations

import re
from functools import lru_cache

from din_cli.errors import InputError, UsageError

ENTRY_POINT_GROUP = "din.models"
BUILTIN = ("logreg", "mlp", "cnn")
_CNN_RE = re.compile(r"^(\d+)x(\d+)x(\d+)-(\d+)$")


def _ints(arch: str, spec: str) -> list[int]:
    try:
        dims = [int(x) for x in spec.split("-")]
    except ValueError:
        raise UsageError(
            f"architecture {arch!r}: sizes must be integers joined by '-'", "e.g. mlp:64-128-10"
        ) from None
    if any(d <= 0 for d in dims):
        raise UsageError(f"architecture {arch!r}: sizes must be positive", "e.g. mlp:64-128-10")
    return dims


def parse_arch(arch: str) -> tuple[str, str]:
    """Split ``family:spec`` and check the family exists."""
    family, sep, spec = str(arch).partition(":")
    if not sep or not family or not spec:
        raise UsageError(
            f"architecture {arch!r} is not FAMILY:SPEC",
            "e.g. mlp:64-128-10, logreg:64-10, cnn:1x8x8-10",
        )
    if family not in BUILTIN and family not in _plugins():
        known = ", ".join(sorted(set(BUILTIN) | set(_plugins())))
        raise UsageError(
            f"unknown model family {family!r}",
            f"use one of: {known} (or install a din.models plugin)",
        )
    return family, spec


def _cnn_dims(arch: str, spec: str) -> tuple[int, int, int, int]:
    m = _CNN_RE.match(spec)
    if not m:
        raise UsageError(f"architecture {arch!r}: cnn needs CxHxW-OUT", "e.g. cnn:1x8x8-10")
    c, h, w, out = (int(g) for g in m.groups())
    if min(c, h, w, out) <= 0 or h < 4 or w < 4:
        raise UsageError(
            f"architecture {arch!r}: cnn input must be at least 4x4", "e.g. cnn:1x8x8-10"
        )
    return c, h, w, out


@lru_cache(maxsize=64)
def param_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of ``arch`` (torch-free for built-in families)."""
    family, spec = parse_arch(arch)
    if family in ("logreg", "mlp"):
        dims = _ints(arch, spec)
        if len(dims) < 2 or (family == "logreg" and len(dims) != 2):
            raise UsageError(
                f"architecture {arch!r}: needs {'IN-OUT' if family == 'logreg' else 'IN-HIDDEN...-OUT'}",
                "e.g. mlp:64-128-10",
            )
        shapes = {}
        for i, (a, b) in enumerate(zip(dims, dims[1:], strict=False)):
            shapes[f"layers.{2 * i}.weight"] = (b, a)
            shapes[f"layers.{2 * i}.bias"] = (b,)
        return shapes
    if family == "cnn":
        c, h, w, out = _cnn_dims(arch, spec)
        return {
            "layers.1.weight": (16, c, 3, 3),
            "layers.1.bias": (16,),
            "layers.4.weight": (32, 16, 3, 3),
            "layers.4.bias": (32,),
            "layers.8.weight": (out, 32 * (h // 4) * (w // 4)),
            "layers.8.bias": (out,),
        }
    model = build_model(arch)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def input_features(arch: str) -> int | None:
    """Number of input features a built-in ``arch`` expects (None for plugins)."""
    family, spec = parse_arch(arch)
    if family in ("logreg", "mlp"):
        return _ints(arch, spec)[0]
    if family == "cnn":
        c, h, w, _ = _cnn_dims(arch, spec)
        return c * h * w
    return None


def build_model(arch: str):
    """A freshly initialised ``torch.nn.Module`` for ``arch`` (uses torch's current RNG)."""
    import torch
    from torch import nn

    family, spec = parse_arch(arch)
    if family in ("logreg", "mlp"):
        layers: list[nn.Module] = []
        sizes = _ints(arch, spec)
        for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
            if i:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(a, b))
        return _Wrap(nn.Sequential(*layers))
    if family == "cnn":
        c, h, w, out = _cnn_dims(arch, spec)
        return _Wrap(
            nn.Sequential(
                nn.Unflatten(1, (c, h, w)),
                nn.Conv2d(c, 16, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(32 * (h // 4) * (w // 4), out),
            )
        )
    factory = _plugins()[family].load()
    model = factory(spec)
    if not isinstance(model, torch.nn.Module):
        raise InputError(
            f"plugin {family!r} returned {type(model).__name__}, not a torch.nn.Module",
            "fix the din.models plugin",
        )
    return model


def _wrap_class():
    from torch import nn

    class Wrap(nn.Module):
        """Holds the layer stack as ``layers`` so parameter names are stable."""

        def __init__(self, layers):
            super().__init__()
            self.layers = layers

        def forward(self, x):
            return self.layers(x)

    return Wrap


def _Wrap(layers):
    global _WRAP
    if _WRAP is None:
        _WRAP = _wrap_class()
    return _WRAP(layers)


_WRAP = None


@lru_cache(maxsize=1)
def _plugins() -> dict:
    from importlib.metadata import entry_points

    try:
        eps = entry_points(group=ENTRY_POINT_GROUP)
    except TypeError:  # pragma: no cover - Python < 3.10 API
        eps = entry_points().get(ENTRY_POINT_GROUP, [])
    return {ep.name: ep for ep in eps if ep.name not in BUILTIN}
