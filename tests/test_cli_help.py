"""`meshcli --help`, `--version` and every `meshcli X --help` answer without importing torch."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
