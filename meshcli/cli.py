"""The `meshcli` command: a thin shell over the Python API (one verb per task)."""
from __future__ import annotations

import ctypes
import importlib
import platform
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


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def _keep_freed_memory() -> None:
    """Serve all memory from one glibc heap that keeps what is freed, for the next block to reuse.

    By default glibc maps every block over 32 MB afresh and unmaps it once freed (and hands freed heap memory
    back to the kernel), so a network's large activations are new memory on every batch, which the kernel
    faults in and zeroes page by page. Kept, they are reused: the model stage measured 0.72x for I2L-MeshNet,
    0.89x for SPIN and 0.95x for DEKR, HMR and SRN, with peak RSS between 0.88x and 1.09x. A setting of the
    process, so the command makes it and the library does not; other C libraries are left as they are.
    """
    if platform.libc_ver()[0] == "glibc":
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_MAX, 0)  # no block by mmap
        libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)  # nothing handed back
        libc.mallopt(_M_ARENA_MAX, 1)  # the model thread reuses what the others freed, and vice versa


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a run as Ctrl-C does: temporary outputs removed, exit non-zero


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """meshcli: one command from an image, folder or video to annotated outputs and NPZ dumps."""
    signal.signal(signal.SIGTERM, _interrupt)
    _keep_freed_memory()


for _info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
    _module = importlib.import_module(f"{commands.__name__}.{_info.name}")
    if hasattr(_module, "register"):
        _module.register(app)
