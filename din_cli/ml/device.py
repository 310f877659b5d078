"""Where train, aggregate and evaluate run: ``--device auto|cpu|cuda``.

``auto`` takes CUDA when a GPU is present. Looking for one costs nothing
when the machine has no NVIDIA driver (no ``/proc/driver/nvidia``, no
``/dev/nvidia*``): torch is then not even imported, so the CPU-only
commands start as fast as before. Aggregation and evaluation give the same
bytes and scores on either device; only the speed differs.
"""

from __future__ import annotations

import glob
import os

from din_cli.errors import UsageError

DEVICES = ("auto", "cpu", "cuda")


def _driver_present() -> bool:
    return os.path.isdir("/proc/driver/nvidia") or bool(glob.glob("/dev/nvidia[0-9]*"))


def cuda_available() -> bool:
    """A CUDA GPU torch can use (False without importing torch when no NVIDIA driver is loaded)."""
    if not _driver_present():
        return False
    import torch

    return torch.cuda.is_available()


def resolve(device: str = "auto") -> str:
    """``cpu`` or ``cuda``: ``auto`` picks CUDA when present; ``cuda`` without a GPU is an error."""
    if device not in DEVICES:
        raise UsageError(f"--device {device!r} is not auto, cpu or cuda", "pick one of them")
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device == "cuda" and not cuda_available():
        raise UsageError(
            "--device cuda: no CUDA GPU is available", "use --device cpu or --device auto"
        )
    return device
