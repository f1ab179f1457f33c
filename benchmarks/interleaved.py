"""Timing side by side for the benchmark scripts: variants run in alternating order each round, medians compared.

Load from other work on a shared machine then hits every variant alike, so ratios mean something where
absolute seconds do not.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved(variants: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds of each variant per round; the order of the variants alternates from round to round."""
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for k in range(rounds):
        for name in list(variants) if k % 2 == 0 else list(variants)[::-1]:
            t0 = time.perf_counter()
            variants[name]()
            seconds[name].append(time.perf_counter() - t0)
    return seconds


def print_table(label: str, seconds: dict[str, list[float]], base: str) -> None:
    """A Markdown table: each variant's median and runs, and its median over ``base``'s."""
    reference = statistics.median(seconds[base])
    print(f"| {label} | median s | runs (s) | vs {base} |\n|---|---|---|---|")
    for name, runs in seconds.items():
        print(f"| {name} | {statistics.median(runs):.2f} | {', '.join(f'{r:.2f}' for r in runs)} "
              f"| {statistics.median(runs) / reference:.2f}x |")
