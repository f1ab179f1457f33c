"""Mesh overlays: the OpenGL (EGL/OSMesa) renderer, the OpenCV painter, and the crop-camera conversion."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from meshcli.render import MeshRenderer, weak_perspective_to_translation

# A unit square in the camera's x-y plane whose normal faces the camera (-z): corners (x, y) in [-1, 0]^2,
# i.e. up and to the left of the optical axis (OpenCV camera: y points down).
SQUARE = np.array([[-1.0, -1.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
SQUARE_FACES = np.array([[0, 2, 1], [0, 3, 2]])
BACKGROUND = 40
RED, BLUE = (255, 0, 0), (0, 0, 255)


def _frame(h: int = 100, w: int = 120) -> np.ndarray:
    return np.full((h, w, 3), BACKGROUND, np.uint8)


def _changed(out: np.ndarray) -> np.ndarray:
    return (out != BACKGROUND).any(-1)


@pytest.fixture(scope="module")
def gl() -> MeshRenderer:
    renderer = MeshRenderer(SQUARE_FACES, backend="auto", opacity=1.0)
    if renderer.backend == "wireframe":
        pytest.skip(f"no OpenGL backend can render here: {renderer.fallback_reason}")
    return renderer


def _check_square(out: np.ndarray, exact_edges: bool) -> None:
    # Focal 100 at depth 5 and principal point (60.25, 50.25): the square spans
    # u in [40.25, 60.25], v in [30.25, 50.25] (integer coordinates are pixel centres).
    drawn = _changed(out)
    assert drawn[31:50, 41:60].all()
    assert not drawn[:29].any() and not drawn[52:].any() and not drawn[:, :39].any() and not drawn[:, 62:].any()
    if exact_edges:  # anti-aliased coverage: its centroid is the square's centre to a small fraction of a pixel
        weight = (out[..., 0].astype(float) - BACKGROUND) / (255 - BACKGROUND)
        ys, xs = np.mgrid[:out.shape[0], :out.shape[1]]
        centre = (weight * xs).sum() / weight.sum(), (weight * ys).sum() / weight.sum()
        np.testing.assert_allclose(centre, (50.25, 40.25), atol=0.05)


def test_opengl_draws_where_the_camera_projects(gl):
    out = gl.render(_frame(), SQUARE[None], np.array([[0.0, 0.0, 5.0]]), focal=100, principal=(60.25, 50.25),
                    colours=[(255, 255, 255)])
    assert gl.backend in ("egl", "osmesa") and gl.fallback_reason is None
    _check_square(out, exact_edges=True)


def test_opengl_one_pass_nearer_person_in_front_and_resizes(gl):
    # Two people overlapping on screen: the nearer (blue, z=4) hides the farther (red, z=5).
    two = np.stack([SQUARE, SQUARE * 0.5])
    cam_t = np.array([[0.0, 0.0, 5.0], [0.0, 0.0, 4.0]])
    out = gl.render(_frame(), two, cam_t, focal=100, principal=(60.25, 50.25), colours=[RED, BLUE])
    centre = out[45, 55]
    assert int(centre[2]) > int(centre[0]) + 100, centre  # blue in front
    assert int(out[32, 42][0]) > int(out[32, 42][2]) + 100  # red where only red is
    bigger = gl.render(_frame(200, 240), two, cam_t, focal=200, principal=(120.5, 100.5), colours=[RED, BLUE])
    assert bigger.shape == (200, 240, 3) and _changed(bigger)[65:99, 85:119].all()
    assert gl.backend in ("egl", "osmesa")


def test_opengl_from_another_thread(gl):
    # The pipeline draws on its annotate threads, each with its own context.
    results = []
    worker = threading.Thread(target=lambda: results.append(
        gl.render(_frame(), SQUARE[None], np.array([[0.0, 0.0, 5.0]]), focal=100, principal=(60.25, 50.25))))
    worker.start()
    worker.join()
    _check_square(results[0], exact_edges=False)
    # The worker's context is gone with its thread and another renderer is freed here:
    # neither may take this thread's context down with it.
    other = MeshRenderer(SQUARE_FACES)
    other.render(_frame(), SQUARE[None], np.array([[0.0, 0.0, 5.0]]), focal=100)
    other.close()
    del other
    again = gl.render(_frame(), SQUARE[None], np.array([[0.0, 0.0, 5.0]]), focal=100, principal=(60.25, 50.25))
    assert gl.backend in ("egl", "osmesa"), gl.fallback_reason
    _check_square(again, exact_edges=False)


@pytest.mark.parametrize("backend", ["gl", "wireframe"])
def test_threads_render_at_once_what_one_thread_renders(gl, backend):
    """The pipeline's annotate threads share one renderer, each thread with its own OpenGL context."""
    renderer = gl if backend == "gl" else MeshRenderer(SQUARE_FACES, backend="wireframe", opacity=1.0)
    jobs = [(np.array([[0.05 * k, -0.03 * k, 5.0 + 0.2 * k]]), (60 + 2 * k, 50 + k)) for k in range(12)]
    serial = [renderer.render(_frame(), SQUARE[None], t, focal=100, principal=p) for t, p in jobs]
    together = [None] * len(jobs)
    start = threading.Barrier(3)

    def work(first: int) -> None:
        start.wait()
        for k in range(first, len(jobs), 3):
            cam_t, principal = jobs[k]
            together[k] = renderer.render(_frame(), SQUARE[None], cam_t, focal=100, principal=principal)
        renderer.close()  # this thread's context only

    threads = [threading.Thread(target=work, args=(first,)) for first in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert renderer.backend == ("wireframe" if backend == "wireframe" else gl.backend), renderer.fallback_reason
    for k, (alone, at_once) in enumerate(zip(serial, together)):
        assert _changed(alone).sum() > 150
        np.testing.assert_array_equal(at_once, alone, err_msg=f"frame {k}")


def test_painter_draws_where_the_camera_projects():
    painter = MeshRenderer(SQUARE_FACES, backend="wireframe", opacity=1.0)
    assert painter.backend == "wireframe"
    out = painter.render(_frame(), SQUARE[None], np.array([[0.0, 0.0, 5.0]]), focal=100,
                         principal=(60.25, 50.25), colours=[RED])
    _check_square(out, exact_edges=False)
    assert int(out[40, 50][0]) > int(out[40, 50][2]) + 100  # shaded red


def test_painter_culls_back_faces_and_skips_people_behind_the_camera():
    painter = MeshRenderer(SQUARE_FACES[:, ::-1], backend="wireframe")  # winding reversed: faces away
    out = painter.render(_frame(), SQUARE[None], np.array([[0.0, 0.0, 5.0]]), focal=100)
    assert not _changed(out).any()
    painter = MeshRenderer(SQUARE_FACES, backend="wireframe")
    out = painter.render(_frame(), SQUARE[None], np.array([[0.0, 0.0, -5.0]]), focal=100)
    assert not _changed(out).any()
    assert np.array_equal(painter.render(_frame(), np.zeros((0, 4, 3)), np.zeros((0, 3)), focal=100), _frame())


def test_painter_nearer_person_in_front_and_opacity():
    painter = MeshRenderer(SQUARE_FACES, backend="wireframe", opacity=0.5)
    two = np.stack([SQUARE, SQUARE * 0.5])
    out = painter.render(_frame(), two, np.array([[0.0, 0.0, 5.0], [0.0, 0.0, 4.0]]), focal=100,
                         principal=(60.25, 50.25), colours=[RED, BLUE])
    assert int(out[45, 55][2]) > int(out[45, 55][0]) + 50  # blue in front
    assert BACKGROUND < out[45, 55][2] < 200  # half see-through


def test_opengl_and_painter_cover_the_same_pixels(gl):
    # A closed, outward-facing mesh (an octahedron) seen off-centre: both backends cover the same silhouette.
    verts = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=float)
    faces = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    faces = faces[:, ::-1]  # outward in the y-down camera frame
    cam_t = np.array([[0.4, -0.3, 6.0]])
    masks = []
    for backend in ("auto", "wireframe"):
        r = MeshRenderer(faces, backend=backend, opacity=1.0)
        masks.append(_changed(r.render(_frame(), verts[None], cam_t, focal=120)))
    assert masks[0].sum() > 300
    iou = (masks[0] & masks[1]).sum() / (masks[0] | masks[1]).sum()
    assert iou > 0.9, iou


def test_weak_perspective_camera_reproduces_the_crop_projection():
    rng = np.random.default_rng(0)
    cam = np.column_stack([rng.uniform(0.5, 1.2, 5), rng.normal(0, 0.2, (5, 2))])
    centre, size = rng.uniform(100, 500, (5, 2)), rng.uniform(80, 300, 5)
    focal, principal = 1000.0, np.array([320.0, 240.0])
    t = weak_perspective_to_translation(cam, centre, size, focal, principal)
    points = rng.normal(0, 0.5, (5, 7, 2))  # body points at the body's depth (Z = 0)
    crop = centre[:, None] + size[:, None, None] / 2 * cam[:, None, :1] * (points + cam[:, None, 1:])
    pinhole = principal + focal * (points + t[:, None, :2]) / t[:, None, 2:]
    np.testing.assert_allclose(pinhole, crop, atol=1e-6)
    # SPIN's demo camera: crop-centred principal point, focal 5000, crop 224
    spin = weak_perspective_to_translation(cam, centre, 224, 5000.0, principal=centre[0])
    np.testing.assert_allclose(spin[0], [cam[0, 1], cam[0, 2], 2 * 5000 / (224 * cam[0, 0])], rtol=1e-9)
