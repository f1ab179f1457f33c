"""Parsing option values given as text (CLI) or numbers (Python API), with one-line errors."""
from __future__ import annotations

import numpy as np

from .errors import MeshcliError


def parse_floats(value, count: int | None, option: str, example: str) -> tuple[float, ...]:
    """"a,b,..." text or numbers -> ``count`` finite floats (any number when None); for two, one serves both."""
    try:
        numbers = ([float(v) for v in value.split(",")] if isinstance(value, str)
                   else [float(v) for v in np.atleast_1d(np.asarray(value, dtype=np.float64))])
    except (ValueError, TypeError):
        numbers = []
    if count == 2 and len(numbers) == 1:
        numbers *= 2
    if (len(numbers) != count if count else not numbers) or not np.isfinite(numbers).all():
        what = f"{count} comma-separated numbers" if count else "a comma-separated list of numbers"
        raise MeshcliError(None, f"{option} {value} is not {what}", f"e.g. {option} {example}")
    return tuple(numbers)


def check_choice(value: str, choices, option: str) -> str:
    if value not in choices:
        raise MeshcliError(None, f"unknown {option} {value}", f"use one of {', '.join(choices)}")
    return value
