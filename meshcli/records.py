"""The weights records: one per checkpoint meshcli knows, read from ``weights/manifest.json``.

A record says where a checkpoint comes from (official URL, licence, format, file
name in the store, sha256 where known) and what the network it belongs to
expects (input size, normalisation, joint names). ``meshcli weights`` and the
predictors read the same records: a predictor takes its input size and joint
names from its variant's record.

The store is ``weights/`` at the repository root (``MESHCLI_WEIGHTS`` overrides
it; a wheel install without the repository uses ``~/.cache/meshcli/weights``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .errors import MeshcliError

REPO_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"  # in a clone (editable install)
MANIFEST = Path(__file__).with_name("manifest.json")  # a link to weights/manifest.json, copied into wheels
ROLES = ("network", "rescoring", "body model")


def store_dir() -> Path:
    if os.environ.get("MESHCLI_WEIGHTS"):
        return Path(os.environ["MESHCLI_WEIGHTS"])
    if (REPO_WEIGHTS / "manifest.json").is_file():
        return REPO_WEIGHTS
    return Path.home() / ".cache" / "meshcli" / "weights"  # installed from a wheel: no repository around


@dataclass(frozen=True)
class WeightsRecord:
    name: str
    method: str  # the method it belongs to ("smpl" for the body model)
    variant: str
    role: str  # "network" (a method variant's weights), "rescoring" (DEKR's OKS net) or "body model" (SMPL)
    file: str
    url: str
    direct: bool  # the URL serves the file (or an archive holding it) without a log-in
    where: str
    licence: str
    format: str
    joint_names: tuple[str, ...]
    input_size: int | None = None  # network input side in pixels (square crops; DEKR: the short side)
    normalisation: str = ""  # how input values are scaled before the network
    sha256: str | None = None  # of the official file, where known
    members: tuple[str, ...] = ()  # for archives: the members that make up the checkpoint
    also: tuple[tuple[str, str], ...] = ()  # for archives: (store name, member) imported alongside

    @property
    def path(self) -> Path:
        return store_dir() / self.file

    def present(self) -> bool:
        return self.path.is_file()

    def how_to_get(self) -> str:
        get = (f"`meshcli weights fetch {self.name}`" if self.direct
               else f"download it from {self.url} ({self.where})")
        return f"{get}, then `meshcli weights import {self.name} FILE` (works offline)"


@cache
def _read_manifest() -> tuple[WeightsRecord, ...]:
    data = json.loads(MANIFEST.read_text())
    return tuple(WeightsRecord(**{**e, "joint_names": tuple(e["joint_names"]), "members": tuple(e.get("members", ())),
                                  "also": tuple(e.get("also", {}).items())}) for e in data["checkpoints"])


def manifest() -> dict[str, WeightsRecord]:
    return {r.name: r for r in _read_manifest()}


def record(name: str) -> WeightsRecord:
    known = manifest()
    if name not in known:
        raise MeshcliError(None, f"unknown weights name {name!r}", f"known names: {', '.join(known)}")
    return known[name]


def record_for(method: str, variant: str) -> WeightsRecord:
    for r in manifest().values():
        if r.method == method and r.variant == variant:
            return r
    raise MeshcliError(None, f"no known checkpoint for --method {method} --variant {variant}",
                       "pass the file with --weights PATH")


def variants(method: str) -> tuple[str, ...]:
    """A method's variants, its default first (the manifest's order)."""
    return tuple(r.variant for r in manifest().values() if r.method == method and r.role == "network")
