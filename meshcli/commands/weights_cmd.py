"""`meshcli weights list|fetch|import`: the weights store."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .. import records
from .. import weights as store
from .common import guarded

weights_app = typer.Typer(no_args_is_help=True, help="List, fetch and import checkpoints (the weights store).")


@weights_app.command("list")
def list_() -> None:
    """Known checkpoints, whether each is present, and where."""
    table = Table(title=f"weights store: {records.store_dir()}")
    for col in ("name", "method", "variant", "present", "file / source", "licence"):
        table.add_column(col)
    for e, present in store.status():
        table.add_row(e.name, e.method, e.variant, "yes" if present else "no",
                      str(e.path) if present else e.url, e.licence)
    Console().print(table)


@weights_app.command("fetch")
@guarded
def fetch(name: Annotated[str, typer.Argument(help="A name from `meshcli weights list`.")]) -> None:
    """Download a checkpoint from its official source and store it."""
    path = store.fetch(name)
    typer.echo(f"stored {path}")


@weights_app.command("import")
@guarded
def import_(name: Annotated[str, typer.Argument(help="A name from `meshcli weights list`.")],
            file: Annotated[Path, typer.Argument(help="The downloaded checkpoint file.")]) -> None:
    """Check a downloaded file against the architecture and store it (works offline)."""
    path = store.import_file(name, file)
    typer.echo(f"stored {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(weights_app, name="weights")
