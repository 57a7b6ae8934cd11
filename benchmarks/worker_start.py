"""What K workers cost before they train: ``--workers-in processes`` against ``threads``, same run.

Runs the same short ``convscope search`` (K trials of one epoch on a few hundred images of a large
synthetic set, so that a trial is mostly its start) once with the K workers as processes and once
as threads of the command's process, and prints for each:

- when the first trials began, in seconds after the command started (a worker process spawns
  and imports first; a thread does not);
- the whole command's wall time (each worker process also generates the synthetic set for
  itself; threads share the one the first of them generates).

On a GPU each worker process also creates its own CUDA context, which this does not show on a CPU.
The fixed cost matters where a study is short: the GPU study rows of ``benchmarks/gpu.py``.

    python benchmarks/worker_start.py [--workers 2] [--synthetic-size 25000] [--device auto]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_description  # noqa: E402

from convscope.search.storage import open_storage, resolve_storage  # noqa: E402
from convscope.train.loop import select_device  # noqa: E402


def one_way(workers_in: str, workers: int, synthetic_size: int, device: torch.device) -> tuple[list[float], float]:
    """Seconds after the command's start at which its trials began, and its wall seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        jobs = ["--trials-per-gpu", str(workers)] if device.type == "cuda" else ["--jobs", str(workers)]
        command = [sys.executable, "-m", "convscope", "search", "--runs-dir", tmp, "--device", str(device),
                   "--trials", str(workers), *jobs, "--workers-in", workers_in, "--epochs", "1",
                   "--synthetic-size", str(synthetic_size), "--train-limit", "512", "--pruner", "none", "--quiet"]
        start = time.time()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        wall = time.time() - start
        if done.returncode != 0:
            raise SystemExit(f"--workers-in {workers_in} failed:\n{done.stderr[-2000:]}")
        study = optuna.load_study(study_name="convscope-study", storage=open_storage(resolve_storage(Path(tmp))))
        return sorted(t.datetime_start.timestamp() - start for t in study.trials if t.datetime_start), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--synthetic-size", type=int, default=25_000, help="the gpu.py study rows' size")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    device = select_device(args.device)
    print(f"device: {device_description(device)}")
    print(f"{args.workers} workers, {args.workers} trials of 1 epoch on 512 of {args.synthetic_size:,} synthetic images")
    walls = {}
    for workers_in in ("processes", "threads"):
        starts, wall = one_way(workers_in, args.workers, args.synthetic_size, device)
        walls[workers_in] = wall
        began = ", ".join(f"{start:.1f}" for start in starts)
        print(f"--workers-in {workers_in:<9}  trials began after {began} s   command {wall:5.1f} s")
    print(f"threads: {walls['processes'] / walls['threads']:.2f}x as fast as processes for this start-bound study")


if __name__ == "__main__":
    main()
