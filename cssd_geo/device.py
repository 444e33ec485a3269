"""Choosing the torch device from a user's --device option."""
from __future__ import annotations

import torch

from .errors import CssdError


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise CssdError(f"--device {name}: CUDA is not available here (torch {torch.__version__}); "
                            "use --device cpu or install a CUDA build of torch")
        if ":" in name:
            index = name.split(":", 1)[1]
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise CssdError(f"--device {name}: no such GPU (this machine has "
                                f"{torch.cuda.device_count()}); use cuda:0..cuda:{torch.cuda.device_count() - 1}")
        return torch.device(name)
    raise CssdError(f"--device {name}: unknown device; use auto, cpu, cuda or cuda:N")


def describe_device(device: torch.device, requested: str = "auto") -> str:
    """The device for the log: ``cuda:0 (NVIDIA ...)``, or ``cpu`` with why: ``(no CUDA found)``
    when ``auto`` found none, ``(as asked)`` for ``--device cpu``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if (requested or "auto").strip().lower() == "auto":
        return "cpu (no CUDA found)"
    return "cpu (as asked)"
