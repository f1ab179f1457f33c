"""Choosing the torch device from --device auto|cpu|cuda, and moving batches and networks' arithmetic onto it."""
from __future__ import annotations

import contextlib

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
        # Frames of a video share their shapes: cuDNN's autotuner picks each convolution's fastest kernel once.
        torch.backends.cudnn.benchmark = True
    elif name != "cpu":
        raise MeshcliError(None, f"unknown --device {name!r}", "use auto, cpu or cuda")
    return torch.device(name)


def check_half(half: bool, device: torch.device) -> bool:
    """--half is fp16 on CUDA; on the CPU it is refused (CPU fp16 is slow and would change the outputs)."""
    if half and device.type != "cuda":
        raise MeshcliError(None, f"--half runs the networks in fp16 on a CUDA GPU; this run is on {device.type}",
                           "drop --half, or use --device cuda on a machine with a CUDA GPU")
    return half


def autocast(device: torch.device, half: bool):
    """The context a network's forward runs in: fp16 autocast with --half, else nothing (float32 as ever)."""
    return torch.autocast(device.type, dtype=torch.float16) if half else contextlib.nullcontext()


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host batch on ``device``; for CUDA through pinned memory, copied without blocking this thread (the
    next kernels on the stream wait for it). CPU batches stay as they are."""
    if device.type != "cuda":
        return batch.to(device)
    return batch.pin_memory().to(device, non_blocking=True)
