"""Meshes are drawn only in the boxes people cover (meshcli.render.person_regions), on a body-like stand-in."""
from __future__ import annotations

import pickle

import numpy as np

from meshcli.draw import colour
from meshcli.render import MeshRenderer, person_regions
from standin_body import body_surface

FOCAL = 1000.0


def people(xs: list[float], depth: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """The stand-in body upright in the OpenCV camera frame (y down), one per x position: (verts, cam_t)."""
    verts, _ = body_surface()
    upright = verts * np.array([1.0, -1.0, -1.0])
    return np.stack([upright] * len(xs)), np.array([[x, 0.1, depth] for x in xs])


def test_stand_in_is_a_closed_surface_with_smpl_counts():
    verts, faces = body_surface()
    assert verts.shape == (6890, 3) and faces.shape == (13776, 3)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    assert len(np.unique(edges, axis=0)) == len(edges)  # each directed edge once: one consistent winding
    undirected, counts = np.unique(np.sort(edges, 1), axis=0, return_counts=True)
    assert set(counts.tolist()) == {2}  # closed: every edge between exactly two faces
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    assert np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6 > 0.05  # outward, a body's volume (m^3)
    assert 1.6 < np.ptp(verts[:, 1]) < 1.9


def test_body_smpl_fixture_holds_the_surface(body_smpl):
    with open(body_smpl, "rb") as fh:
        model = pickle.load(fh)
    verts, faces = body_surface()
    np.testing.assert_array_equal(model["f"], faces)
    np.testing.assert_allclose(model["weights"].sum(1), 1)
    np.testing.assert_allclose(model["J_regressor"].sum(1), 1)


def test_overlapping_people_share_a_region_and_separate_ones_do_not():
    verts, cam_t = people([-2.0, -1.8, 2.0])
    placed = [v + t for v, t in zip(verts, cam_t)]
    regions = person_regions(placed, FOCAL, FOCAL, 960, 540, 1920, 1080)
    assert sorted(group for _, group in regions) == [[0, 1], [2]]
    for (x0, y0, x1, y1), group in regions:
        for k in group:
            v = placed[k]
            u = FOCAL * v[:, 0] / v[:, 2] + 960
            assert x0 <= u.min() and u.max() < x1
    assert person_regions([placed[0] - [0, 0, 10]], FOCAL, FOCAL, 960, 540, 1920, 1080) == []  # behind


def test_region_drawing_matches_drawing_the_whole_frame():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (540, 960, 3), dtype=np.uint8)
    verts, cam_t = people([-1.5, -1.3, 1.6], depth=8.0)
    renderer = MeshRenderer(body_surface()[1], backend="wireframe")
    got = renderer.render(image, verts, cam_t, FOCAL / 2)
    placed = [v + t for v, t in zip(verts, cam_t)]
    whole = renderer._draw(image, placed, [colour(k) for k in range(3)], FOCAL / 2, FOCAL / 2, 479.5, 269.5)
    changed = np.any(whole != image, -1)
    assert changed.mean() > 0.01  # the people are drawn (3 x ~25 x 110 px)
    assert np.mean(np.any(got != whole, -1)) < 1e-3  # sub-pixel rounding at a few edges at most
    boxes = np.zeros(image.shape[:2], bool)
    for (x0, y0, x1, y1), _ in person_regions(placed, FOCAL / 2, FOCAL / 2, 479.5, 269.5, 960, 540):
        boxes[y0:y1, x0:x1] = True
    np.testing.assert_array_equal(got[~boxes], image[~boxes])
