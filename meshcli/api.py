"""meshcli as a library: ``load`` a method, ``run`` the pipeline (what the CLI commands call).

Everything a command does before the first frame happens here, once: the
method and variant are looked up in the registry, the weights are resolved
from the store (or ``weights=``) with the same one-line errors as the CLI, the
device is chosen, the method's options are checked, and body methods get their
person source (DEKR, OpenPose, boxes, a fixed box or the whole frame).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import records
from . import weights as store
from .device import check_half, resolve_device
from .errors import MeshcliError
from .io.sinks import coco_sink, mesh_sink
from .methods import METHODS, spec
from .methods.base import Predictor
from .options import TemporalOptions
from .people import BoxesJson, DekrPeople, HogPeople, OpenPoseJson, PersonSource, WholeFrame
from .pipeline import Pipeline, Progress, RunSummary, SinkFactory

DETECTORS = ("dekr", "hog", "full")
DEKR_DETECTOR_VARIANT = "w32-coco"  # the person detector body methods use


def load(method: str, variant: str | None = None, weights: str | Path | None = None, *, device: str = "auto",
         half: bool = False, random_weights: bool = False, **options: Any) -> Predictor:
    """A ready predictor: ``load("hmr", smpl="smpl.pkl").predict(image)``.

    ``weights`` is a checkpoint file (default: the store's for the variant); ``half`` runs the networks (the
    person detector's too) in fp16 autocast, CUDA only; ``random_weights`` builds untrained networks, the
    person detector included (outputs are stamped untrained). ``options`` are the method's own
    (``meshcli.methods.METHODS[method].options``), named as the CLI's options with ``_``.
    """
    method_spec = spec(method)
    unknown = [k for k in options if k not in method_spec.options]
    if unknown:
        owners = [m for m, s in METHODS.items() if all(k in s.options for k in unknown)]
        raise MeshcliError(None, f"{', '.join('--' + k.replace('_', '-') for k in unknown)} only apply to "
                                 f"--method {' or '.join(owners) or '(none)'}",
                           f"drop them{' or use --method ' + owners[0] if owners else ''}")
    variant = method_spec.choose_variant(variant)
    path = store.resolve(method, variant, weights, random_weights)
    dev = resolve_device(device)
    check_half(half, dev)
    if method == "dekr":
        options.update(rescore_options(variant, options.pop("rescore", True), options.pop("rescore_weights", None),
                                       random_weights))
    elif method_spec.task == "body":
        sources = {k: options.pop(k, None) for k in ("detector", "openpose", "boxes")}
        given = [f"--{k}" for k, v in (*sources.items(), ("bbox", options.get("bbox"))) if v is not None]
        if len(given) > 1:
            raise MeshcliError(None, f"{' and '.join(given)} both choose the people to crop",
                               "give only one of --detector, --openpose, --boxes"
                               + (", --bbox" if "bbox" in method_spec.options else ""))
        detect_size = options.pop("detect_size", None)
        if options.get("bbox") is None:
            options["people"] = person_source(**sources, detect_size=detect_size, device=str(dev), half=half,
                                              random_weights=random_weights)
        elif detect_size is not None:
            raise MeshcliError(None, "--detect-size sets the DEKR detector's input, but --bbox gives the person",
                               "drop --detect-size")
    predictor = method_spec.predictor_class()(path, variant=variant, device=dev, **options)
    predictor.half = half
    return predictor


def rescore_options(variant: str, rescore: bool | str, rescore_weights: str | Path | None,
                    random_weights: bool) -> dict[str, Any]:
    """DEKR's rescoring net: the given file, else the store's for the variant's dataset.

    Untrained runs rescore with an untrained net. ``rescore="auto"`` (benchmarks, the person detector)
    rescores when the store has the net and turns rescoring off when it does not.
    """
    if random_weights and rescore_weights is not None:
        raise MeshcliError(rescore_weights, "--rescore-weights is not used with --random-weights (an untrained "
                           "run rescores with an untrained net)", "drop one of the two")
    if not rescore or random_weights:
        return {"rescore": bool(rescore), "rescore_weights": None}
    record = records.record_for("dekr", f"rescore-{variant.split('-', 1)[1]}")
    if rescore_weights is None and not record.present():
        if rescore == "auto":
            return {"rescore": False, "rescore_weights": None}
        raise MeshcliError(record.path, "DEKR's rescoring net is not in the weights store",
                           f"{record.how_to_get()}; or pass --rescore-weights PATH, or --no-rescore")
    return {"rescore": True, "rescore_weights": store.resolve("dekr", record.variant, rescore_weights, False)}


def person_source(detector: str | None = None, openpose: str | Path | None = None, boxes: str | Path | None = None,
                  *, detect_size: int | None = None, device: str = "auto", half: bool = False,
                  random_weights: bool = False) -> PersonSource:
    """Who body methods reconstruct, from --detector / --openpose / --boxes (checked before any frame).

    Without any, DEKR finds the people when its weights are in the store (or with random weights),
    else the whole frame is one person. ``detect_size`` is DEKR's input short side (default its full size).
    """
    chosen = detector
    record = records.record_for("dekr", DEKR_DETECTOR_VARIANT)
    if detector is None and openpose is None and boxes is None:
        detector = "dekr" if record.present() else "full"
    if detector is not None and detector not in DETECTORS:
        raise MeshcliError(None, f"unknown --detector {detector}", f"use one of {', '.join(DETECTORS)}")
    if detect_size is not None and detector != "dekr":
        given = ("--openpose" if openpose is not None else "--boxes" if boxes is not None
                 else f"--detector {detector}" if chosen else "the whole frame (DEKR's weights are not in the store)")
        raise MeshcliError(None, f"--detect-size sets the DEKR detector's input, but people come from {given}",
                           "use --detector dekr (its weights must be in the store) or drop --detect-size")
    if openpose is not None:
        return OpenPoseJson(openpose)
    if boxes is not None:
        return BoxesJson(boxes)
    if detector == "full":
        return WholeFrame()
    if detector == "hog":
        return HogPeople()
    if not random_weights and not record.present():  # --weights is the body network's: never advise it here
        raise MeshcliError(record.path, f"--detector dekr needs DEKR's {record.name} checkpoint, which is not in "
                           "the weights store", f"{record.how_to_get()}; or choose the people with --detector "
                           "hog or full, --boxes or --openpose, or use --random-weights to test the install")
    if detect_size is not None:
        from .methods.dekr import check_input_size

        check_input_size(detect_size, record.input_size, "--detect-size")
    return DekrPeople(load("dekr", DEKR_DETECTOR_VARIANT, device=device, half=half, random_weights=random_weights,
                           rescore="auto", input_size=detect_size))


def run(method: str | Predictor, inputs: str | Path | Sequence[str | Path], out: str | Path = "meshcli_out", *,
        batch_size: int = 8, annotate: bool = True, progress: bool = False, save_mesh: bool = False,
        keep_partial: bool = False, temporal: TemporalOptions | None = None, render_workers: int | None = None,
        **options: Any) -> RunSummary:
    """Run a method over images, folders, globs or videos and write its outputs to ``out``.

    ``method`` is a name (``options`` then go to ``load``) or a loaded predictor. Writes per input the
    annotated image/video (unless ``annotate=False``), the NPZ, and for pose the COCO results JSON; with
    ``save_mesh`` (body methods) an OBJ per person per frame; ``keep_partial`` keeps the outputs of a video
    that ends early (marked incomplete). ``temporal`` sets tracking and smoothing across frames (default: track
    ids for videos and image folders, no smoothing); ``render_workers`` threads draw the overlay (default: one
    per CPU, at most 4). Returns what was written and what failed.
    """
    predictor = method if isinstance(method, Predictor) else load(method, **options)
    if isinstance(method, Predictor) and options:
        raise MeshcliError(None, f"options {', '.join(options)} were given with an already loaded predictor",
                           "give them to meshcli.load")
    args = [str(inputs)] if isinstance(inputs, (str, Path)) else [str(i) for i in inputs]
    pipeline = Pipeline(predictor, out, batch_size=batch_size, annotate=annotate,
                        extra_sinks=output_sinks(predictor, save_mesh), progress=Progress(enabled=progress),
                        keep_partial=keep_partial, temporal=temporal, render_workers=render_workers)
    return pipeline.run(args)


def output_sinks(predictor: Predictor, save_mesh: bool = False) -> list[SinkFactory]:
    """The outputs a task writes besides the NPZ and the annotated media: pose's COCO results JSON, and
    with ``save_mesh`` (body methods) an OBJ per person per frame."""
    if save_mesh and predictor.task != "body":
        raise MeshcliError(None, "--save-mesh only applies to body methods", "drop it")
    sinks: list[SinkFactory] = []
    if predictor.task == "pose":
        sinks.append(coco_sink)
    if save_mesh:
        sinks.append(mesh_sink(predictor.smpl.faces, predictor.meshes_in_camera_space))
    return sinks
