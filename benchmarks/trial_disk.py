"""What a study's trials leave on disk: megabytes per trial by part of the runs folder, with the
defaults and with ``--keep-all`` (every epoch's pictures and activations and every checkpoint: what
every trial kept before a study's trials kept only the first and last epoch's).

Runs the same short study twice (same seed, same photos, a fresh runs folder each, one shared decode
cache outside both) and prints, per variant, the runs folder's size per finished trial split into
checkpoints, the logged networks (MLflow models), the other MLflow artifacts, TensorBoard, the MLflow
database and the study journal, the total besides the networks, and the ratio of the totals. The
decode cache is left out: it is the photos', shared by every trial.

    python benchmarks/trial_disk.py --data ../shared/data/petimages-sample --trials 4 --epochs 12
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_description  # noqa: E402

PARTS = ("checkpoints", "mlflow models", "other mlflow artifacts", "tensorboard", "mlflow.db", "optuna journal")
FOLDERS = {"checkpoints": "checkpoints", "tensorboard": "tensorboard", "mlflow.db": "mlflow.db", "optuna journal": "optuna"}


def size_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 1e6
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6 if path.exists() else 0.0


def run_study(data: str, trials: int, epochs: int, cache: str, extra: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="trial-disk-") as runs:
        command = [sys.executable, "-m", "convscope", "search", "--data", data, "--runs-dir", runs, "--cache-dir", cache,
                   "--trials", str(trials), "--fix", f"epochs={epochs}", "--pruner", "none", "--test-fraction", "0",
                   "--quiet", *extra]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"convscope search failed ({done.returncode}):\n{done.stderr[-3000:]}")
        root = Path(runs)
        sizes = {part: size_mb(root / folder) for part, folder in FOLDERS.items()}
        sizes["mlflow models"] = sum(size_mb(model) for model in (root / "mlartifacts").rglob("artifacts/model"))
        sizes["other mlflow artifacts"] = size_mb(root / "mlartifacts") - sizes["mlflow models"]
        return {part: sizes[part] / trials for part in PARTS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=12)
    args, extra = parser.parse_known_args()
    print(f"machine: {device_description()}")
    print(f"study: convscope search --data {args.data} --trials {args.trials} --fix epochs={args.epochs} "
          f"--pruner none {' '.join(extra)}")
    with tempfile.TemporaryDirectory(prefix="trial-disk-cache-") as cache:
        kept = run_study(args.data, args.trials, args.epochs, cache, [*extra, "--keep-all"])
        default = run_study(args.data, args.trials, args.epochs, cache, extra)
    print(f"{'MB per trial':<24}{'--keep-all':>12}{'default':>10}")
    for part in PARTS:
        print(f"{part:<24}{kept[part]:>12.2f}{default[part]:>10.2f}")
    total_kept, total_default = sum(kept.values()), sum(default.values())
    print(f"{'total':<24}{total_kept:>12.2f}{total_default:>10.2f}")
    print(f"{'total besides networks':<24}{total_kept - kept['mlflow models']:>12.2f}"
          f"{total_default - default['mlflow models']:>10.2f}")
    print(f"default / --keep-all: {total_default / total_kept:.2f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
