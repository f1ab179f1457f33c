"""Where results go: annotated videos and images, and NPZ parameter dumps.

Nothing is written under a final name until the whole input has succeeded. Each
sink writes under temporary names (``finish()`` completes them) and ``commit()``
only renames them into place; the pipeline commits an input's sinks after all of
them finished, so a failed or interrupted input leaves the previous run's outputs
as they were. Folder outputs (an image folder's annotated images, meshes) are
written into a temporary folder that replaces the old one in one rename.

Temporary names carry the writing process's id (``.<name>.meshcli-<pid>-<random>.part``),
so leftovers of a killed run are recognised and removed by the next run on that
folder (``remove_leftovers``), while another live run's files are left alone.
"""
from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import tempfile
import zipfile
from fractions import Fraction
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import MeshcliError
from ..types import Frame, FrameResult
from .sources import mesh_folder_name, unique_names

_LEFTOVER = re.compile(r"^\..+\.meshcli-(\d+)-[^.]+\.part(\.[A-Za-z0-9]+)?$")


def _temp_prefix(final: Path) -> str:
    return f".{final.name}.meshcli-{os.getpid()}-"


def temp_path_for(final: Path) -> Path:
    """A fresh hidden name beside ``final``, with the permissions a plain new file would get."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=_temp_prefix(final), suffix=f".part{final.suffix}", dir=final.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)
    os.close(fd)
    return Path(name)


def temp_dir_for(final: Path) -> Path:
    """A fresh hidden folder beside ``final``, with the permissions a plain new folder would get."""
    final.parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=_temp_prefix(final), suffix=".part", dir=final.parent))
    path.chmod(0o777 & ~_UMASK)
    return path


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def remove_leftovers(out_dir: Path) -> list[Path]:
    """Remove temporary files and folders that killed meshcli runs left in ``out_dir``; returns them."""
    removed = []
    for path in out_dir.iterdir():
        match = _LEFTOVER.match(path.name)
        if match is None or _process_alive(int(match.group(1))):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():  # a process id reused after a kill: this process has made no temporary yet
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_atomic(final: Path, data: bytes) -> None:
    tmp = temp_path_for(final)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, final)
    except BaseException:
        _discard(tmp)
        raise


def _discard(path: Path | None) -> None:
    """Remove a temporary file or folder; a failure to remove it (a full or vanished disk) is not raised,
    as this only runs while another error is being reported."""
    if path is None:
        return
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def _replace_folder(staged: Path, final: Path) -> None:
    """Put the folder ``staged`` at ``final``; an old ``final`` is swapped out by rename, then removed."""
    if final.is_dir() and not final.is_symlink():
        old = temp_dir_for(final)
        os.replace(final, old)  # onto the empty temporary folder
        os.replace(staged, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, final)


def disk_error(path: Path | str, err: OSError) -> MeshcliError:
    """A write that failed for lack of space (or another OS error) as a one-line error."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return MeshcliError(path, "no space left on the device; nothing of this input was kept",
                            "free some space or choose another --out")
    return MeshcliError(path, f"cannot be written ({err.strerror or err})", "check the --out folder")


class Sink:
    """Receives every frame of one input in order, then ``finish()`` and ``commit()``, or ``abort()``."""

    def write(self, frame: Frame, annotated: np.ndarray | None, result: FrameResult) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Complete the outputs under temporary names (this is where writing can still fail)."""

    def commit(self) -> list[Path]:
        """Rename the finished outputs into place; returns the files written."""
        raise NotImplementedError

    def abort(self) -> None:
        """Remove the temporary outputs; never raises and never touches a final name."""
        raise NotImplementedError


class FileSink(Sink):
    """One output file, written under the temporary name ``tmp`` and renamed to ``final`` on commit."""

    def __init__(self, final: Path):
        self.final = final
        self.tmp: Path | None = None  # made when writing starts

    def commit(self):
        if self.tmp is None:  # nothing was written (no frame annotated)
            return []
        os.replace(self.tmp, self.final)
        self.tmp = None
        return [self.final]

    def abort(self):
        _discard(self.tmp)
        self.tmp = None


class _RowSpool:
    """Rows of one NPZ key appended to a temporary file, so memory stays flat."""

    def __init__(self, directory: Path):
        self.file = tempfile.TemporaryFile(dir=directory)
        self.dtype: np.dtype | None = None
        self.shape: tuple[int, ...] | None = None
        self.count = 0

    def append(self, key: str, rows: np.ndarray) -> None:
        rows = np.asarray(rows)
        if self.dtype is None:
            self.dtype, self.shape = rows.dtype, rows.shape[1:]
        if rows.shape[1:] != self.shape:
            raise ValueError(f"NPZ key {key!r}: row shape {rows.shape[1:]} differs from {self.shape}")
        self.file.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())
        self.count += len(rows)

    def write_npy(self, out) -> None:
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": (self.count, *self.shape)}
        np.lib.format.write_array_header_1_0(out, header)
        self.file.seek(0)
        while chunk := self.file.read(1 << 22):
            out.write(chunk)
        self.file.close()


class NpzSink(FileSink):
    """One NPZ per input: per-person rows of all frames stacked, plus per-input fields.

    Rows are spooled to temporary files while the input runs and streamed into
    the zip at the end. ``frame_index`` gives each row's frame. A key seen only
    with zero rows is written with zero rows; ``empty_rows`` (the method's row
    schema) covers an input that produced no frame at all.
    """

    def __init__(self, final: Path, fields: dict[str, Any], empty_rows: dict[str, np.ndarray],
                 late_fields: Callable[[], dict[str, Any]] | None = None):
        super().__init__(final)
        self.fields = dict(fields)
        self.late_fields = late_fields  # read at close, e.g. the renderer that actually ran
        self.empty_rows = empty_rows
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.spools: dict[str, _RowSpool] = {"frame_index": _RowSpool(final.parent)}
        self.names: list[str] = []
        self.sizes: list[tuple[int, int]] = []
        self.frame_info: dict[str, list] = {}
        self.frame_times: list[float] = []  # video frames' timestamps
        self.num_frames = 0
        self.incomplete = False  # a video that ended early, kept with --keep-partial

    def write(self, frame, annotated, result):
        self.num_frames += 1
        self.names.append(frame.name)
        self.sizes.append(frame.image.shape[:2])
        if frame.time is not None:
            self.frame_times.append(frame.time)
        for key, value in result.info.items():
            self.frame_info.setdefault(key, []).append(value)
        # Rows are appended even when empty: a frame with nobody still fixes each key's dtype and shape.
        self.spools["frame_index"].append("frame_index",
                                          np.full(result.num_people, frame.index, dtype=np.int64))
        for key, rows in result.rows.items():
            self.spools.setdefault(key, _RowSpool(self.final.parent)).append(key, rows)

    def finish(self):
        self.tmp = tmp = temp_path_for(self.final)
        try:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                if self.spools["frame_index"].dtype is None:  # the input had no frame at all
                    self.spools["frame_index"].append("frame_index", np.zeros(0, np.int64))
                for key, spool in self.spools.items():
                    with zf.open(f"{key}.npy", "w", force_zip64=True) as out:
                        spool.write_npy(out)
                present = set(self.spools)
                extra = {k: v for k, v in self.empty_rows.items() if k not in present}
                extra.update({f"frame_{k}": np.asarray(v) for k, v in self.frame_info.items()})
                if self.late_fields is not None:
                    self.fields.update(self.late_fields())
                extra.update({k: np.asarray(v) for k, v in self.fields.items()})
                extra["files"] = np.asarray(self.fields.get("files", self.names))
                extra["num_frames"] = np.int64(self.num_frames)
                if self.frame_times and len(self.frame_times) == self.num_frames:
                    # seconds from the first frame, as the annotated video is timed (variable rates kept)
                    extra["frame_time"] = np.asarray(self.frame_times, np.float64) - self.frame_times[0]
                extra["incomplete"] = np.bool_(self.incomplete)
                sizes = np.asarray(self.sizes, np.int64).reshape(-1, 2)
                # (H, W) of the input's frames; per frame only when they differ (image folders)
                constant = len(sizes) > 0 and (sizes == sizes[0]).all()
                extra["image_size"] = sizes[0] if constant else sizes
                for key, value in extra.items():
                    buf = io.BytesIO()
                    np.save(buf, value, allow_pickle=False)
                    zf.writestr(f"{key}.npy", buf.getvalue())
        finally:
            self._close_spools()

    def abort(self):
        self._close_spools()
        super().abort()

    def _close_spools(self) -> None:
        for spool in self.spools.values():
            try:
                spool.file.close()
            except OSError:  # flushing onto a full disk: the spool is thrown away anyway
                pass


class FilesSink(Sink):
    """A folder output: files per frame go into a temporary folder that replaces ``out_dir`` on commit."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.staging: Path | None = None  # made with the first file
        self.names: list[str] = []

    def staged_path(self, name: str) -> Path:
        """Where the file that will be ``out_dir/name`` is written now."""
        if self.staging is None:
            self.staging = temp_dir_for(self.out_dir)
        self.names.append(name)
        return self.staging / name

    def commit(self):
        if self.staging is None:  # nothing written
            return []
        _replace_folder(self.staging, self.out_dir)
        self.staging = None
        return [self.out_dir / name for name in self.names]

    def abort(self):
        _discard(self.staging)
        self.staging = None


ANNOTATED_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def annotated_name(file_name: str) -> str:
    """The annotated image's name for an input file: the same name, or ``<name>.png`` for a non-image
    input (a depth ``.npy``), so ``a.npy`` and ``a.png`` of one folder do not collide."""
    return file_name if Path(file_name).suffix.lower() in ANNOTATED_EXTENSIONS else f"{file_name}.png"


def _encode(name: str, annotated: np.ndarray) -> bytes:
    ok, data = cv2.imencode(Path(name).suffix.lower(), cv2.cvtColor(annotated, cv2.COLOR_RGB2BGR))
    if not ok:
        raise MeshcliError(name, "could not encode the annotated image", "use a .png or .jpg input name")
    return data.tobytes()


class ImageSink(FilesSink):
    """Annotated images of an image set: DIR/<folder>/<file>, named by ``names`` (one per input file)."""

    def __init__(self, out_dir: Path, names: list[str]):
        super().__init__(out_dir)
        self.planned = names  # by the frame's position in the input's files

    def write(self, frame, annotated, result):
        if annotated is None:
            return
        name = self.planned[frame.source_position]
        self.staged_path(name).write_bytes(_encode(name, annotated))


class SingleImageSink(FileSink):
    """The annotated image of a one-image input: DIR/<name>.<ext>."""

    def write(self, frame, annotated, result):
        if annotated is None:
            return
        self.tmp = temp_path_for(self.final)
        self.tmp.write_bytes(_encode(self.final.name, annotated))


ENCODER_LOOKAHEAD = 2  # frames x264 looks ahead (and holds back) before it encodes one


class VideoSink(FileSink):
    """H.264 yuv420p MP4 at the source's frame rate, one output frame per input frame.

    Frames keep the source's timestamps (relative to its first frame) in the
    source's time base, so variable-rate videos keep their timing. The source's
    audio stream, if any, is copied packet by packet once the video is written.
    """

    def __init__(self, final: Path, fps: float, source: Path | None = None,
                 time_base: Fraction | None = None, crf: int = 18):
        super().__init__(final)
        self.fps = Fraction(fps).limit_denominator(1001 * 1000)
        self.time_base = time_base or 1 / self.fps
        self.source = source
        self.crf = crf
        self.container = None
        self.stream = None
        self.count = 0
        self.first_time: float | None = None
        self.last_pts = -1

    def _open(self, width: int, height: int) -> None:
        import av

        self.tmp = temp_path_for(self.final)
        self.container = av.open(str(self.tmp), mode="w", format="mp4")
        self.stream = self.container.add_stream("libx264", rate=self.fps)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"
        # x264 holds back its look-ahead of frames, which all get encoded when the video ends: at veryfast's 10
        # that flush took 0.15-0.3 s at 1080p, after the last frame, on every video. 2 cuts it to about 0.05 s;
        # at CRF 18 the demo clip came out 7 % smaller and 0.3 dB lower in PSNR.
        self.stream.options = {"crf": str(self.crf), "preset": "veryfast", "rc-lookahead": str(ENCODER_LOOKAHEAD)}
        self.stream.codec_context.time_base = self.time_base

    def write(self, frame, annotated, result):
        import av

        if annotated is None:
            return
        h, w = annotated.shape[:2]
        if self.container is None:
            self._open(w + w % 2, h + h % 2)
        if w % 2 or h % 2:  # yuv420p needs even sides: pad by one edge pixel
            annotated = np.pad(annotated, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        out = av.VideoFrame.from_ndarray(np.ascontiguousarray(annotated), format="rgb24")
        out.pts = self._pts(frame.time)
        out.time_base = self.time_base
        for packet in self.stream.encode(out):
            self.container.mux(packet)
        self.count += 1

    def _pts(self, time: float | None) -> int:
        """The source timestamp in the output time base, from 0, strictly increasing."""
        if time is None:
            pts = round(self.count / self.fps / self.time_base)
        else:
            if self.first_time is None:
                self.first_time = time
            pts = round((time - self.first_time) / self.time_base)
        self.last_pts = max(pts, self.last_pts + 1)
        return self.last_pts

    def finish(self):
        if self.container is None:  # no frame was annotated
            return
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        self.container = None
        if self.source is not None:
            self._copy_audio()

    def _copy_audio(self) -> None:
        """Remux: the new video stream plus the source's first audio stream, both copied."""
        import av

        with av.open(str(self.source)) as src:
            if not src.streams.audio:
                return
            muxed = temp_path_for(self.final)
            try:
                with av.open(str(self.tmp)) as video, av.open(str(muxed), "w", format="mp4") as out:
                    vin, ain = video.streams.video[0], src.streams.audio[0]
                    vout = out.add_stream_from_template(vin)
                    aout = out.add_stream_from_template(ain)
                    for packet in video.demux(vin):
                        if packet.dts is not None:
                            packet.stream = vout
                            out.mux(packet)
                    # the video was rebased to start at 0: move the audio by the same amount
                    shift = round((self.first_time or 0.0) / ain.time_base)
                    for packet in src.demux(ain):
                        if packet.dts is None or packet.pts is None or packet.pts < shift:
                            continue
                        packet.pts, packet.dts = packet.pts - shift, packet.dts - shift
                        packet.stream = aout
                        out.mux(packet)
                os.replace(muxed, self.tmp)
            except BaseException:
                _discard(muxed)
                raise

    def abort(self):
        if self.container is not None:
            try:
                self.container.close()
            except Exception:  # the file is being thrown away anyway
                pass
            self.container = None
        super().abort()


class JsonSink(FileSink):
    """A JSON list built from each frame's result by ``to_records(frame, result)``."""

    def __init__(self, final: Path, to_records):
        super().__init__(final)
        self.to_records = to_records
        self.records: list[dict] = []

    def write(self, frame, annotated, result):
        self.records.extend(self.to_records(frame, result))

    def finish(self):
        self.tmp = temp_path_for(self.final)
        self.tmp.write_bytes(json.dumps(self.records).encode())

    def abort(self):
        self.records = []
        super().abort()


class MeshSink(FilesSink):
    """``--save-mesh``: DIR/<input>_meshes/<frame>_<person>.obj, the mesh in camera space (at its ``cam_t``
    unless the method's meshes are there already).

    <frame> is a video frame's index, or the image's stem made unique within the input (``a.png`` and
    ``a.jpg`` of one folder: ``a``, ``a-2``), planned from the input's files before its first frame.
    """

    def __init__(self, out_dir: Path, faces: np.ndarray, in_camera_space: bool, stems: list[str] | None):
        super().__init__(out_dir)
        self.faces = faces
        self.in_camera_space = in_camera_space
        self.stems = stems  # by the frame's position in the input's files; None for a video

    def write(self, frame, annotated, result):
        stem = f"{frame.index:06d}" if self.stems is None else self.stems[frame.source_position]
        for k in range(result.num_people):
            offset = 0.0 if self.in_camera_space else result.rows["cam_t"][k]
            write_obj(self.staged_path(f"{stem}_{k:02d}.obj"), result.vertices[k] + offset, self.faces)


def mesh_sink(faces: np.ndarray, in_camera_space: bool):
    """The pipeline's sink factory for ``MeshSink``."""
    return lambda inp, out_dir, fields: MeshSink(out_dir / mesh_folder_name(inp.name), faces, in_camera_space,
                                                 None if inp.is_video else unique_names([f.stem for f in inp.files]))


def write_obj(path: str | Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Write one mesh as a Wavefront OBJ (1-based faces), atomically."""
    vertices, faces = np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64)
    text = io.StringIO()
    np.savetxt(text, vertices, fmt="v %.6f %.6f %.6f")
    np.savetxt(text, faces + 1, fmt="f %d %d %d")
    data = text.getvalue().encode("ascii")
    write_atomic(Path(path), data)


COCO_ID = re.compile(r"^0*(\d+)$")


def coco_sink(inp, out_dir: Path, fields) -> JsonSink:
    """DIR/<input>.coco.json in COCO results format; image_id from COCO file names, else the frame index."""
    def records(frame, result):
        stem = Path(frame.name).stem if not inp.is_video else ""
        match = COCO_ID.match(stem)
        return coco_results(result, int(match.group(1)) if match else frame.index)
    return JsonSink(out_dir / f"{inp.name}.coco.json", records)


def coco_results(result: FrameResult, image_id: int, category_id: int = 1) -> list[dict[str, Any]]:
    """COCO keypoint-results entries for one frame, as the official result writer makes them.

    Each joint is (x, y, score) with the per-joint score in the third slot;
    ``bbox`` is the keypoints' box as (x, y, w, h).
    """
    out = []
    for k in range(result.num_people):
        kp = result.rows["keypoints"][k].astype(np.float64)
        x0, y0 = kp[:, :2].min(0)
        x1, y1 = kp[:, :2].max(0)
        out.append({"image_id": image_id, "category_id": category_id,
                    "keypoints": [float(v) for v in kp.reshape(-1)],
                    "score": float(result.rows["scores"][k]),
                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]})
    return out
