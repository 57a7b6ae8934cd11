"""Trials per hour and training photos/s per trial of a timed study of a photo folder, before and now.

Both studies run the same fixed network (so every trial costs the same) for ``--epochs`` epochs on
``--train-limit`` photos of ``--data`` for ``--minutes``, in fresh runs folders, with the decode cache
already warm (the first decode is measured by ``decode_speed.py``):

- before: what a study did before it had defaults for photo folders: one worker (``--jobs 1``, which
  trains on all cores but one), every epoch's pictures and probe activations kept
  (``--visual-epochs all``, ``--keep-all``);
- now: the defaults (one single-threaded worker per core, the first and last epoch's pictures).

Prints trials finished per hour of the budget, the median training photos/s of a trial's epochs,
the runs folder's MB per trial, and the ratios now / before.

    python benchmarks/photo_study_throughput.py --data /tmp/devset [--minutes 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_description  # noqa: E402

FIXED = ["--depth", "4", "--base-width", "24", "--growth", "2", "--dropout", "0.1", "--lr", "0.005",
         "--weight-decay", "0.001", "--pruner", "none", "--test-fraction", "0", "--final-share", "0",
         "--no-tensorboard", "--quiet"]


def study(data: str, minutes: float, epochs: int, limit: int, cache: str, extra: list[str]) -> dict[str, float]:
    import optuna
    from mlflow import MlflowClient

    with tempfile.TemporaryDirectory(prefix="photo-study-") as runs:
        command = [sys.executable, "-m", "convscope", "search", "--data", data, "--runs-dir", runs, "--cache-dir", cache,
                   "--timeout", f"{minutes * 60:.0f}", "--epochs", str(epochs), "--train-limit", str(limit),
                   *FIXED, *extra]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"convscope search failed ({done.returncode}):\n{done.stderr[-3000:]}")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
            str(Path(runs) / "optuna" / "journal.log")))
        trials = optuna.load_study(study_name="convscope-study", storage=storage).trials
        finished = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        client = MlflowClient(f"sqlite:///{Path(runs) / 'mlflow.db'}")
        speeds = [m.value for t in finished for m in client.get_metric_history(t.user_attrs["mlflow_run_id"],
                                                                             "images_per_second")]
        size = sum(p.stat().st_size for p in Path(runs).rglob("*") if p.is_file()) / 1e6
        return {"trials_per_hour": len(finished) / (minutes / 60), "photos_per_second": statistics.median(speeds),
                "mb_per_trial": size / max(1, len(finished)), "finished": len(finished)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-limit", type=int, default=4000)
    args = parser.parse_args()
    print(f"machine: {device_description()}, {os.cpu_count()} cores, load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="photo-study-cache-") as cache:
        warm = [sys.executable, "-m", "convscope", "train", "--data", args.data, "--cache-dir", cache, "--epochs", "1",
                "--train-limit", "64", "--no-visuals", "--no-mlflow", "--no-tensorboard", "--runs-dir",
                str(Path(cache) / "warm")]
        subprocess.run(warm, capture_output=True, check=True)
        before = study(args.data, args.minutes, args.epochs, args.train_limit, cache,
                       ["--jobs", "1", "--visual-epochs", "all", "--keep-all"])
        now = study(args.data, args.minutes, args.epochs, args.train_limit, cache, [])
    print(f"{args.minutes:g}-minute studies, {args.epochs} epochs of {args.train_limit:,} photos a trial:")
    print(f"{'':<22}{'before':>10}{'now':>10}{'now / before':>14}")
    for key, label in (("trials_per_hour", "trials per hour"), ("photos_per_second", "photos/s per trial"),
                       ("mb_per_trial", "MB per trial")):
        print(f"{label:<22}{before[key]:>10.1f}{now[key]:>10.1f}{now[key] / before[key]:>13.2f}×")
    print(f"trials finished: before {before['finished']}, now {now['finished']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
