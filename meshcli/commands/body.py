"""`meshcli body`: SMPL body meshes per person (HMR, SPIN, I2L-MeshNet)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import weights as store
from ..bodycrop import BoxesJson, DekrPeople, OpenPoseJson, PersonSource, WholeFrame
from ..device import resolve_device
from ..errors import MeshcliError
from ..io.sinks import FilesSink
from ..methods import method_module, methods_for
from ..smpl import write_obj
from .common import (
    Annotate,
    BatchSize,
    Device,
    Inputs,
    Out,
    Quiet,
    RandomWeights,
    Variant,
    Weights,
    batch_command,
    choose_method,
    err_console,
    guarded,
    hand_to_engine,
)
from .pose import rescore_options

DETECTORS = ("dekr", "full")
RENDERERS = ("auto", "egl", "osmesa", "wireframe")
DEKR_VARIANT = "w32-coco"

# Method-specific constructor options, from the command's parameters (a dict of them all).
# A method with its own options adds its parameters to `body` and an entry here.
METHOD_OPTIONS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "hmr": lambda cli: {},
    "spin": lambda cli: {},
    "i2l": lambda cli: {k: cli[k] for k in I2L_OPTIONS if cli[k] is not None},
}
I2L_OPTIONS = ("stage", "bbox", "focal", "principal_point", "root_depth")  # None when not given


def person_source(detector: str | None, openpose: Path | None, boxes: Path | None, device) -> PersonSource:
    """Who to reconstruct in each frame, from --detector / --openpose / --boxes (checked before any frame)."""
    given = [name for name, v in (("--openpose", openpose), ("--boxes", boxes)) if v is not None]
    if len(given) > 1 or (given and detector is not None):
        raise MeshcliError(None, f"{' and '.join(given + (['--detector'] if detector else []))} both choose "
                                 "the people to crop", "give only one of --detector, --openpose, --boxes")
    if openpose is not None:
        return OpenPoseJson(openpose)
    if boxes is not None:
        return BoxesJson(boxes)
    if detector is None:
        detector = "dekr" if store.entry_for("dekr", DEKR_VARIANT).present() else "full"
    if detector == "full":
        return WholeFrame()
    if detector != "dekr":
        raise MeshcliError(None, f"unknown --detector {detector}", f"use one of {', '.join(DETECTORS)}")
    dekr = method_module("dekr")
    weights = store.resolve("dekr", DEKR_VARIANT, None, False)
    predictor = dekr.Predictor(weights, variant=DEKR_VARIANT, device=device,
                               **rescore_options(DEKR_VARIANT, True, None, False, required=False))
    return DekrPeople(predictor)


class MeshSink(FilesSink):
    """``--save-mesh``: DIR/<input>_meshes/<frame>_<person>.obj, the mesh at its ``cam_t``."""

    def __init__(self, out_dir: Path, faces):
        super().__init__(out_dir)
        self.faces = faces

    def write(self, frame, annotated, result):
        stem = f"{frame.index:06d}" if "#" in frame.name else Path(frame.name).stem
        for k in range(result.num_people):
            path = self.out_dir / f"{stem}_{k:02d}.obj"
            # I2L's meshes are already in camera space (no cam_t row)
            offset = result.rows["cam_t"][k] if "cam_t" in result.rows else 0.0
            write_obj(path, result.vertices[k] + offset, self.faces)
            self.written.append(path)


def register(app: typer.Typer) -> None:
    @app.command(no_args_is_help=True)
    @guarded
    @batch_command
    def body(
        inputs: Inputs,
        method: Annotated[str, typer.Option("--method", "-m", help=", ".join(methods_for("body")))] = "hmr",
        variant: Variant = None,
        weights: Weights = None,
        smpl: Annotated[Path | None, typer.Option(
            "--smpl", help="SMPL model (.pkl or .npz); default: the one imported with "
            "`meshcli weights import smpl FILE`.", show_default=False)] = None,
        detector: Annotated[str | None, typer.Option(
            "--detector", help="Who to reconstruct: dekr (people found by DEKR; the default when its weights "
            "are in the store) or full (the whole frame is one person).", show_default=False)] = None,
        openpose: Annotated[Path | None, typer.Option(
            "--openpose", help="OpenPose keypoint JSON: one file, or a folder of per-frame files "
            "(<image>_keypoints.json, <video>_<12-digit frame>_keypoints.json); the method's own crop rule and "
            "person choice.", show_default=False)] = None,
        boxes: Annotated[Path | None, typer.Option(
            "--boxes", help='Person boxes per frame, a JSON file: {"frames": {KEY: BOXES}, "format": "xywh" '
            '(default) or "xyxy"}; KEY an image file name, "video.mp4#INDEX" or a frame index; BOXES a list of '
            "x, y, w, h lists in pixels (a fifth number is a score). Frames not listed have nobody.",
            show_default=False)] = None,
        save_vertices: Annotated[bool, typer.Option(
            "--save-vertices", help="Add each person's 6890 vertices to the NPZ.")] = False,
        save_mesh: Annotated[bool, typer.Option(
            "--save-mesh", help="Write an OBJ per person per frame to OUT/<input>_meshes/.")] = False,
        stage: Annotated[str | None, typer.Option(
            "--stage", help="i2l: the mesh the overlay shows, lixel (per-vertex heatmaps; default) or param "
            "(SMPL from the regressed parameters). The NPZ holds both when the snapshot has a trained "
            "parameter stage.", show_default=False)] = None,
        bbox: Annotated[str | None, typer.Option(
            "--bbox", help="i2l: one person box x,y,w,h in image pixels (the official demo's bbox), used for "
            "every frame instead of --detector/--boxes.", show_default=False)] = None,
        focal: Annotated[str | None, typer.Option(
            "--focal", help="i2l: your camera's focal length in pixels, f or fx,fy (default 1500, the demo's). "
            "Sets the camera-space meshes; f ~ image width / (2 tan(horizontal FOV / 2)).",
            show_default=False)] = None,
        principal_point: Annotated[str | None, typer.Option(
            "--principal-point", help="i2l: your camera's principal point cx,cy in pixels (default: the image "
            "centre).", show_default=False)] = None,
        root_depth: Annotated[float | None, typer.Option(
            "--root-depth", help="i2l: distance from the camera to the person's pelvis in metres (default "
            "11.25, the demo's RootNet value); I2L-MeshNet predicts depth only relative to it, so set it for "
            "metric camera-space meshes.", show_default=False)] = None,
        renderer: Annotated[str, typer.Option(
            "--renderer", help="Mesh overlay: auto (pyrender with EGL, then OSMesa, then the OpenCV-drawn "
            "wireframe), egl, osmesa or wireframe (fast on machines without a GPU).")] = "auto",
        out: Out = Path("meshcli_out"),
        batch_size: BatchSize = 8,
        device: Device = "auto",
        random_weights: RandomWeights = False,
        annotate: Annotate = True,
        quiet: Quiet = False,
    ) -> None:
        """SMPL body per person: NPZ (pose, shape, cameras, joints), mesh-overlay image/video, optional OBJs."""
        cli = dict(locals())
        module, variant, path = choose_method("body", method, variant, weights, random_weights)
        dev = resolve_device(device)
        if method != "i2l" and any(cli[k] is not None for k in I2L_OPTIONS):
            given = ", ".join(f"--{k.replace('_', '-')}" for k in I2L_OPTIONS if cli[k] is not None)
            raise MeshcliError(None, f"{given} only apply to --method i2l", "drop them or use --method i2l")
        if bbox is not None and any(v is not None for v in (detector, openpose, boxes)):
            raise MeshcliError(None, "--bbox and --detector/--openpose/--boxes both choose the people to crop",
                               "give only one of them")
        people = None if bbox is not None else person_source(detector, openpose, boxes, dev)
        if renderer not in RENDERERS:
            raise MeshcliError(None, f"unknown --renderer {renderer}", f"use one of {', '.join(RENDERERS)}")
        predictor = module.Predictor(path, variant=variant, device=dev, smpl=smpl, people=people,
                                     save_vertices=save_vertices, renderer=renderer, **METHOD_OPTIONS[method](cli))
        if annotate and not quiet:
            renderer = predictor.renderer
            err_console.print(f"mesh overlay: {renderer.backend}"
                              + (f" ({renderer.fallback_reason})" if renderer.fallback_reason else ""))
        sinks = [lambda inp, out_dir, fields: MeshSink(out_dir / f"{inp.name}_meshes", predictor.smpl.faces)]
        hand_to_engine(predictor, out, batch_size, annotate, sinks if save_mesh else [])
