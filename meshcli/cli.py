"""The `meshcli` command: a thin shell over the Python API (one verb per task)."""
from __future__ import annotations

import importlib
import pkgutil
import signal

import typer

from . import __version__, commands

app = typer.Typer(name="meshcli", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Run published human pose and mesh methods over images, folders, videos and depth images.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"meshcli {__version__}")
        raise typer.Exit()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a run as Ctrl-C does: temporary outputs removed, exit non-zero


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """meshcli: one command from an image, folder or video to annotated outputs and NPZ dumps."""
    signal.signal(signal.SIGTERM, _interrupt)


for _info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
    _module = importlib.import_module(f"{commands.__name__}.{_info.name}")
    if hasattr(_module, "register"):
        _module.register(app)
