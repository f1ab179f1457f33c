"""`meshcli eval ...`: official metrics against ground truth."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .common import guarded

eval_app = typer.Typer(no_args_is_help=True, help="Evaluate outputs against ground truth.")


@eval_app.command("coco")
@guarded
def coco(results: Annotated[Path, typer.Argument(help="A .coco.json written by `meshcli pose`.")],
         annotations: Annotated[Path, typer.Argument(help="COCO person_keypoints_*.json.")]) -> None:
    """pycocotools' keypoint AP table."""
    from ..evaluation.coco import evaluate_keypoints

    stats = evaluate_keypoints(results, annotations)
    table = Table(title=f"COCO keypoints: {results.name}")
    for name in stats:
        table.add_column(name, justify="right")
    table.add_row(*(f"{v:.3f}" for v in stats.values()))
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")
