"""`--detect-size`: the DEKR person detector at a smaller input gives boxes in the original image's pixels."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from meshcli.cli import app
from meshcli.methods import dekr
from meshcli.methods.dekr import DekrPredictor
from meshcli.people import DekrPeople
from meshcli.types import Frame

PERSON = np.array([410.0, 90.0, 610.0, 390.0])  # x0 y0 x1 y1 of the bright rectangle, image pixels


class RectangleNet(nn.Module):
    """A stand-in for DEKR's network whose output follows the image: one person, the bright rectangle.

    The centre map peaks at the rectangle's centroid; every pixel regresses the same joints onto the
    rectangle's grid-cell bounds (left joints on its left edge, right joints on its right, the ankles on its
    bottom, the rest on its top), so the keypoints' box is the rectangle as the network input shows it, and
    mirroring the input mirrors the output the way DEKR's flip test expects.
    """

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, height, width = x.shape
        h, w = height // 4, width // 4
        inside = F.avg_pool2d((x[:, :1] > 0).float(), 4)[:, 0] > 0.5  # white is positive once normalised
        ys, xs = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
        heat = torch.full((n, 18, h, w), 0.5)
        offset = torch.zeros((n, 34, h, w))
        for i in range(n):
            cx, cy = xs[inside[i]], ys[inside[i]]
            x0, x1, y0, y1 = cx.min(), cx.max(), cy.min(), cy.max()
            heat[i, 17] = torch.exp(-((xs - cx.mean()) ** 2 + (ys - cy.mean()) ** 2) / 2)
            # edges half a cell outside the outer cells' positions, so that mirroring maps them onto each other
            x0, y0, x1, y1 = x0 - 0.5, y0 - 0.5, x1 + 0.5, y1 + 0.5
            joint_x = torch.stack([(x0 + x1) / 2] + [x0 if k % 2 else x1 for k in range(1, 17)])
            joint_y = torch.stack([y1 if k >= 15 else y0 for k in range(17)])
            offset[i, 0::2] = xs - joint_x[:, None, None]  # DEKR's pose is the pixel minus its offset
            offset[i, 1::2] = ys - joint_y[:, None, None]
        return heat, offset

    def inference_form(self) -> RectangleNet:
        return self  # nothing to fuse: DekrPredictor asks DEKR's network for its fused form

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self(x)  # the dense offsets stand for the offset head's input features

    @staticmethod
    def point_offsets(offset: torch.Tensor, image: torch.Tensor, row: torch.Tensor, column: torch.Tensor
                      ) -> torch.Tensor:
        return offset[image, :, row, column]


@pytest.fixture()
def rectangle_net(monkeypatch):
    """DEKR predictors built in the test run RectangleNet."""
    monkeypatch.setattr(dekr, "build_network", lambda variant: RectangleNet())


def iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    return float(inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter))


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A 720x1000 frame (not square, the person off centre) with one bright rectangle."""
    img = np.zeros((720, 1000, 3), np.uint8)
    x0, y0, x1, y1 = PERSON.astype(int)
    cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), (255, 255, 255), -1)
    return img


@pytest.mark.parametrize("size", [512, 256, 128])
def test_detect_size_boxes_are_in_image_pixels(image, rectangle_net, size):
    detector = DekrPeople(DekrPredictor(None, "w32-coco", "cpu", rescore=False, input_size=size))
    frame = Frame(image, 0, "frame.png")
    people = detector.find([detector.prepare(frame)])[0]
    assert len(people) == 1
    # a grid cell is 4 input pixels, 720 / size * 4 image pixels: the box lies within one cell of the rectangle
    cell = 4 * 720 / size
    np.testing.assert_allclose(people[0].box, PERSON, atol=cell)
    assert iou(people[0].box, PERSON) >= (0.95 if size >= 256 else 0.85)
    assert detector.metadata() == {"detect_size": size}


def meshcli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("value, message", [
    ("100", "--detect-size 100: DEKR's input short side must be a multiple of 64 from 128 to 512"),
    ("1024", "--detect-size 1024: DEKR's input short side must be a multiple of 64 from 128 to 512"),
    ("0", "--detect-size 0: DEKR's input short side must be a multiple of 64 from 128 to 512"),
])
def test_detect_size_refuses_bad_values(tmp_path, value, message):
    run = meshcli("body", tmp_path / "none.png", "--method", "hmr", "--detector", "dekr", "--detect-size", value,
                  "--random-weights", "--out", tmp_path / "out")
    assert run.exit_code != 0
    lines = [line for line in run.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], run.output


@pytest.mark.parametrize("source, given", [
    (["--detector", "full"], "--detector full"),
    (["--boxes", "boxes.json"], "--boxes"),
])
def test_detect_size_needs_the_dekr_detector(tmp_path, source, given):
    (tmp_path / "boxes.json").write_text('{"frames": {}}')
    source = [str(tmp_path / s) if s.endswith(".json") else s for s in source]
    run = meshcli("body", tmp_path / "none.png", "--method", "hmr", *source, "--detect-size", "256",
                  "--random-weights", "--out", tmp_path / "out")
    assert run.exit_code != 0
    assert f"--detect-size sets the DEKR detector's input, but people come from {given}" in run.output


def test_bench_takes_detect_size_and_checks_it(tmp_path):
    run = meshcli("bench", tmp_path / "none.png", "--method", "hmr", "--detect-size", "200", "--detector", "dekr",
                  "--random-weights")
    assert run.exit_code != 0
    assert "--detect-size 200: DEKR's input short side must be a multiple of 64" in run.output


def test_body_crops_the_people_found_at_the_detect_size(tmp_path, image, rectangle_net, fake_smpl):
    cv2.imwrite(str(tmp_path / "frame.png"), image)
    run = meshcli("body", tmp_path / "frame.png", "--method", "hmr", "--detector", "dekr", "--detect-size", "128",
                  "--random-weights", "--smpl", fake_smpl, "--no-annotate", "--out", tmp_path / "out", "--quiet")
    assert run.exit_code == 0, run.output
    npz = np.load(tmp_path / "out" / "frame.npz")
    assert str(npz["detector"]) == "dekr" and int(npz["detect_size"]) == 128
    assert len(npz["bbox"]) == 1 and iou(npz["bbox"][0], PERSON) >= 0.85
