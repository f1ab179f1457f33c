"""meshcli: published human pose and mesh methods, one streamed pipeline.

The Python API (imported on first use, so ``import meshcli`` and ``meshcli --help`` load no torch)::

    predictor = meshcli.load("dekr")              # method, variant, weights, device, options
    result = predictor.predict(image)             # PoseResult / BodyResult / HandResult
    summary = meshcli.run("hmr", ["clip.mp4"], "out", smpl="smpl.pkl")   # the CLI's pipeline
    results = meshcli.read("out/clip.npz")        # any NPZ meshcli wrote
"""
__version__ = "0.1.0"

# name -> module that defines it
_LAZY = {"load": "api", "run": "api", "read": "results", "Results": "results", "RunSummary": "pipeline",
         "Predictor": "methods.base", "MeshcliError": "errors", "Frame": "types", "PoseResult": "types",
         "BodyResult": "types", "HandResult": "types", "WeightsInfo": "types"}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'meshcli' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
