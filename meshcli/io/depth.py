"""Decoding depth images: 16-bit PNG/TIFF in millimetres, NYU's colour-encoded PNG, or ``.npy`` arrays."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..errors import MeshcliError

DEPTH_FORMATS = ("16bit", "nyu")
DEPTH_EXTENSIONS = frozenset({".png", ".tif", ".tiff", ".npy"})  # what folders and globs of depth pick up


def read_depth(path: str | Path, fmt: str = "16bit", scale: float = 1.0) -> np.ndarray:
    """Decode a depth file into an HxW float32 array in mm.

    ``.npy``: a 2-D numeric array; image files: ``16bit`` single-channel
    16-bit (or float) PNG/TIFF, or ``nyu`` colour PNG with depth = B + 256*G.
    Values are multiplied by ``scale`` (raw units -> mm).
    """
    path = Path(path)
    if fmt not in DEPTH_FORMATS:
        raise MeshcliError(path, f"unknown depth format {fmt!r}", f"choose one of {', '.join(DEPTH_FORMATS)}")
    if not path.is_file():
        raise MeshcliError(path, "depth file not found", "check the path")
    if path.suffix.lower() == ".npy":
        depth = _read_npy(path)
    else:
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise MeshcliError(path, "cannot be decoded as an image (corrupt, truncated or not an image)",
                               "give a 16-bit depth PNG/TIFF, a NYU depth PNG or a .npy array")
        depth = _decode_nyu(path, raw) if fmt == "nyu" else _decode_16bit(path, raw)
    if scale != 1.0:
        depth = depth * np.float32(scale)
    return depth


def _decode_16bit(path: Path, raw: np.ndarray) -> np.ndarray:
    if raw.ndim == 3 and raw.shape[2] > 1:
        hint = (" (a NYU colour-encoded depth PNG? then add --depth-format nyu)"
                if raw.dtype == np.uint8 and raw.shape[2] == 3 else "")
        raise MeshcliError(path, f"is a {raw.shape[2]}-channel {raw.dtype} colour image, not a 16-bit depth "
                           f"image{hint}", "give single-channel 16-bit depth in mm, or choose --depth-format")
    raw = raw.reshape(raw.shape[:2])
    if raw.dtype == np.uint8:
        raise MeshcliError(path, "is an 8-bit image, not 16-bit depth (8 bits cannot hold millimetre depths)",
                           "give the sensor's 16-bit depth PNG/TIFF, or a .npy array")
    if raw.dtype not in (np.uint16, np.float32):
        raise MeshcliError(path, f"has {raw.dtype} pixels; expected 16-bit depth",
                           "give 16-bit (or float32 TIFF) single-channel depth")
    return raw.astype(np.float32)


def _decode_nyu(path: Path, raw: np.ndarray) -> np.ndarray:
    if raw.dtype != np.uint8 or raw.ndim != 3 or raw.shape[2] < 3:
        raise MeshcliError(path, f"is not a NYU colour-encoded depth PNG ({raw.dtype}, "
                           f"{1 if raw.ndim == 2 else raw.shape[2]} channel(s))",
                           "drop --depth-format nyu for 16-bit depth images")
    # OpenCV's channel order is B, G, R: depth = B + 256 * G; NYU leaves R at 0.
    if raw[:, :, 2].any():
        raise MeshcliError(path, "is not a NYU depth PNG: its red channel is not 0 (a colour photo?)",
                           "give the depth_*.png files of NYU; for 16-bit depth drop --depth-format nyu")
    return raw[:, :, 0].astype(np.float32) + raw[:, :, 1].astype(np.float32) * 256


def _read_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise MeshcliError(path, f"is not a readable .npy array ({err})", "save depth with numpy.save") from None
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2 or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise MeshcliError(path, f"holds a {arr.dtype} array of shape {arr.shape}, not an HxW depth map",
                           "save a 2-D array of depths")
    if arr.size == 0:
        raise MeshcliError(path, f"holds an empty {arr.shape[0]}x{arr.shape[1]} array", "save a non-empty depth map")
    return arr.astype(np.float32)
