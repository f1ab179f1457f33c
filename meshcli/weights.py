"""The weights store: where checkpoints live, what is known, fetching and importing.

The store is ``weights/`` at the repository root (``MESHCLI_WEIGHTS`` overrides
it; a wheel install without the repository uses ``~/.cache/meshcli/weights``).
``weights/manifest.json`` lists every known checkpoint: method, variant, file
name, official source, licence and format. Weight files themselves are
never committed. Importing checks a file against the method's architecture
before it is stored, so a stored file is known to load.
"""
from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .errors import MeshcliError
from .methods import method_module
from .methods.base import file_sha256

REPO_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"  # in a clone (editable install)
MANIFEST = Path(__file__).with_name("manifest.json")  # a link to weights/manifest.json, copied into wheels


def store_dir() -> Path:
    if os.environ.get("MESHCLI_WEIGHTS"):
        return Path(os.environ["MESHCLI_WEIGHTS"])
    if (REPO_WEIGHTS / "manifest.json").is_file():
        return REPO_WEIGHTS
    return Path.home() / ".cache" / "meshcli" / "weights"  # installed from a wheel: no repository around


@dataclass(frozen=True)
class Entry:
    name: str
    method: str
    variant: str
    file: str
    url: str
    direct: bool  # the URL serves the file (or an archive holding it) without a log-in
    where: str
    licence: str
    format: str
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


def manifest() -> dict[str, Entry]:
    data = json.loads(MANIFEST.read_text())
    return {e["name"]: Entry(**{**e, "members": tuple(e.get("members", ())),
                                "also": tuple(e.get("also", {}).items())}) for e in data["checkpoints"]}


def entry(name: str) -> Entry:
    known = manifest()
    if name not in known:
        raise MeshcliError(None, f"unknown weights name {name!r}", f"known names: {', '.join(known)}")
    return known[name]


def entry_for(method: str, variant: str) -> Entry:
    for e in manifest().values():
        if e.method == method and e.variant == variant:
            return e
    raise MeshcliError(None, f"no known checkpoint for --method {method} --variant {variant}",
                       "pass the file with --weights PATH")


def resolve(method: str, variant: str, weights: str | Path | None, random_weights: bool) -> Path | None:
    """The weights file a command will use, checked before any frame is read.

    ``None`` means untrained random weights (``--random-weights``).
    """
    if random_weights:
        return None
    if weights is not None:
        path = Path(weights)
        # A TensorFlow checkpoint is named by its prefix: model.ckpt-N(.index, .data-*)
        if not path.is_file() and not Path(f"{path}.index").is_file():
            cause = "is a folder, not a weights file" if path.is_dir() else "weights file not found"
            raise MeshcliError(path, cause, "give the checkpoint file itself with --weights")
        return path
    e = entry_for(method, variant)
    if not e.present():
        raise MeshcliError(e.path, f"the {e.name} checkpoint is not in the weights store",
                           f"{e.how_to_get()}; or pass --weights PATH, or --random-weights to test the install")
    return e.path


def import_file(name: str, src: str | Path) -> Path:
    """Check ``src`` against the architecture for ``name`` and store it (converted where needed)."""
    e = entry(name)
    src = Path(src)
    if not src.is_file() and not Path(f"{src}.index").is_file():
        raise MeshcliError(src, "is a folder, not a weights file" if src.is_dir() else "file not found",
                           "give the downloaded checkpoint file itself")
    module = method_module(e.method) if e.method != "smpl" else _smpl_module()
    dst = e.path
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.part")
    try:
        if hasattr(module, "convert_checkpoint"):
            module.convert_checkpoint(src, tmp, e.variant)  # validates while converting
        else:
            module.validate_checkpoint(src, e.variant)
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    provenance = {"name": name, "source": str(src.resolve()), "source_bytes": _size(src),
                  "stored": dst.name, "sha256": file_sha256(dst),
                  "imported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    dst.with_name(dst.name + ".provenance.json").write_text(json.dumps(provenance, indent=1))
    return dst


def _smpl_module():
    from . import smpl

    return smpl


def _size(src: Path) -> int:
    if src.exists():
        return src.stat().st_size
    return sum(p.stat().st_size for p in src.parent.glob(src.name + ".*"))


def fetch(name: str, progress: bool = True) -> Path:
    """Download a checkpoint from its official source and import it."""
    e = entry(name)
    if not e.direct:
        raise MeshcliError(None, f"{e.name} has no direct download ({e.where})", e.how_to_get())
    with tempfile.TemporaryDirectory(prefix="meshcli-fetch-") as tmp:
        download = Path(tmp) / e.url.rstrip("/").split("/")[-1]
        _download(e.url, download, progress)
        if not e.members:
            return import_file(name, download)
        members = _extract(download, e.members + tuple(m for _, m in e.also), Path(tmp) / "x")
        for other, member in e.also:
            import_file(other, members[member])
        first = members[e.members[0]]
        # a TensorFlow checkpoint is named by its prefix, without .index
        return import_file(name, first.with_suffix("") if first.suffix == ".index" else first)


def _download(url: str, out: Path, progress: bool) -> None:
    bar = None
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(out, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0)
            bar = _bar(out.name, total) if progress else None
            done = 0
            while chunk := response.read(1 << 20):
                f.write(chunk)
                done += len(chunk)
                if bar:
                    bar[0].update(bar[1], completed=done)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        reason = getattr(err, "reason", err)
        raise MeshcliError(url, f"download failed ({reason})",
                           "no internet? download the file elsewhere and run `meshcli weights import NAME FILE`, "
                           "which works offline") from None
    finally:
        if bar:
            bar[0].stop()
    if total and done != total:
        raise MeshcliError(url, f"download incomplete: {done} of {total} bytes", "run the fetch again")


def _bar(label: str, total: int):
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    bar = Progress("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn())
    task = bar.add_task(label, total=total or None)
    bar.start()
    return bar, task


def _extract(archive: Path, members: tuple[str, ...], out: Path) -> dict[str, Path]:
    """Extract the named members, flattened into ``out`` (no other path is ever written)."""
    out.mkdir()
    found = {}
    try:
        with tarfile.open(archive) as tar:
            for member in members:
                info = tar.getmember(member)
                if not info.isfile():
                    raise MeshcliError(archive, f"archive member {member} is not a regular file", "download again")
                found[member] = out / Path(member).name
                with tar.extractfile(info) as src, open(found[member], "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except (tarfile.TarError, KeyError) as err:
        raise MeshcliError(archive, f"not the expected archive ({err})", "download it again") from None
    return found


def status() -> list[tuple[Entry, bool]]:
    return [(e, e.present()) for e in manifest().values()]
