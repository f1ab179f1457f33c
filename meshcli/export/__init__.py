"""``meshcli export``: results NPZs to the formats other tools read, with no torch device and no network.

Body tracks become skinned, animated glTF 2.0 (``gltf``), BVH (``bvh``) or OBJ
sequences (``obj``); joints of any command become CSV (``table``). ``results``
reads the NPZ and splits it into tracks, ``motion`` turns a body track into a
shape and per-frame rotations with the SMPL file the NPZ was made with, and
``body_model`` is SMPL's forward in numpy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import MeshcliError
from ..io.sinks import write_atomic
from ..io.sinks import write_obj
from . import bvh, gltf, obj, table
from .motion import body_motion, load_body_model, require_parameters
from .results import STILL_IMAGE_FPS, Results

FORMATS = ("glb", "gltf", "bvh", "csv", "obj")


@dataclass
class Exported:
    written: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # assumptions and measured errors, for the user


def export(npz: str | Path, fmt: str = "glb", track: str = "all", smpl: str | Path | None = None,
           out_dir: str | Path = "meshcli_out") -> Exported:
    """Write ``npz``'s people as ``fmt`` into ``out_dir``: ``<npz stem>_track<K>.<ext>`` per track
    (``.obj``: a folder of one OBJ per frame), or one ``<npz stem>.csv`` for ``--track all``.

    Everything is checked before the first file is written; a failure removes the files of this run.
    """
    if fmt not in FORMATS:
        raise MeshcliError(None, f"unknown --format {fmt}", f"use one of {', '.join(FORMATS)}")
    results = Results.load(npz)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise MeshcliError(out_dir, "--out is a file, not a folder", "give a folder for the exported files")
    stem = results.path.stem
    done = Exported()
    try:
        if fmt == "csv":
            if track == "all":  # one table: each row says its track when the NPZ has them
                rows = np.argsort(results["frame_index"], kind="stable")
                target = out_dir / f"{stem}.csv"
            else:
                rows = results.tracks(track)[0].rows
                target = out_dir / f"{stem}_track{track}.csv"
            _write(done, target, table.encode(results, rows))
        else:
            tracks = results.tracks(track)
            model = load_body_model(results, None if smpl is None else Path(smpl))
            if fmt != "obj" or not any(k in results for k in obj.STORED_MESHES):
                require_parameters(results)
            for person in tracks:
                name = f"{stem}_track{person.id}"
                if fmt == "obj":
                    for frame, vertices in obj.meshes(results, person, model):
                        path = out_dir / name / f"{frame:06d}.obj"
                        write_obj(path, vertices, model.faces)
                        done.written.append(path)
                    continue
                motion = body_motion(results, model, person)
                if fmt == "bvh":
                    fps = float(results["fps"]) if "fps" in results and results["fps"] > 0 else STILL_IMAGE_FPS
                    _write(done, out_dir / f"{name}.bvh", bvh.encode(motion, fps))
                    continue
                skin = gltf.Skin.of(model.skin_weights)
                error = gltf.truncation_error(model, motion, skin)
                if skin.truncated_vertices:
                    results.notes.append(
                        f"track {person.id}: {skin.truncated_vertices} vertices have more than "
                        f"{gltf.MAX_INFLUENCES} skinning influences; the smallest were dropped and the rest "
                        f"renormalised, moving vertices by up to {error * 1000:.3f} mm over the track's frames")
                asset, blob = gltf.build(model, motion, name, error)
                for path, data in gltf.encode(asset, blob, out_dir / f"{name}.{fmt}").items():
                    _write(done, path, data)
    except BaseException:
        for path in done.written:
            path.unlink(missing_ok=True)
        raise
    done.notes = list(dict.fromkeys(results.notes))
    return done


def _write(done: Exported, path: Path, data: bytes) -> None:
    write_atomic(path, data)
    done.written.append(path)
