"""`meshcli hand`: 3D hand joints from depth images (SRN); `meshcli eval hand`: mean joint error."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..options import TemporalOptions
from .common import (
    Annotate,
    BatchSize,
    Device,
    Half,
    KeepPartial,
    Out,
    Quiet,
    RandomWeights,
    variant_option,
    Weights,
    batch_command,
    guarded,
    hand_to_engine,
    with_temporal_options,
)
from .evaluate import eval_app

DepthInputs = Annotated[list[str], typer.Argument(
    help="Depth images (.png/.tif/.npy), folders or globs (quoted) of them.", show_default=False)]


def register(app: typer.Typer) -> None:
    @app.command(no_args_is_help=True)
    @guarded
    @batch_command
    @with_temporal_options
    def hand(
        inputs: DepthInputs,
        method: Annotated[str, typer.Option("--method", "-m", help="srn")] = "srn",
        variant: variant_option('hand') = None,
        weights: Weights = None,
        depth_format: Annotated[str, typer.Option(
            "--depth-format", help="16bit: single-channel 16-bit PNG/TIFF; nyu: NYU colour PNG, depth = B + 256*G. "
            ".npy files are read as arrays either way.")] = "16bit",
        depth_scale: Annotated[float, typer.Option(
            "--depth-scale", help="Multiply stored values by this to get mm (e.g. 1000 for metres).")] = 1.0,
        intrinsics: Annotated[str | None, typer.Option(
            "--intrinsics", help="nyu, kinect2, sr300, fx,fy,cx,cy (pixels) or a JSON file "
            "{fx, fy, cx, cy}. Default: the model's training camera (sr300 for hands17).",
            show_default=False)] = None,
        centre: Annotated[str | None, typer.Option(
            "--centre", help="Hand centre: auto (the official realtime heuristic: the nearest blob) or x,y,z in "
            "camera mm (y down) for every frame.", show_default="auto")] = None,
        centres: Annotated[Path | None, typer.Option(
            "--centres", help="Per-frame hand centres: a text file, one x y z row (mm) per frame of each input.",
            show_default=False)] = None,
        centres_format: Annotated[str, typer.Option(
            "--centres-format", help="xyz: camera space, y down; nyu: NYU's y-up convention "
            "(center_test_refined.txt).")] = "xyz",
        cube: Annotated[float | None, typer.Option(
            "--cube", help="Side of the cube cropped around the hand, mm.", show_default="250")] = None,
        mirror: Annotated[bool, typer.Option(
            "--mirror/--no-mirror", help="Mirror each frame left-right before the network. On by default because "
            "the authors' realtime demo, the official way to run the released model on a live sensor, mirrors "
            "every frame; --no-mirror is the official NYU evaluation path. Outputs are always in the input "
            "image's own frame.")] = True,
        order: Annotated[str, typer.Option("--order", help="Joint order of the outputs: hands17 or msra.")] = "hands17",
        out: Out = Path("meshcli_out"),
        batch_size: BatchSize = 16,
        device: Device = "auto",
        half: Half = False,
        random_weights: RandomWeights = False,
        annotate: Annotate = True,
        keep_partial: KeepPartial = False,
        quiet: Quiet = False,
        temporal: TemporalOptions | None = None,  # the track/smooth options, from with_temporal_options
    ) -> None:
        """3D hand joints per depth frame: NPZ (joints_xyz, joints_uvd, centre_xyz) and an annotated image/folder."""
        from ..api import load, output_sinks
        from ..methods import spec

        spec(method, "hand")
        predictor = load(method, variant, weights, device=device, half=half, random_weights=random_weights,
                         intrinsics=intrinsics, depth_format=depth_format, depth_scale=depth_scale, centre=centre,
                         centres=centres, centres_format=centres_format, cube=cube, mirror=mirror, order=order)
        hand_to_engine(predictor, out, batch_size, annotate, output_sinks(predictor), keep_partial, temporal)

    eval_app.command("hand")(eval_hand)


@guarded
def eval_hand(
    predictions: Annotated[Path, typer.Argument(help="A .npz written by `meshcli hand`, or an official results "
                                                "file (.txt, 14 x u v d per line).")],
    ground_truth: Annotated[Path, typer.Argument(help="NYU labels (nyu_keypointsUVD_test.mat or joint_data.mat), "
                                                 "or an NPZ with joints_uvd/joints_xyz.")],
    intrinsics: Annotated[str, typer.Option("--intrinsics", help="Back-projects u, v, d: nyu, kinect2, sr300, "
                                            "fx,fy,cx,cy or a JSON file.")] = "nyu",
) -> None:
    """Mean 3D joint error (mm), overall and per joint; NYU uses its 14 evaluation joints."""
    from ..evaluation.hand import evaluate
    from ..methods.srn import parse_intrinsics

    result = evaluate(predictions, ground_truth, parse_intrinsics(intrinsics))
    table = Table(title=f"hand joint error: {predictions.name} vs {ground_truth.name}")
    table.add_column("joint")
    table.add_column("mean error (mm)", justify="right")
    for name, err in result.per_joint_mm.items():
        table.add_row(name, f"{err:.4f}")
    table.add_row("mean", f"{result.mean_mm:.4f}", style="bold")
    console = Console()
    console.print(table)
    console.print(f"{result.frames} frame(s) evaluated" + (f", {result.skipped} without a hand or label skipped"
                                                             if result.skipped else ""))
    if result.mapped:
        console.print("note: HANDS2017 joints were mapped onto NYU's 14 (approximate: the datasets place the wrist, "
                      "palm and thumb joints differently)")
