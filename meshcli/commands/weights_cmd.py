"""`meshcli weights list|fetch|import`: the weights store."""
from __future__ import annotations

import json
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
def list_(as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False) -> None:
    """Known checkpoints, whether each is present, and where."""
    rows = [{"name": e.name, "method": e.method, "variant": e.variant, "present": present, "file": str(e.path),
             "url": e.url, "where": e.where, "licence": e.licence} for e, present in store.status()]
    if as_json:
        typer.echo(json.dumps({"store": str(records.store_dir()), "checkpoints": rows}, indent=1))
        return
    table = Table(title=f"weights store: {records.store_dir()}")
    # 80 columns hold it: long cells wrap, never cut (names and URLs are copied from here); names stay whole.
    # Method and variant are in `--json`.
    table.add_column("name", no_wrap=True)
    table.add_column("present")
    table.add_column("file / source", overflow="fold", ratio=3)
    table.add_column("licence", overflow="fold", ratio=2)
    for row in rows:
        table.add_row(row["name"], "yes" if row["present"] else "no",
                      row["file"] if row["present"] else row["url"], row["licence"])
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
