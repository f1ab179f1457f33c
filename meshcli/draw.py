"""Drawing keypoints, skeletons and boxes onto RGB images with OpenCV."""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

# A fixed palette so that person k has the same colour in every frame.
PALETTE = np.array([
    [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
    [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0],
], dtype=np.uint8)


def colour(k: int) -> tuple[int, int, int]:
    return tuple(int(c) for c in PALETTE[k % len(PALETTE)])


def person_colours(rows: dict[str, np.ndarray], count: int) -> list[tuple[int, int, int]]:
    """One colour per row: its track's when the rows are tracked (same person, same colour), else its own."""
    ids = rows.get("track_id")
    return [colour(int(ids[k]) if ids is not None else k) for k in range(count)]


def track_labels(image: np.ndarray, rows: dict[str, np.ndarray], colours: list[tuple[int, int, int]]) -> None:
    """Write each tracked person's id above their box, in place."""
    if "track_id" not in rows:
        return
    for box, tid, rgb in zip(rows["bbox"], rows["track_id"], colours):
        draw_label(image, box, f"#{int(tid)}", rgb)


def draw_skeleton(image: np.ndarray, joints: np.ndarray, links: Sequence[tuple[int, int]],
                  rgb: tuple[int, int, int], visible: np.ndarray | None = None,
                  thickness: int | None = None) -> None:
    """Draw joints (J,>=2 pixel coordinates) and their links in place."""
    h, w = image.shape[:2]
    t = thickness or max(1, round(max(h, w) / 400))
    pts = np.round(joints[:, :2]).astype(np.int64)
    ok = np.isfinite(joints[:, :2]).all(1) if visible is None else visible & np.isfinite(joints[:, :2]).all(1)
    for a, b in links:
        if ok[a] and ok[b]:
            cv2.line(image, tuple(map(int, pts[a])), tuple(map(int, pts[b])), rgb, t, cv2.LINE_AA)
    for j in np.flatnonzero(ok):
        cv2.circle(image, tuple(map(int, pts[j])), t + 1, rgb, -1, cv2.LINE_AA)


def box_thickness(image: np.ndarray) -> int:
    """Line width of boxes and their labels: one pixel per 500 of the image's longer side."""
    return max(1, round(max(image.shape[:2]) / 500))


def draw_box(image: np.ndarray, box_xyxy: np.ndarray, rgb: tuple[int, int, int],
             label: str | None = None) -> None:
    x0, y0, x1, y1 = (int(round(float(v))) for v in box_xyxy)
    cv2.rectangle(image, (x0, y0), (x1, y1), rgb, box_thickness(image), cv2.LINE_AA)
    if label:
        draw_label(image, box_xyxy, label, rgb)


def draw_label(image: np.ndarray, box_xyxy: np.ndarray, label: str, rgb: tuple[int, int, int]) -> None:
    """``label`` just above a box's top-left corner, in place."""
    t = box_thickness(image)
    x0, y0 = (int(round(float(v))) for v in box_xyxy[:2])
    cv2.putText(image, label, (max(0, x0), max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * t, rgb, t,
                cv2.LINE_AA)


def stamp(image: np.ndarray, text: str) -> None:
    """Write a warning banner (e.g. UNTRAINED WEIGHTS) in the top-left corner, in place."""
    h, w = image.shape[:2]
    s = max(0.4, min(h, w) / 700)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, s, 1)
    cv2.rectangle(image, (0, 0), (tw + 8, th + base + 8), (0, 0, 0), -1)
    cv2.putText(image, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, s, (255, 64, 64), 1, cv2.LINE_AA)
