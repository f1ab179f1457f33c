"""`meshcli --help`, `--version` and every `meshcli X --help` answer without importing torch."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

import meshcli

ROOT = Path(__file__).resolve().parents[1]

# Walks the command tree in a fresh interpreter, asks each command for its help through typer, then reports
# every heavy module that got imported on the way.
HELP_EVERYTHING = """
import sys
from typer.main import get_command
from typer.testing import CliRunner
from meshcli.cli import app

runner = CliRunner()
def paths(command, prefix):
    yield prefix
    if hasattr(command, "list_commands"):  # a group
        ctx = command.context_class(command)
        for name in command.list_commands(ctx):
            yield from paths(command.get_command(ctx, name), prefix + [name])

for path in paths(get_command(app), []):
    result = runner.invoke(app, path + ["--help"])
    assert result.exit_code == 0 and "Usage:" in result.output, (path, result.output)
    print("help:", " ".join(path) or "meshcli")
version = runner.invoke(app, ["--version"])
assert version.exit_code == 0, version.output
print("version:", version.output.strip())
print("heavy:", sorted(m for m in ("torch", "smplx", "pyrender") if m in sys.modules))
"""


def test_help_and_version_import_no_torch():
    out = subprocess.run([sys.executable, "-c", HELP_EVERYTHING], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    helped = {line.removeprefix("help: ") for line in lines if line.startswith("help: ")}
    assert {"meshcli", "pose", "body", "hand", "bench", "weights", "weights import", "eval", "eval coco",
            "eval hand"} <= helped
    assert f"version: meshcli {meshcli.__version__}" in lines
    assert "heavy: []" in lines, lines[-1]


# Allocates and frees a 100 MB block after (or without) a meshcli command, then reports whether glibc served it
# by mmap and whether its heap kept the memory once freed.
ALLOCATE_AFTER_COMMAND = """
import ctypes, sys
import numpy as np
from meshcli.cli import app

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "command":
    app(["weights", "list"], standalone_mode=False)
block = np.ones(100 << 20, np.uint8)
mapped = libc.mallinfo2().hblkhd >= 100 << 20
del block
print(f"mapped={mapped} kept={libc.mallinfo2().arena >= 100 << 20}")
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's (mallopt)")
def test_the_command_keeps_freed_memory_for_the_next_block(tmp_path):
    """A large block is served from the heap and kept once freed after a meshcli command, not before."""
    env = {**os.environ, "MESHCLI_WEIGHTS": str(tmp_path)}  # `weights list` of an empty store
    reports = [subprocess.run([sys.executable, "-c", ALLOCATE_AFTER_COMMAND, when], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120) for when in ("plain", "command")]
    assert [r.returncode for r in reports] == [0, 0], [r.stderr for r in reports]
    assert [r.stdout.split()[-2:] for r in reports] == [["mapped=True", "kept=False"], ["mapped=False", "kept=True"]]
