"""Shared test helpers: where the parity fixtures are, and small media files made on the fly."""
from __future__ import annotations

import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PARITY = SHARED / "parity"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


from standin_body import PARENTS  # noqa: E402 - SMPL's kinematic tree


def _convex_rows(rng, rows, cols, per_row):
    m = np.zeros((rows, cols))
    for r in range(rows):
        m[r, rng.choice(cols, per_row, replace=False)] = rng.uniform(0.2, 1.0, per_row)
    return m / m.sum(1, keepdims=True)


def synthetic_smpl(seed: int = 0, influences: int = 4) -> dict[str, np.ndarray]:
    """Random arrays in SMPL's layout (the official file is licensed; this needs no download);
    each vertex is skinned to ``influences`` joints."""
    rng = np.random.default_rng(seed)
    return {
        "v_template": rng.normal(0, 0.3, (6890, 3)),
        "shapedirs": rng.normal(0, 0.02, (6890, 3, 10)),
        "posedirs": rng.normal(0, 0.01, (6890, 3, 207)),
        "J_regressor": _convex_rows(rng, 24, 6890, 12),
        "weights": _convex_rows(rng, 6890, 24, influences),
        "kintree_table": np.array([[4294967295] + PARENTS[1:], list(range(24))], dtype=np.int64),
        "f": rng.integers(0, 6890, (13776, 3)).astype(np.uint32),
        "cocoplus_regressor": _convex_rows(rng, 19, 6890, 12),
    }


def need_shared() -> Path:
    """The parity tools live in ../shared; tests that need them skip on a bare clone."""
    if not (PARITY / "make_checkpoint.py").is_file():
        pytest.skip("../shared/parity not present: parity fixtures and checkpoint writers live there")
    return PARITY


def make_checkpoint(spec: Path, out: Path) -> Path:
    subprocess.run([sys.executable, str(PARITY / "make_checkpoint.py"), str(spec), str(out)], check=True)
    return out


@pytest.fixture(scope="session")
def parity_checkpoints(tmp_path_factory):
    """Checkpoints written from a parity case's specs, once per session: case -> {spec name: path}."""
    made: dict[tuple[str, str, str], Path] = {}

    def get(case: str, spec: str = "spec.json", name: str | None = None) -> Path:
        need_shared()
        key = (case, spec, name or "")
        if key not in made:
            folder = tmp_path_factory.mktemp(f"{case}-{Path(spec).stem}")
            out = folder / (name or f"{Path(spec).stem}.pth")
            made[key] = make_checkpoint(PARITY / case / spec, out)
        return made[key]

    return get


@pytest.fixture(scope="session")
def fake_smpl(tmp_path_factory) -> Path:
    """The stand-in SMPL model (SMPL's layout, not a body) that ../shared/parity/fake_smpl.py writes."""
    need_shared()
    path = tmp_path_factory.mktemp("smpl") / "smpl.pkl"
    subprocess.run([sys.executable, str(PARITY / "fake_smpl.py"), str(path)], check=True)
    return path


@pytest.fixture(scope="session")
def body_smpl(tmp_path_factory) -> Path:
    """The stand-in SMPL with a closed, body-like surface (tests/standin_body.py): meshes that render like SMPL's."""
    from standin_body import write_standin_smpl

    need_shared()
    return write_standin_smpl(tmp_path_factory.mktemp("body-smpl") / "smpl.pkl", PARITY / "fake_smpl.py")


@pytest.fixture()
def tfbundle():
    """../shared/parity/tfbundle.py, the fixtures' writer of TensorFlow's V2 checkpoint format."""
    need_shared()
    sys.path.insert(0, str(PARITY))
    try:
        import tfbundle
    finally:
        sys.path.remove(str(PARITY))
    return tfbundle


def write_video(path: Path, frames: int = 10, fps: int = 12, size=(64, 48), audio: bool = False) -> Path:
    """A small H.264 video whose frame k has a bright square at x = 4k (so frames are distinguishable)."""
    import av

    w, h = size
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        sound = None
        if audio:
            sound = out.add_stream("aac", rate=16000)
            sound.layout = "mono"
        for k in range(frames):
            img = np.full((h, w, 3), 30, np.uint8)
            img[10:20, 4 * k:4 * k + 8] = 250
            for packet in video.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if sound is not None:
            samples = int(16000 * frames / fps)
            tone = (0.2 * np.sin(np.arange(samples) * 2 * np.pi * 440 / 16000)).astype(np.float32)[None]
            chunk = 1024
            for start in range(0, samples, chunk):
                frame = av.AudioFrame.from_ndarray(tone[:, start:start + chunk], format="flt", layout="mono")
                frame.sample_rate = 16000
                frame.pts = start
                frame.time_base = Fraction(1, 16000)
                for packet in sound.encode(frame):
                    out.mux(packet)
            for packet in sound.encode():
                out.mux(packet)
    return path


def real_clip(path: Path, frames: int, width: int | None = None) -> Path:
    """The first frames of the shipped real clip, re-encoded (optionally scaled to ``width``): the whole clip
    takes minutes on 2 CPU cores."""
    import av

    with av.open(str(REPO / "examples" / "multi_person_demo.mp4")) as real, av.open(str(path), "w") as out:
        stream_in = real.streams.video[0]
        w = width or stream_in.width
        h = 2 * round(stream_in.height * w / stream_in.width / 2)
        stream = out.add_stream("libx264", rate=stream_in.average_rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for k, frame in enumerate(real.decode(stream_in)):
            if k == frames:
                break
            frame = frame.reformat(width=w, height=h, format="yuv420p")
            frame.pts, frame.time_base = k, 1 / stream_in.average_rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the whole test session: 2 CPUs on 127.0.0.1, workers importing this checkout."""
    ray = pytest.importorskip("ray")
    import os

    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), old) if p)  # inherited by Ray's workers
    for attempt in range(3):  # Ray gives its raylet 30 s to register, which a loaded machine can miss
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                     logging_level="WARNING")
            break
        except Exception as err:  # noqa: BLE001 - Ray raises a bare Exception for this
            ray.shutdown()
            if "timed out during startup" not in str(err) or attempt == 2:
                raise
    try:
        yield ray
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = old


def video_facts(path: Path) -> dict:
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        n = sum(1 for _ in c.decode(v))
        return {"frames": n, "fps": float(v.average_rate), "codec": v.codec_context.name,
                "pix_fmt": v.codec_context.pix_fmt, "audio": len(c.streams.audio)}


@pytest.fixture()
def sigint_raises():
    """Ctrl-C (SIGINT, as _thread.interrupt_main sends it) raises KeyboardInterrupt in this test, also when the
    suite runs as a background job, which starts with SIGINT ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
