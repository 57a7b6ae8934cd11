"""Trials per hour: ``--jobs 2`` vs ``--jobs 1`` on this machine — same study settings, same run.

Every trial trains the seed network (fixed depth, widths and dropout, so every
trial costs the same) for 3 epochs on the synthetic set, with everything on
(MLflow, TensorBoard, per-epoch visuals), on the embedded journal storage.
On a GPU, pass ``--gpu`` to compare ``--trials-per-gpu 8`` (as processes and as threads,
``--workers-in``) with 1.

    python benchmarks/study_throughput.py [--trials 6] [--gpu]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_description  # noqa: E402

from convscope.cli.main import build_parser, parse  # noqa: E402
from convscope.cli.search_cmd import build_settings  # noqa: E402
from convscope.search.session import run_study  # noqa: E402

FIXED = ["--depth", "5", "--base-width", "16", "--growth", "2", "--dropout", "0.1", "--pruner", "none",
         "--fix", "epochs=3", "--fix", "synthetic_size=2500", "--quiet"]


def trials_per_hour(jobs_flag: str, jobs: int, trials: int, workers_in: str = "processes") -> float:
    with tempfile.TemporaryDirectory() as tmp:
        args = parse(build_parser(),
            ["search", "--runs-dir", tmp, "--trials", str(trials), jobs_flag, str(jobs), "--workers-in", workers_in,
             *FIXED]
        )
        settings = build_settings(args)
        start = time.perf_counter()
        study = run_study(settings, quiet=True, echo=lambda line: None)
        seconds = time.perf_counter() - start
        assert len(study.trials) >= trials
    return trials / seconds * 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--gpu", action="store_true", help="compare --trials-per-gpu 8 with 1 on CUDA")
    args = parser.parse_args()
    device = torch.device("cuda") if args.gpu else torch.device("cpu")
    print(f"device: {device_description(device)}")
    if args.gpu:
        label = "--trials-per-gpu"
        one = trials_per_hour(label, 1, args.trials)
        print(f"{label} 1: {one:7.0f} trials/hour")
        for workers_in in ("processes", "threads"):
            many = trials_per_hour(label, 8, max(args.trials, 16), workers_in)
            print(f"{label} 8 ({workers_in}): {many:7.0f} trials/hour  -> {many / one:.2f}x (target >= 4x)")
        return
    one = trials_per_hour("--jobs", 1, args.trials)
    two = trials_per_hour("--jobs", 2, args.trials)
    print(f"seed net, 3 epochs x 2,000 synthetic images per trial, {args.trials} trials per setting")
    print(f"--jobs 1: {one:7.0f} trials/hour")
    print(f"--jobs 2: {two:7.0f} trials/hour  -> {two / one:.2f}x")


if __name__ == "__main__":
    main()
