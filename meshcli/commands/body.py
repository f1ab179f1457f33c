"""`meshcli body`: SMPL body meshes per person (HMR, SPIN, I2L-MeshNet)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..methods import methods_for
from ..options import TemporalOptions
from .common import (
    Annotate,
    BatchSize,
    Device,
    Half,
    Inputs,
    KeepPartial,
    Out,
    Quiet,
    RandomWeights,
    variant_option,
    Weights,
    batch_command,
    err_console,
    guarded,
    hand_to_engine,
    with_temporal_options,
)

I2L_OPTIONS = ("bbox", "stage", "focal", "principal_point", "root_depth")  # None when not given


def say_person_source(name: str, detector: str | None, inputs: list[str]) -> None:
    """Which people get reconstructed; loudly when a video falls back to one whole-frame person."""
    from ..io.sources import VIDEO_EXTENSIONS

    if name == "full" and detector is None and any(Path(i).suffix.lower() in VIDEO_EXTENSIONS for i in inputs):
        err_console.print("[bold yellow]people: full — the whole frame is ONE person (DEKR's weights are not in "
                          "the store); use --detector hog to find several people without a download, or import "
                          "DEKR's weights[/bold yellow]", markup=True)
    else:
        err_console.print(f"people: {name}")


def register(app: typer.Typer) -> None:
    @app.command(no_args_is_help=True)
    @guarded
    @batch_command
    @with_temporal_options
    def body(
        inputs: Inputs,
        method: Annotated[str, typer.Option("--method", "-m", help=", ".join(methods_for("body")))] = "hmr",
        variant: variant_option('body') = None,
        weights: Weights = None,
        smpl: Annotated[Path | None, typer.Option(
            "--smpl", help="SMPL model (.pkl or .npz); default: the one imported with "
            "`meshcli weights import smpl FILE`.", show_default=False)] = None,
        detector: Annotated[str | None, typer.Option(
            "--detector", help="Who to reconstruct: dekr (people found by DEKR; the default when its weights "
            "are in the store), hog (OpenCV's built-in HOG people detector: no download, weaker) or full (the "
            "whole frame is one person).", show_default=False)] = None,
        detect_size: Annotated[int | None, typer.Option(
            "--detect-size", help="Run the DEKR detector at this input short side in pixels (a multiple of 64 "
            "from 128 to 512, its full size): faster, coarser boxes, in the original image's pixels.",
            show_default=False)] = None,
        openpose: Annotated[Path | None, typer.Option(
            "--openpose", help="OpenPose keypoint JSON: one file, or a folder of per-frame files "
            "(<image>_keypoints.json, <video>_<12-digit frame>_keypoints.json); the method's own crop rule and "
            "person choice.", show_default=False)] = None,
        boxes: Annotated[Path | None, typer.Option(
            "--boxes", help='Person boxes per frame, a JSON file: {"frames": {KEY: BOXES}, "format": "xywh" '
            '(default) or "xyxy"}; KEY an image file name, "video.mp4#INDEX" or a frame index; BOXES a list of '
            "x, y, w, h lists in pixels (a fifth number is a score). Frames not listed have nobody.",
            show_default=False)] = None,
        detect_every: Annotated[int, typer.Option(
            "--detect-every", min=1, help="Run the person source on every N-th frame only; in between, each "
            "person is cropped where the method's own joints put them in the frame before (videos: one "
            "detection per N frames).")] = 1,
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
        half: Half = False,
        random_weights: RandomWeights = False,
        annotate: Annotate = True,
        keep_partial: KeepPartial = False,
        quiet: Quiet = False,
        temporal: TemporalOptions | None = None,  # the track/smooth options, from with_temporal_options
    ) -> None:
        """SMPL body per person: NPZ (pose, shape, cameras, joints), mesh-overlay image/video, optional OBJs."""
        from ..api import load, output_sinks
        from ..methods import spec

        spec(method, "body")
        given = dict(locals())
        i2l_options = {k: given[k] for k in I2L_OPTIONS if given[k] is not None}
        predictor = load(method, variant, weights, device=device, half=half, random_weights=random_weights,
                         smpl=smpl, detector=detector, detect_size=detect_size, openpose=openpose, boxes=boxes,
                         save_vertices=save_vertices, renderer=renderer, detect_every=detect_every, **i2l_options)
        if not quiet:
            say_person_source(predictor.source.name, detector, inputs)
        hand_to_engine(predictor, out, batch_size, annotate, output_sinks(predictor, save_mesh), keep_partial,
                       temporal)
