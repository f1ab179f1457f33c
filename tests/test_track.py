"""The tracker (meshcli.track) and the smoothers (meshcli.smooth)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from meshcli.smooth import (OneEuro, axis_angle_to_matrix, matrix_to_axis_angle, nearest_rotation,
                            offline_smooth, offline_weights)
from meshcli.track import Tracker, box_iou, keypoint_similarity


def person(cx: float, cy: float = 100.0, w: float = 40.0, h: float = 100.0) -> np.ndarray:
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def test_box_iou_and_oks():
    a = np.array([[0, 0, 10, 10.0]])
    b = np.array([[5, 0, 15, 10.0], [20, 20, 30, 30.0], [0, 0, 10, 10.0]])
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 0, 1]])
    kps = np.random.default_rng(0).uniform(0, 100, (1, 17, 3)) + [0, 0, 1]
    far = kps + [50, 0, 0]
    oks = keypoint_similarity(kps, np.concatenate([kps, far]), np.array([100 * 100.0]), np.full(17, 0.07))
    assert oks[0, 0] == pytest.approx(1.0) and oks[0, 1] < 0.01
    hidden = kps.copy()
    hidden[..., 2] = 0
    assert keypoint_similarity(kps, hidden, np.array([1e4]), np.full(17, 0.07))[0, 0] == 0


def test_ids_follow_people_not_row_order_through_a_crossing_with_a_hidden_frame_gap():
    tracker = Tracker(max_age=6)
    rng = np.random.default_rng(1)
    seen: dict[int, set] = {0: set(), 1: set()}
    for f in range(60):
        people = {0: person(20 + 6 * f), 1: person(380 - 6 * f, 104)}  # they cross at f = 30
        if 28 <= f <= 32:
            del people[1]  # the one behind is hidden
        order = rng.permutation(list(people))
        tracks = tracker.update(f, np.array([people[k] for k in order]))
        for k, t in zip(order, tracks):
            seen[k].add(t.id)
    assert seen == {0: {0}, 1: {1}}


def test_tentative_tracks_are_dropped_and_old_ones_expire():
    tracker = Tracker(max_age=2, min_hits=3)
    t0 = tracker.update(0, [person(50)])[0]
    flicker = tracker.update(1, [person(50), person(300)])[1]
    tracker.update(2, [person(50)])
    assert t0.id is None or t0.id == 0
    assert flicker.dropped and flicker.id is None
    assert tracker.update(3, [person(50)])[0] is t0 and t0.id == 0
    for f in range(4, 8):
        tracker.update(f, np.zeros((0, 4)))
    assert tracker.tracks == []  # unseen for more than max_age frames
    again = tracker.update(8, [person(50)])[0]
    assert again is not t0


def test_rotations_are_projected_to_valid_rotations():
    rng = np.random.default_rng(2)
    rot = Rotation.random(50, random_state=3).as_matrix()
    noisy = rot + rng.normal(0, 0.2, rot.shape)
    fixed = nearest_rotation(noisy)
    np.testing.assert_allclose(fixed @ np.swapaxes(fixed, -1, -2), np.broadcast_to(np.eye(3), fixed.shape),
                               atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(fixed), 1, atol=1e-9)
    np.testing.assert_allclose(nearest_rotation(rot), rot, atol=1e-9)
    aa = Rotation.random(8, random_state=4).as_rotvec().reshape(2, 12)
    np.testing.assert_allclose(matrix_to_axis_angle(axis_angle_to_matrix(aa)), aa, atol=1e-9)


def test_offline_smoothing_is_zero_phase_and_exact_for_constant_acceleration():
    t = np.arange(40) / 30
    quadratic = np.stack([3 + 2 * t - 5 * t ** 2, 7 * t], 1)
    np.testing.assert_allclose(offline_smooth(t, quadratic, 0.2), quadratic, atol=1e-9)
    w = offline_weights(t[:13], t[6], 0.2)
    np.testing.assert_allclose(w, w[::-1], atol=1e-12)  # symmetric: no lag
    assert offline_weights(t, t[0], 0.01)[0] == pytest.approx(1.0)  # alone in its window: itself
    noisy = quadratic + np.random.default_rng(5).normal(0, 0.05, quadratic.shape)
    assert np.abs(offline_smooth(t, noisy, 0.2) - quadratic).mean() < np.abs(noisy - quadratic).mean()


def test_one_euro_is_causal_and_smooths_jitter():
    rng = np.random.default_rng(6)
    t = np.arange(200) / 30
    truth = np.sin(t)[:, None]
    noisy = truth + rng.normal(0, 0.05, truth.shape)
    f = OneEuro(min_cutoff=1.0, beta=0.5)
    out = np.array([f(ti, x) for ti, x in zip(t, noisy)])
    assert out[0] == noisy[0]
    assert np.abs(np.diff(out, 2, axis=0)).mean() < 0.5 * np.abs(np.diff(noisy, 2, axis=0)).mean()
    g = OneEuro(1.0, 0.5)
    head = [g(ti, x) for ti, x in zip(t[:50], noisy[:50])]
    np.testing.assert_array_equal(np.array(head), out[:50])  # later samples change nothing before them
