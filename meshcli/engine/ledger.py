"""The run ledger: what became of each input of a batch, so that a run can be resumed.

``OUT/meshcli_run/<input name>.json``, one small file per input, each replaced
atomically, written by the driver only (workers report back to it). A record
holds the input's status (running, done, failed), its outputs with sizes and
sha256, and the hash of the settings that made them: the command, method,
variant, the weights' sha256 and every option that changes outputs (files
given as options are hashed by content). ``--resume`` skips an input whose
record is done, made with the same settings, and whose outputs are all still
there with the recorded sizes and hashes; everything else is run again.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io.sinks import write_atomic
from ..io.sources import Input
from ..types import file_sha256

LEDGER_DIR = "meshcli_run"

# Command options that do not change what an input's outputs hold. The weights file and --random-weights
# are covered by the predictor's weights sha256 (or "untrained").
NEUTRAL_OPTIONS = frozenset({"inputs", "out", "batch_size", "device", "quiet", "weights", "random_weights"})


def settings_of(command: str, predictor, options: dict[str, Any]) -> dict[str, Any]:
    """Everything that decides an input's outputs, as plain JSON values."""
    described = {}
    for key, value in sorted(options.items()):
        if key in NEUTRAL_OPTIONS:
            continue
        if isinstance(value, Path):
            value = {"path": str(value), "sha256": file_sha256(value)} if value.is_file() else str(value)
        described[key] = value
    return {"command": command, "method": predictor.method, "variant": predictor.variant,
            "weights_sha256": predictor.weights.sha256 or "untrained", "options": described}


def settings_hash(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def source_key(inp: Input) -> str:
    """What an input reads, independent of the folder the command was run from."""
    if inp.kind == "images" and not Path(inp.arg).is_dir():  # a glob pattern
        return str(Path(inp.arg).absolute())
    return str(Path(inp.arg).resolve())


def output_record(out_dir: Path, path: Path) -> dict[str, Any]:
    return {"path": str(Path(path).relative_to(out_dir)), "bytes": Path(path).stat().st_size,
            "sha256": file_sha256(path)}


@dataclass
class Ledger:
    out_dir: Path
    settings: dict[str, Any]

    def __post_init__(self):
        self.out_dir = Path(self.out_dir)
        self.folder = self.out_dir / LEDGER_DIR
        self.settings_sha256 = settings_hash(self.settings)

    def path(self, inp: Input) -> Path:
        return self.folder / f"{inp.name}.json"

    def read(self, inp: Input) -> dict[str, Any] | None:
        try:
            record = json.loads(self.path(inp).read_text())
        except (OSError, ValueError):
            return None
        return record if record.get("source") == source_key(inp) else None

    def is_done(self, inp: Input) -> bool:
        """Done with these settings, every output still there as it was written."""
        record = self.read(inp)
        if not record or record.get("status") != "done" or record.get("settings_sha256") != self.settings_sha256:
            return False
        for output in record.get("outputs", []):
            path = self.out_dir / output["path"]
            try:
                if path.stat().st_size != output["bytes"] or file_sha256(path) != output["sha256"]:
                    return False
            except OSError:
                return False
        return True

    def write(self, inp: Input, status: str, **fields: Any) -> None:
        record = {"input": inp.arg, "source": source_key(inp), "name": inp.name, "status": status,
                  "settings_sha256": self.settings_sha256, "settings": self.settings,
                  "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields}
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path(inp), json.dumps(record, indent=1).encode())

    def running(self, inp: Input, worker: str, attempt: int) -> None:
        self.write(inp, "running", worker=worker, attempt=attempt)

    def done(self, inp: Input, outputs: list[dict[str, Any]], frames: int, worker: str, attempt: int,
             seconds: float) -> None:
        self.write(inp, "done", outputs=outputs, frames=frames, worker=worker, attempt=attempt,
                   seconds=round(seconds, 3))

    def failed(self, inp: Input, error: str, worker: str, attempt: int) -> None:
        self.write(inp, "failed", error=error, worker=worker, attempt=attempt)
