"""The weights store: resolving, fetching and importing checkpoints.

What is known about each checkpoint (its record) is in ``meshcli.records``;
weight files themselves are never committed. Importing checks a file against
the method's architecture before it is stored, so a stored file is known to load.
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
import zlib
from pathlib import Path

from . import records
from .errors import MeshcliError, first_line
from .methods import METHODS
from .types import file_sha256

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
    e = records.record_for(method, variant)
    if not e.present():
        raise MeshcliError(e.path, f"the {e.name} checkpoint is not in the weights store",
                           f"{e.how_to_get()}; or pass --weights PATH, or --random-weights to test the install")
    verify_stored(e)
    return e.path


def verify_stored(e: records.WeightsRecord) -> None:
    """The store's file must be the one imported: its sha256 is checked against the import's record
    (a file placed in the store by hand has no record and is taken as it is)."""
    provenance = e.path.with_name(e.path.name + ".provenance.json")
    if not provenance.is_file():
        return
    try:
        expected = json.loads(provenance.read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        raise MeshcliError(provenance, "the import record is unreadable", f"re-import: {e.how_to_get()}") from None
    if file_sha256(e.path) != expected:
        raise MeshcliError(e.path, "the stored file changed since it was imported (its sha256 differs from the "
                           "import record; damaged on disk or replaced)", f"import it again: {e.how_to_get()}")


def import_file(name: str, src: str | Path) -> Path:
    """Check ``src`` against the architecture for ``name`` and store it (converted where needed).

    For a checkpoint that comes in an archive (HMR's ``models.tar.gz``) ``src`` may be the archive as
    downloaded: its members are extracted, and what it holds besides (HMR's SMPL) is imported too.
    """
    e = records.record(name)
    src = Path(src)
    if e.members and src.is_file() and tarfile.is_tarfile(src):
        with tempfile.TemporaryDirectory(prefix="meshcli-import-") as tmp:
            return _import_archive(e, src, Path(tmp))
    if not src.is_file() and not Path(f"{src}.index").is_file():
        raise MeshcliError(src, "is a folder, not a weights file" if src.is_dir() else "file not found",
                           "give the downloaded checkpoint file itself")
    dst = e.path
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.part")
        try:
            if e.role == "body model":
                from .io.smplfile import import_smpl

                import_smpl(src, tmp)
            else:
                METHODS[e.method].store_checkpoint(src, tmp, e.variant, shutil.copyfile)
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
        provenance = {"name": name, "source": str(src.resolve()), "source_bytes": _size(src),
                      "stored": dst.name, "sha256": file_sha256(dst),
                      "imported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        dst.with_name(dst.name + ".provenance.json").write_text(json.dumps(provenance, indent=1))
    except OSError as err:
        raise MeshcliError(dst.parent, f"the weights store is not writable ({err.strerror or err})",
                           "set MESHCLI_WEIGHTS to a writable folder, or fix its permissions") from None
    return dst


def _import_archive(e: records.WeightsRecord, archive: Path, tmp: Path) -> Path:
    """Import ``e`` (and what it brings along) from the archive it is published in."""
    members = _extract(archive, e.members + tuple(m for _, m in e.also), tmp / "x")
    for other, member in e.also:
        import_file(other, members[member])
    first = members[e.members[0]]
    # a TensorFlow checkpoint is named by its prefix, without .index
    return import_file(e.name, first.with_suffix("") if first.suffix == ".index" else first)


def _size(src: Path) -> int:
    if src.exists():
        return src.stat().st_size
    return sum(p.stat().st_size for p in src.parent.glob(src.name + ".*"))


def fetch(name: str, progress: bool = True) -> Path:
    """Download a checkpoint from its official source and import it."""
    e = records.record(name)
    if not e.direct:
        raise MeshcliError(None, f"{e.name} has no direct download ({e.where})", e.how_to_get())
    with tempfile.TemporaryDirectory(prefix="meshcli-fetch-") as tmp:
        download = Path(tmp) / e.url.rstrip("/").split("/")[-1]
        _download(e.url, download, progress)
        try:
            if not e.members:
                return import_file(name, download)
            return _import_archive(e, download, Path(tmp))
        except MeshcliError as err:
            if err.path is None or not Path(err.path).is_relative_to(tmp):
                raise
            # the downloaded copy is gone when this is read: name what was fetched instead
            raise MeshcliError(e.url, err.cause, err.fix) from None


# A download must finish within FETCH_DEADLINE_S and move at least FETCH_MIN_RATE bytes/s over every
# FETCH_RATE_WINDOW_S seconds; each read also times out after FETCH_READ_TIMEOUT_S.
FETCH_DEADLINE_S = 3 * 3600
FETCH_MIN_RATE = 4096
FETCH_RATE_WINDOW_S = 60.0
FETCH_READ_TIMEOUT_S = 30


def _download(url: str, out: Path, progress: bool) -> None:
    bar = None
    try:
        with urllib.request.urlopen(url, timeout=FETCH_READ_TIMEOUT_S) as response, open(out, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0)
            bar = _bar(out.name, total) if progress else None
            done = 0
            start = window_start = time.monotonic()
            window_bytes = 0
            while chunk := response.read1(1 << 20):  # whatever has arrived, so a trickle is noticed
                f.write(chunk)
                done += len(chunk)
                window_bytes += len(chunk)
                now = time.monotonic()
                if now - start > FETCH_DEADLINE_S:
                    raise MeshcliError(url, f"download not finished after {FETCH_DEADLINE_S / 60:.0f} minutes "
                                       f"({done} bytes)", "try again later, or download the file elsewhere and "
                                       "run `meshcli weights import NAME FILE`")
                if now - window_start >= FETCH_RATE_WINDOW_S:
                    if window_bytes < FETCH_MIN_RATE * (now - window_start):
                        raise MeshcliError(url, f"download too slow ({window_bytes / (now - window_start):.0f} "
                                           f"bytes/s, the minimum is {FETCH_MIN_RATE})", "try again later, or "
                                           "download the file elsewhere and run `meshcli weights import NAME FILE`")
                    window_start, window_bytes = now, 0
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
    except (EOFError, zlib.error, OSError) as err:  # gzip stream cut short or damaged
        raise MeshcliError(archive, f"the archive is truncated or damaged ({first_line(err)})",
                           "download it again") from None
    return found


def status() -> list[tuple[records.WeightsRecord, bool]]:
    return [(e, e.present()) for e in records.manifest().values()]
