"""Choosing the torch device from --device auto|cpu|cuda."""
from __future__ import annotations

import torch

from .errors import MeshcliError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise MeshcliError(None, "--device cuda was asked for but torch sees no CUDA GPU",
                               "use --device cpu or auto, or install a CUDA build of torch")
        # Parity with the float32 reference needs full-precision convolutions and matmuls.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    elif name != "cpu":
        raise MeshcliError(None, f"unknown --device {name!r}", "use auto, cpu or cuda")
    return torch.device(name)
