"""The methods meshcli runs, by name; each module is imported only when used."""
from __future__ import annotations

import importlib

from ..errors import MeshcliError

# method name -> (module, task verb)
METHODS: dict[str, tuple[str, str]] = {
    "dekr": ("meshcli.methods.dekr", "pose"),
    "hmr": ("meshcli.methods.hmr", "body"),
    "spin": ("meshcli.methods.spin", "body"),
    "i2l": ("meshcli.methods.i2l", "body"),
    "srn": ("meshcli.methods.srn", "hand"),
}


def method_module(name: str):
    if name not in METHODS:
        raise MeshcliError(None, f"unknown method {name!r}", f"choose one of {', '.join(METHODS)}")
    return importlib.import_module(METHODS[name][0])


def methods_for(task: str) -> list[str]:
    return [m for m, (_, t) in METHODS.items() if t == task]
