"""Turning command-line inputs into streams of frames.

An *input* is one command-line argument: an image, a folder or glob of images
(naturally sorted), or a video. Each input becomes one NPZ and one annotated
output. Videos are decoded by PyAV frame by frame, so memory does not grow
with the video's length.
"""
from __future__ import annotations

import errno
import glob as globlib
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from ..errors import MeshcliError
from ..types import Frame

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_EXTENSIONS = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}

ImageReader = Callable[[Path], np.ndarray]


def natural_key(path: Path) -> list:
    """Sort key so that frame2.png comes before frame10.png."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


@dataclass
class Input:
    """One command-line input and what it expands to."""

    arg: str
    kind: str  # "image" | "images" | "video"
    name: str  # output stem: DIR/<name>.npz, DIR/<name>.mp4 or DIR/<name>/..., DIR/<name>_meshes/...
    files: list[Path] = field(default_factory=list)  # images, or the one video

    @property
    def is_video(self) -> bool:
        return self.kind == "video"


def expand_inputs(args: list[str], extensions: set[str] | None = None) -> tuple[list[Input], list[MeshcliError]]:
    """Resolve command-line arguments; bad ones become errors, the rest still run."""
    extensions = extensions or (IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)
    inputs: list[Input] = []
    errors: list[MeshcliError] = []
    for arg in args:
        try:
            inputs.extend(_expand_one(arg, extensions))
        except MeshcliError as err:
            errors.append(err)
    _make_names_unique(inputs)
    return inputs, errors


def _expand_one(arg: str, extensions: set[str]) -> list[Input]:
    path = Path(arg)
    image_exts = extensions - VIDEO_EXTENSIONS
    if any(ch in arg for ch in "*?[") and not path.exists():
        matched = sorted((Path(p) for p in globlib.glob(arg) if Path(p).is_file()), key=natural_key)
        # each video the pattern matches is an input of its own; the images together are one input
        videos = [Input(str(p), "video", p.stem, [p]) for p in matched
                  if p.suffix.lower() in VIDEO_EXTENSIONS & extensions]
        files = [p for p in matched if p.suffix.lower() in image_exts]
        if not files and not videos:
            raise MeshcliError(arg, "the pattern matches no image or video files",
                               f"check the pattern; accepted extensions: {', '.join(sorted(extensions))}")
        return videos + ([Input(arg, "images", _glob_name(arg), files)] if files else [])
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in image_exts),
                       key=natural_key)
        if not files:
            raise MeshcliError(path, "the folder holds no image files",
                               f"point at a folder with {', '.join(sorted(image_exts))} files")
        return [Input(arg, "images", path.resolve().name, files)]
    _check_regular_file(path)
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS & extensions:
        return [Input(arg, "video", path.stem, [path])]
    if suffix in image_exts:
        return [Input(arg, "image", path.stem, [path])]
    raise MeshcliError(path, f"unsupported file type {suffix or '(no extension)'!r}",
                       f"give an image ({', '.join(sorted(image_exts))}), a folder"
                       + (f" or a video ({', '.join(sorted(VIDEO_EXTENSIONS & extensions))})"
                          if VIDEO_EXTENSIONS & extensions else ""))


def _check_regular_file(path: Path) -> None:
    """A missing path, a symbolic-link loop or a device/FIFO/socket is a one-line error (a FIFO or
    /dev/zero would otherwise be read forever)."""
    try:
        mode = path.stat().st_mode
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise MeshcliError(path, "is a loop of symbolic links", "point at the real file") from None
        if os.path.islink(path):
            raise MeshcliError(path, f"is a symbolic link to a missing file ({os.readlink(path)})",
                               "point at the real file") from None
        if err.errno == errno.ENOENT:
            raise MeshcliError(path, "no such file or folder", "check the path") from None
        raise MeshcliError(path, f"cannot be read ({err.strerror})", "check its permissions") from None
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise MeshcliError(path, "is not a regular file (a device, FIFO or socket)",
                           "give an image, a folder or a video file")


def _glob_name(pattern: str) -> str:
    fixed = [p for p in Path(pattern).parts if not any(ch in p for ch in "*?[")]
    return Path(*fixed).resolve().name if fixed else "images"


def mesh_folder_name(name: str) -> str:
    """The folder ``--save-mesh`` writes an input's meshes to."""
    return f"{name}_meshes"


def _make_names_unique(inputs: list[Input]) -> None:
    """Output names unique across the batch: no input is named like another or like another's mesh folder."""
    for inp, name in zip(inputs, unique_names([inp.name for inp in inputs],
                                              lambda name: {name, mesh_folder_name(name)})):
        inp.name = name


def unique_names(names: list[str], claims: Callable[[str], set[str]] = lambda name: {name}) -> list[str]:
    """The first of a name keeps it; a later one whose ``claims`` (the names its outputs take) meet those of
    an earlier one gets the first free ``<name>-<n>``, never claiming what another name of the list claims
    (``x``, ``x``, ``x-2`` -> ``x``, ``x-3``, ``x-2``)."""
    listed = {claim for name in names for claim in claims(name)}
    kept: set[str] = set()
    out = []
    for name in names:
        if claims(name) & kept:
            n = 2
            while claims(f"{name}-{n}") & (kept | listed):
                n += 1
            name = f"{name}-{n}"
        kept |= claims(name)
        out.append(name)
    return out


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image file to HxWx3 uint8 RGB (EXIF orientation applied)."""
    data = _read_bytes(path)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:  # OpenCV refuses images over its pixel limit (2^30 pixels) this way
        raise MeshcliError(path, "the image is too large to decode (over OpenCV's limit of 2^30 pixels)",
                           "downscale it first") from None
    if image is None:
        raise MeshcliError(path, "not a decodable image (corrupt, truncated or not an image despite its name)",
                           "re-export the file or remove it from the input")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _read_bytes(path: Path) -> bytes:
    _check_regular_file(Path(path))
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise MeshcliError(path, "no such file", "check the path") from None
    except OSError as err:
        raise MeshcliError(path, f"cannot be read ({err.strerror})", "check its permissions") from None
    if not data:
        raise MeshcliError(path, "the file is empty (0 bytes)", "re-export or re-copy it")
    return data


@dataclass
class VideoInfo:
    fps: float
    time_base: Fraction | None
    num_frames: int  # 0 when the container does not say
    rotation: int  # degrees counter-clockwise applied to decoded frames


def probe_video(path: Path) -> VideoInfo:
    import av

    _check_nonempty(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MeshcliError(path, "the file has no video stream", "give a video or an image")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or Fraction(30)
            rotation = 0
            for frame in container.decode(stream):  # rotation lives on frames' display matrix
                rotation = int(round(getattr(frame, "rotation", 0) or 0)) % 360
                break
            else:
                raise MeshcliError(path, "the video has no decodable frames", "check the file is not truncated")
            return VideoInfo(float(rate), stream.time_base, int(stream.frames or 0), rotation)
    except av.error.FFmpegError as err:
        raise MeshcliError(path, f"not a readable video ({err.strerror or type(err).__name__})",
                           "the file may be truncated or not a video; re-export it") from None


def _check_nonempty(path: Path) -> None:
    _check_regular_file(Path(path))
    if Path(path).stat().st_size == 0:
        raise MeshcliError(path, "the file is empty (0 bytes)", "re-export or re-copy it")


class VideoEndsEarly(MeshcliError):
    """The video decoded fewer frames, or a shorter time, than its container announces (cut off or damaged)."""

    def __init__(self, path: Path, short: str):
        self.short = short
        super().__init__(path, f"the video ends after {short} its container announces (truncated or damaged)",
                         "re-export or re-download it; --keep-partial keeps the outputs of the frames read, "
                         "marked incomplete in the NPZ")

    def __reduce__(self):
        return type(self), (self.path, self.short)


def iter_video(path: Path, rotation: int = 0) -> Iterator[Frame]:
    """Decode a video frame by frame (RGB), rotated upright per its metadata.

    Frame threading does not raise the decoder's errors about missing data, so a video that stops
    short of what its container announces is reported by comparing the two (``VideoEndsEarly``,
    raised after its last frame): the frame count where the container has one (MP4, MOV, AVI),
    else the duration Matroska and WebM state in their header.
    """
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            announced = int(stream.frames or 0)
            announced_end = None if announced else _stated_duration(container, stream)
            interval = 1 / float(stream.average_rate or stream.guessed_rate or 30)
            decoded, decoded_end = 0, 0.0
            for index, frame in enumerate(container.decode(stream)):
                image = frame.to_ndarray(format="rgb24")
                if rotation:
                    image = np.ascontiguousarray(np.rot90(image, k=rotation // 90))
                decoded += 1
                if frame.time is not None:
                    length = getattr(frame, "duration", None)  # PyAV 14+
                    shown = float(length * frame.time_base) if length else interval
                    decoded_end = max(decoded_end, frame.time + shown)
                yield Frame(image, index, f"{path.name}#{index}", frame.time)
    except av.error.FFmpegError as err:
        raise MeshcliError(path, f"video decoding failed ({err.strerror or type(err).__name__}); "
                           "the file is truncated or damaged",
                           "re-export or re-download the video") from None
    if decoded < announced:
        raise VideoEndsEarly(path, f"{decoded} of the {announced} frames")
    # a frame and a half of slack beyond the last frame's own end: timestamps are rounded to the time base
    if announced_end is not None and announced_end - decoded_end > 1.5 * interval:
        raise VideoEndsEarly(path, f"{decoded} frames ({decoded_end:.2f} s) of the {announced_end:.2f} s")


def _stated_duration(container, stream) -> float | None:
    """The video's duration in seconds as a Matroska/WebM file states it, or None where it states none.

    FFmpeg's Matroska muxer tags each track with its DURATION; a file of one stream has the segment's
    duration from its header. Elsewhere a duration may be FFmpeg's estimate from the bit rate, which
    is no evidence of a cut.
    """
    if "matroska" not in container.format.name:
        return None
    tag = stream.metadata.get("DURATION") or stream.metadata.get("duration")
    if tag:
        try:
            hours, minutes, seconds = tag.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        except ValueError:
            return None
    if len(container.streams) == 1 and container.duration:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def iter_frames(inp: Input, reader: ImageReader, video_rotation: int = 0,
                on_bad_file: Callable[[MeshcliError], None] | None = None) -> Iterator[Frame]:
    """Frames of one input. In an image folder a bad file is reported and skipped."""
    if inp.is_video:
        yield from iter_video(inp.files[0], video_rotation)
        return
    index = 0
    for position, path in enumerate(inp.files):
        try:
            image = reader(path)
        except MeshcliError as err:
            if inp.kind == "image" or on_bad_file is None:
                raise
            on_bad_file(err)
            continue
        yield Frame(image, index, path.name, position=position)
        index += 1
