"""Overlay cost per 1080p frame: the body-like stand-in mesh drawn by each renderer, 1 and 5 people.

    PYTHONPATH=. python benchmarks/render.py [--frames 5] [--renderers egl,wireframe]

"whole frame" draws every person in one viewport the size of the frame (meshcli before person regions);
"regions" is ``MeshRenderer.render``, which draws each group of overlapping people in a viewport around
the group's box. Both run in this process, interleaved, on the same frames; the table gives the median
wall and CPU ms per frame (the process CPU time, which includes the OpenGL driver's threads).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from standin_body import body_surface  # noqa: E402

from meshcli.draw import colour  # noqa: E402
from meshcli.render import MeshRenderer  # noqa: E402

W, H, FOCAL = 1920, 1080, 1500.0


def scene(count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` upright stand-in bodies spread across the frame at 4-6 m (the demo clip's people)."""
    verts, _ = body_surface()
    upright = verts * np.array([1.0, -1.0, -1.0])
    xs = np.linspace(-1.6, 1.6, count) if count > 1 else np.array([0.0])
    cam_t = np.array([[x, 0.15, 4.0 + (k % 3)] for k, x in enumerate(xs)])
    return np.stack([upright] * count), cam_t


def time_call(fn) -> tuple[float, float]:
    c, t = time.process_time(), time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - t), 1000 * (time.process_time() - c)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--renderers", default="egl,wireframe")
    opts = parser.parse_args()
    image = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    faces = body_surface()[1]
    print("| renderer | people | whole frame ms (CPU ms) | regions ms (CPU ms) | regions / whole (CPU) |")
    print("|---|---|---|---|---|")
    for backend in opts.renderers.split(","):
        renderer = MeshRenderer(faces, backend=backend)
        if renderer.backend != backend:
            print(f"| {backend} | - | not available: {renderer.fallback_reason} | | |")
            continue
        for count in (1, 5):
            verts, cam_t = scene(count)
            placed = [v + t for v, t in zip(verts, cam_t)]
            rgb = [colour(k) for k in range(count)]
            whole = lambda: renderer._draw(image, placed, rgb, FOCAL, FOCAL, (W - 1) / 2, (H - 1) / 2)  # noqa: E731
            regions = lambda: renderer.render(image, verts, cam_t, FOCAL)  # noqa: E731
            whole(), regions()  # warm up (GL context, shaders)
            runs = {"whole": [], "regions": []}
            for k in range(opts.frames):
                for name, fn in (("whole", whole), ("regions", regions))[:: 1 if k % 2 == 0 else -1]:
                    runs[name].append(time_call(fn))
            med = {n: (statistics.median(w for w, _ in r), statistics.median(c for _, c in r)) for n, r in runs.items()}
            print(f"| {backend} | {count} | {med['whole'][0]:.0f} ({med['whole'][1]:.0f}) | "
                  f"{med['regions'][0]:.0f} ({med['regions'][1]:.0f}) | {med['regions'][1] / med['whole'][1]:.2f} |",
                  flush=True)
        renderer.close()


if __name__ == "__main__":
    main()
