"""``--backend onnxruntime``: a network exported once to ONNX and run by ONNX Runtime on the CPU.

For DEKR the export is the network in the form meshcli runs it (BatchNorm folded, the transitions branchwise)
short of its offset head, which runs at the centre peaks in PyTorch with either backend (``DekrHeads``).
Measured on this project's 2-core CPU (``benchmarks/onnx_dekr.py``, interleaved runs), that part of DEKR takes
0.84x the PyTorch path's time on a quiet machine, outputs within 3e-7 of it. Batch, height and width are left
free, so one graph serves every input size. Exporting takes seconds, so the graph
of a checkpoint is kept in the weights store (``onnx/``, named by the checkpoint's sha256) and later runs load
it; untrained weights are traced every time.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import MeshcliError

BACKENDS = ("torch", "onnxruntime")
GRAPH_VERSION = 3  # changes when what the export traces changes: cached graphs of older versions are not used
EXAMPLE_SIZE = 128  # side of the traced example input: any multiple of 32 works, a small one traces fastest


def check_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise MeshcliError(None, f"unknown --backend {backend!r}", f"use one of {', '.join(BACKENDS)}")
    if backend == "onnxruntime" and device.type != "cpu":
        raise MeshcliError(None, f"--backend onnxruntime runs on the CPU; this run is on {device.type}",
                           "use --device cpu, or --backend torch on the GPU")
    return backend


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise MeshcliError(None, "--backend onnxruntime needs ONNX Runtime, which is not installed",
                           'pip install "meshcli[onnx]", or use --backend torch') from None
    return onnxruntime


class OnnxRuntimeNetwork:
    """Calls like the network it was exported from: an NCHW float32 batch in, its output tensors out."""

    def __init__(self, model: nn.Module, output_names: tuple[str, ...], cached: Path | None = None):
        ort = _onnxruntime()
        if cached is not None and cached.is_file():
            graph = cached.read_bytes()
        else:
            graph = export(model, output_names)
            if cached is not None:
                _keep(graph, cached)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # meshcli's thread setting holds here too
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.session.run(None, {"image": x.float().contiguous().numpy()})
        return tuple(torch.from_numpy(o) for o in outputs)


def export(model: nn.Module, output_names: tuple[str, ...]) -> bytes:
    """The ONNX graph of ``model`` (image batch in; batch, height and width free)."""
    example = torch.zeros(1, 3, EXAMPLE_SIZE, EXAMPLE_SIZE)
    free = {0: "batch", 2: "height", 3: "width"}
    graph = io.BytesIO()
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on sizes it records: the graph is checked in tests
        torch.onnx.export(model, (example,), graph, opset_version=17, dynamo=False, input_names=["image"],
                          output_names=list(output_names),
                          dynamic_axes={name: free for name in ("image", *output_names)})
    return graph.getvalue()


def _keep(graph: bytes, path: Path) -> None:
    """Write the graph for later runs; a store that cannot be written to only costs the next run its export."""
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes(graph)
        os.replace(part, path)
    except OSError:
        part.unlink(missing_ok=True)
