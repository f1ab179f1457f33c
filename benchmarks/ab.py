"""`meshcli bench` of this checkout against a baseline checkout, side by side: interleaved rounds, medians.

    git -C . worktree add --detach ../wt-baseline 2db47da
    python benchmarks/ab.py --baseline ../wt-baseline --rounds 3 -- IMG --method dekr --random-weights
    python benchmarks/ab.py --baseline ../wt-baseline --new-args="--backend onnxruntime" -- IMG --method dekr ...

Each round runs both checkouts one after the other (the order alternates), each in a fresh process, so load
from other work on the machine hits both alike. Prints the median model stage, end-to-end wall, wall over the
bottleneck's busy time, process CPU time and peak RSS of each side and the ratio new / baseline, as a Markdown
table (``--json`` for the rows).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def bench_once(tree: Path, args: list[str]) -> dict:
    # Run from inside the tree: ``python -m`` puts the working directory ahead of PYTHONPATH.
    env = {**os.environ, "PYTHONPATH": str(tree)}
    args = [str(Path(a).resolve()) if Path(a).exists() else a for a in args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-m", "meshcli", "bench", *args, "--json"], env=env, cwd=tree,
                          capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: meshcli bench failed:\n{done.stdout}\n{done.stderr}")
    result = json.loads(done.stdout)
    return {"model_s": result["stages"]["model"]["seconds"], "wall_s": result["wall_seconds"],
            # wall over the busiest thread's (or pool's, per thread) busy time: 1.0 is perfect overlap
            # (NaN for a checkout whose bench does not report its threads)
            "wall_over_bottleneck": 1 / max(result["threads"].values()) if "threads" in result else math.nan,
            "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
            "peak_rss_mb": result["peak_rss_mb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="checkout to compare against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--label", default="", help="row label (default: the bench arguments)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--new-args", default="",
                        help="extra bench arguments for this checkout only, e.g. --new-args='--backend onnxruntime'")
    parser.add_argument("bench_args", nargs=argparse.REMAINDER, help="-- then the arguments of meshcli bench")
    opts = parser.parse_args()
    args = [a for a in opts.bench_args if a != "--"]
    sides = {"baseline": opts.baseline.resolve(), "new": HERE}
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for r in range(opts.rounds):
        for name in (("baseline", "new") if r % 2 == 0 else ("new", "baseline")):
            runs[name].append(bench_once(sides[name], args + (opts.new_args.split() if name == "new" else [])))
            print(f"round {r + 1} {name}: {runs[name][-1]}", file=sys.stderr, flush=True)
    median = {name: {k: statistics.median(run[k] for run in rows) for k in rows[0]} for name, rows in runs.items()}
    ratio = {k: median["new"][k] / median["baseline"][k] for k in median["new"]}
    label = opts.label or " ".join(args + ([f"(new: {opts.new_args})"] if opts.new_args else []))
    if opts.json:
        print(json.dumps({"label": label, "rounds": opts.rounds, "median": median, "ratio": ratio, "runs": runs}))
        return
    print(f"| {label} | baseline | new | new / baseline |\n|---|---|---|---|")
    for key, name in (("model_s", "model stage s"), ("wall_s", "end to end s"),
                      ("wall_over_bottleneck", "wall / bottleneck busy"), ("cpu_s", "process CPU s"),
                      ("peak_rss_mb", "peak RSS MB")):
        print(f"| {name} | {median['baseline'][key]:.2f} | {median['new'][key]:.2f} | {ratio[key]:.2f} |")


if __name__ == "__main__":
    main()
