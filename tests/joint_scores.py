"""DEKR joint scores compared the way the fixtures' case.json says is honest about ``floor()`` sampling.

A joint score is the person's centre score times the scale-averaged heatmap read at floor(x), floor(y) in
input pixels. Where the official joint lies within ``BOUNDARY_PX`` of a pixel boundary, an implementation that
is within the coordinate tolerance (another CPU's float rounding) may read the neighbouring pixel. For those
joints only, the official score and ours must each be the person's centre score times the heat of one of the
pixels such a coordinate can fall in; every other joint is compared directly, with the same limit.
"""
from __future__ import annotations

import numpy as np
import torch

from meshcli.methods import dekr

BOUNDARY_PX = 0.05
LIMIT = 0.002  # of the image's largest official joint score


def dense_heatmap(maps) -> torch.Tensor:
    """The scale-averaged (J+1, H, W) input-pixel heatmap that ``dekr.joint_heat`` reads its joints from."""
    heat, ratio = maps[0]
    height, width = dekr.upsampled_size(heat, ratio)
    pixels = (torch.arange(heat.shape[0])[:, None, None], torch.arange(height)[None, :, None],
              torch.arange(width)[None, None, :])
    return sum(dekr.upsampled_heat(h, r, *pixels) for h, r in maps) / len(maps)


def record_heatmaps(monkeypatch) -> list[np.ndarray]:
    """Keep every heatmap DEKR samples joint scores from: one (J+1, H, W) array per frame, in frame order."""
    seen: list[np.ndarray] = []
    sample = dekr.joint_heat

    def recording(joints, maps):
        heat = dense_heatmap(maps)
        seen.append(heat.detach().cpu().numpy())
        pixel = joints.floor().long()
        dense = heat[torch.arange(joints.shape[1]), pixel[..., 1].clamp(0, heat.shape[1] - 1),
                     pixel[..., 0].clamp(0, heat.shape[2] - 1)]
        read = sample(joints, maps)
        torch.testing.assert_close(read, dense, rtol=1e-6, atol=1e-7)  # the joints read the dense map's pixels
        return read

    monkeypatch.setattr(dekr, "joint_heat", recording)
    return seen


def _cells(v: np.ndarray, size: int) -> np.ndarray:
    """Pixel indices a coordinate within BOUNDARY_PX of ``v`` can floor to: (..., 2), equal where no boundary is near."""
    return np.clip(np.floor(np.stack([v - BOUNDARY_PX, v + BOUNDARY_PX], -1)), 0, size - 1).astype(int)


def joint_score_error(got: np.ndarray, want: np.ndarray, want_inputres: np.ndarray, heatmap: np.ndarray) -> tuple[float, int]:
    """(largest joint-score error relative to the largest official score, number of boundary joints)."""
    people, joints = want.shape[:2]
    h, w = heatmap.shape[1:]
    xs, ys = _cells(want_inputres[..., 0], w), _cells(want_inputres[..., 1], h)  # (P, J, 2)
    j = np.broadcast_to(np.arange(joints)[None, :, None, None], (people, joints, 2, 2))
    samples = heatmap[j, ys[..., :, None], xs[..., None, :]].reshape(people, joints, 4)  # (P, J, 4)
    boundary = (xs[..., 0] != xs[..., 1]) | (ys[..., 0] != ys[..., 1])

    err = np.abs(got[..., 2] - want[..., 2])
    for p in np.nonzero(boundary.any(1))[0]:
        clear = np.nonzero(~boundary[p])[0]
        anchor = clear[np.argmax(samples[p, clear, 0])]  # the clearest joint fixes the person's centre score
        centre = got[p, anchor, 2] / samples[p, anchor, 0]
        for k in np.nonzero(boundary[p])[0]:
            candidates = centre * samples[p, k]
            err[p, k] = min(err[p, k], max(np.abs(candidates - want[p, k, 2]).min(),
                                           np.abs(candidates - got[p, k, 2]).min()))
    return float(err.max() / np.abs(want[..., 2]).max()), int(boundary.sum())
