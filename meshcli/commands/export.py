"""`meshcli export`: a results NPZ to glTF, BVH, CSV or OBJ (see meshcli.export)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import Out, Quiet, err_console, guarded


def register(app: typer.Typer) -> None:
    @app.command("export", no_args_is_help=True)
    @guarded
    def export_command(
        results: Annotated[Path, typer.Argument(help="A .npz written by meshcli pose, body or hand.",
                                                show_default=False)],
        fmt: Annotated[str, typer.Option(
            "--format", "-f", help="glb / gltf (skinned, animated SMPL body), bvh (skeleton motion), obj (a mesh "
            "per frame), csv (joints of any command).")] = "glb",
        track: Annotated[str, typer.Option(
            "--track", help="A track id, or all (one file per track; csv: one table).")] = "all",
        smpl: Annotated[Path | None, typer.Option(
            "--smpl", help="SMPL model file; default: the store's. Must be the file the NPZ was made with, "
            "unless given here on purpose.", show_default=False)] = None,
        out: Out = Path("meshcli_out"),
        quiet: Quiet = False,
    ) -> None:
        """Export body motion (glTF, BVH, OBJ) or joints (CSV) from a results NPZ, one file per track."""
        from ..export import export  # imports torch-backed SMPL reading: not at `meshcli --help` time

        done = export(results, fmt, track, smpl, out)
        if not quiet:
            for note in done.notes:
                err_console.print(f"note: {note}")
            for path in done.written if fmt != "obj" else sorted({p.parent for p in done.written}):
                err_console.print(f"wrote {path}")
