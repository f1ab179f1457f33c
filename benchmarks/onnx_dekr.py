"""DEKR's network on ONNX Runtime vs meshcli's PyTorch CPU path, side by side: is an ORT backend worth offering?

    pip install "meshcli[onnx]"
    python benchmarks/onnx_dekr.py [--height 512 --width 960 --rounds 3]

Exports what ``--backend onnxruntime`` runs: the network in its inference form (BatchNorm folded, the
transitions branchwise) short of the offset head, which runs at the centre peaks in PyTorch with either
backend. Runs both on the same random input of the flip-test batch (2 images), interleaved, and prints the
median time of each, the ratio, and the largest output difference. The weights are untrained: the cost of a
forward does not depend on them.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import meshcli  # noqa: E402
from meshcli.methods.dekr import DekrHeads  # noqa: E402
from meshcli.models.onnx_backend import OnnxRuntimeNetwork  # noqa: E402

from interleaved import interleaved, print_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=960)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    predictor = meshcli.load("dekr", random_weights=True)
    model = predictor.model
    t0 = time.perf_counter()
    onnx = OnnxRuntimeNetwork(DekrHeads(model), ("heatmap", "offset_features"))  # what --backend onnxruntime runs
    export_s = time.perf_counter() - t0
    x = torch.randn(2, 3, args.height, args.width).contiguous(memory_format=torch.channels_last)

    def run_torch():
        with torch.inference_mode():
            return [t.numpy() for t in model.heads(x)]

    def run_ort():
        return [t.numpy() for t in onnx(x)]

    difference = max(float(np.abs(a - b).max()) for a, b in zip(run_torch(), run_ort()))  # also warms both up
    seconds = interleaved({"torch": run_torch, "onnxruntime": run_ort}, args.rounds)
    print(f"DEKR network short of the offset head, batch 2 x {args.height}x{args.width}, "
          f"{torch.get_num_threads()} threads, "
          f"median of {args.rounds} interleaved; largest output difference {difference:.2e}; export and "
          f"session {export_s:.1f} s (once per checkpoint: the store keeps the graph)")
    print_table("backend", seconds, base="torch")

if __name__ == "__main__":
    main()
