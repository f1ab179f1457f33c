"""Parsing option values given as text (CLI) or numbers (Python API), with one-line errors."""
from __future__ import annotations

from dataclasses import dataclass

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


SMOOTHERS = ("none", "oneeuro", "offline")


@dataclass
class TemporalOptions:
    """What the track/smooth stage (``meshcli.temporal``) does; checked when made, before any frame is read."""

    track: bool | None = None  # None: for videos and image folders, not for single images
    max_age: int | None = None  # frames; None: half a second at the input's frame rate
    min_hits: int = 1
    smooth: str = "none"
    min_cutoff: float = 1.0
    beta: float = 20.0

    def __post_init__(self):
        check_choice(self.smooth, SMOOTHERS, "--smooth")
        if self.smooth != "none" and self.track is False:
            raise MeshcliError(None, f"--smooth {self.smooth} follows each person's track",
                               "drop --no-track or use --smooth none")
        if self.min_hits < 1 or (self.max_age is not None and self.max_age < 0):
            raise MeshcliError(None, "--track-min-hits must be >= 1 and --track-max-age >= 0",
                               "e.g. --track-min-hits 3 --track-max-age 15")
        if self.min_cutoff <= 0 or self.beta < 0:
            raise MeshcliError(None, "--smooth-min-cutoff must be > 0 and --smooth-beta >= 0",
                               "e.g. --smooth-min-cutoff 1 --smooth-beta 20")
