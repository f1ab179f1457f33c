"""Reading checkpoint files safely and mapping them strictly onto modules.

Nothing here executes code from a user's file: torch files are read with
``weights_only=True``. Before that, a torch zip is checked member by member: every
member's CRC must match (a flipped byte inside a tensor is caught), the members together
may declare no more data than the method's architecture can fill (a file of another or a
forged network is refused by its sizes), and no member may declare more data than the file
really holds (``torch.save`` never compresses, so a small deflated file that would expand to
gigabytes is refused before anything is read).
"""
from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from .errors import MeshcliError, first_line


def torch_load(path: str | Path, holds: int) -> object:
    """Load a torch checkpoint without running code from it; errors name the file.

    ``holds`` is the size in bytes of the tensors the file is meant to fill (``tensor_bytes`` of
    the architecture): a zip declaring more than a training snapshot of them can carry is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise MeshcliError(path, "weights file not found",
                           "check the path, or see `meshcli weights list`")
    if path.stat().st_size == 0:
        raise MeshcliError(path, "weights file is empty (0 bytes)",
                           "download it again or re-run `meshcli weights import`")
    if zipfile.is_zipfile(path):
        _check_zip(path, holds)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise MeshcliError(path, f"refused to load: the file holds more than tensors ({_refusal(err)})",
                           "use the official checkpoint file; meshcli never runs code from weights") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise MeshcliError(path, f"not a readable torch checkpoint ({first_line(err)})",
                           "the file may be truncated or of another format; download it again") from None


def tensor_bytes(module: torch.nn.Module) -> int:
    """Bytes of every tensor in ``module``'s state dict (counted from shapes: a meta module will do)."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


# A member may declare at most this many times its stored bytes (torch stores members uncompressed).
MAX_EXPANSION = 1.01
# A checkpoint may hold its network's tensors this many times over: training snapshots (SPIN's, I2L's)
# carry Adam's two moments per parameter beside the weights.
TRAINING_COPIES = 3
# What a checkpoint holds besides tensors (its pickle, version and byte-order records, optimizer settings).
NON_TENSOR_BYTES = 8 << 20


def _check_zip(path: Path, holds: int) -> None:
    """Declared sizes bounded by the architecture and by the stored bytes, then every member's CRC,
    before torch reads the file."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            declared = sum(info.file_size for info in infos)
            if declared > TRAINING_COPIES * holds + NON_TENSOR_BYTES:
                raise MeshcliError(path, f"its members declare {declared} bytes, more than a checkpoint of this "
                                   f"network can hold ({holds} bytes of tensors; {TRAINING_COPIES}x with training "
                                   "state): not this network's checkpoint, or a forged file",
                                   "check --method and --variant, and use the checkpoint file as the authors "
                                   "published it")
            for info in infos:
                if info.file_size > MAX_EXPANSION * info.compress_size + 1024:
                    raise MeshcliError(path, f"member {info.filename} declares {info.file_size} bytes but stores "
                                       f"{info.compress_size} (compressed: torch never writes such a file)",
                                       "use the checkpoint file as the authors published it")
            for info in infos:
                with zf.open(info) as member:  # zipfile checks the CRC when the member has been read
                    while member.read(1 << 22):
                        pass
    except zipfile.BadZipFile as err:
        raise MeshcliError(path, f"the file is damaged ({first_line(err)})", "download it again") from None
    except (OSError, EOFError, NotImplementedError) as err:
        raise MeshcliError(path, f"not a readable torch checkpoint ({first_line(err)})",
                           "the file may be truncated or of another format; download it again") from None


def _refusal(err: pickle.UnpicklingError) -> str:
    """What torch refused, without its advice to load the file unsafely."""
    advice = ("weights_only", "Weights only load failed", "documentation")
    for line in str(err).splitlines():
        if line.strip() and not any(a in line for a in advice):
            return line.split("WeightsUnpickler error:", 1)[-1].strip()
    return "an object that is not a tensor"


def load_state_dict_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor],
                           path: str | Path, what: str = "checkpoint") -> None:
    """Copy ``state`` into ``module``; every key must be used and every parameter present.

    Shape mismatches and unknown or missing keys are reported by name, so a
    checkpoint of the wrong variant fails with a message that says so.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
             for k in own if k in state and _shape(state[k]) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s), first {missing[0]!r}")
    if extra:
        problems.append(f"{len(extra)} unexpected key(s), first {extra[0]!r}")
    if wrong:
        problems.append(f"{len(wrong)} mis-shaped tensor(s), first {wrong[0]}")
    if problems:
        raise MeshcliError(path, f"does not match this {what}: " + "; ".join(problems),
                           "check that the file is the official checkpoint for this method and --variant")
    with torch.no_grad():
        for k, v in own.items():
            src = state[k]
            v.copy_(src.reshape(v.shape) if src.numel() == v.numel() else src)


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    # BatchNorm's num_batches_tracked is saved as [] by new torch and [1] by some old code.
    return () if t.dim() == 1 and t.numel() == 1 and t.dtype == torch.int64 else tuple(t.shape)


def build_loaded(make: Callable[[], torch.nn.Module], weights: str | Path | None,
                 read: Callable[[str | Path, int], Mapping[str, torch.Tensor]], what: str) -> torch.nn.Module:
    """``make()`` filled strictly from ``read(weights, tensor bytes of make())``, or freshly initialised when
    ``weights`` is None."""
    if weights is None:
        return make()
    with torch.device("meta"):  # skip the random initialisation the checkpoint overwrites
        module = make()
    state = read(weights, tensor_bytes(module))
    module.to_empty(device="cpu")
    load_state_dict_strict(module, state, weights, what)
    return module
