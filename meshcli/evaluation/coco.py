"""COCO keypoint AP with pycocotools, for `meshcli eval coco`."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from ..errors import MeshcliError

STAT_NAMES = ("AP", "AP .5", "AP .75", "AP (M)", "AP (L)", "AR", "AR .5", "AR .75", "AR (M)", "AR (L)")


def evaluate_keypoints(results: str | Path, annotations: str | Path) -> dict[str, float]:
    """pycocotools' keypoint AP/AR of ``results`` (COCO results JSON) against ``annotations``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    results, annotations = Path(results), Path(annotations)
    for path in (results, annotations):
        if not path.is_file():
            raise MeshcliError(path, "no such file", "check the path")
    try:
        records = json.loads(results.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MeshcliError(results, f"not valid JSON ({err})",
                           "give the .coco.json that `meshcli pose` wrote") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) and "image_id" in r for r in records):
        raise MeshcliError(results, "not a COCO results list ([{image_id, keypoints, score}, ...])",
                           "give the .coco.json that `meshcli pose` wrote first, the annotations second")
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            gt = COCO(str(annotations))
            gt.getImgIds()
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError, AssertionError, TypeError) as err:
            raise MeshcliError(annotations, f"not a COCO annotation file ({type(err).__name__})",
                               "give person_keypoints_*.json (results first, annotations second)") from None
        known = set(gt.getImgIds())
        records = [r for r in records if r["image_id"] in known]
        if not records:
            raise MeshcliError(results, "no result has an image_id of the annotation file",
                               "image ids come from COCO file names such as 000000000785.jpg")
        dt = gt.loadRes(records)
        ev = COCOeval(gt, dt, "keypoints")
        ev.params.imgIds = sorted({r["image_id"] for r in records})
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(STAT_NAMES, (float(v) for v in ev.stats)))
