"""What the study's pruners would do to real trials: which they stop, when, and what that costs.

Runs a time-boxed ``convscope search`` on the PetImages sample with pruning off (``--pruner none``),
so every trial's whole validation-accuracy curve is known, then replays each pruner that
``search.pruning.make_pruner`` builds (median, hyperband) over those curves, trial by trial in the
order they started (a sequential replay: the real study, with ``--jobs 2``, lets a pruner see fewer
finished trials). Per pruner it prints the trials stopped and at which epochs, the epochs saved,
whether the best trial (by final accuracy) would have been stopped, and the best final accuracy
among the trials it lets finish.

    python benchmarks/pruner_audit.py [--data ../shared/data/petimages-sample] [--timeout 20m]
                                      [--epochs 10] [--reuse RUNS_DIR]
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_description  # noqa: E402

from convscope.search.pruning import make_pruner, pruning_start  # noqa: E402
from convscope.tracking.layout import RunsLayout  # noqa: E402

STUDY = "pruner-audit"
SPACE = ["--padding", "1", "--head", "flatten,gap", "--head-activation", "on", "--label-smoothing", "on"]


def run_study(runs_dir: Path, data: str, timeout: str, epochs: int, jobs: int) -> float:
    command = [sys.executable, "-m", "convscope", "search", "--data", data, "--timeout", timeout, "--jobs", str(jobs),
               "--epochs", str(epochs), "--pruner", "none", "--study-name", STUDY, "--runs-dir", str(runs_dir),
               "--device", "cpu", "--quiet", *SPACE]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"the study failed (exit {done.returncode})")
    return time.perf_counter() - start


def curves(runs_dir: Path) -> list[dict[int, float]]:
    """Every completed trial's validation accuracy per epoch, in the order the trials started."""
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(RunsLayout(runs_dir).study_journal)))
    study = optuna.load_study(study_name=STUDY, storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.intermediate_values]
    done.sort(key=lambda t: t.datetime_start)
    return [dict(t.intermediate_values) for t in done]


def _patient(pruner: optuna.pruners.BasePruner, patience: int) -> optuna.pruners.BasePruner:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.pruners.PatientPruner(pruner, patience=patience)


def candidates(epochs: int) -> dict[str, optuna.pruners.BasePruner]:
    """The pruners ``--pruner`` offers, and variants of them to compare against."""
    first = pruning_start(epochs).first_epoch
    return {
        "median": make_pruner("median", epochs),
        "hyperband": make_pruner("hyperband", epochs),
        f"median from epoch {first + 2}": optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=first + 2),
        # Optuna's percentile is the share kept: 75 keeps the top three quarters, stops the bottom quarter
        "bottom quarter (percentile 75)": optuna.pruners.PercentilePruner(75.0, n_startup_trials=3,
                                                                        n_warmup_steps=first),
        "top quarter only (percentile 25)": optuna.pruners.PercentilePruner(25.0, n_startup_trials=3,
                                                                          n_warmup_steps=first),
        "median, patience 2 epochs": _patient(make_pruner("median", epochs), 2),
    }


def replay(pruner: optuna.pruners.BasePruner, recorded: list[dict[int, float]]) -> dict[str, object]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", pruner=pruner, sampler=optuna.samplers.RandomSampler(seed=0))
    stopped: dict[int, int] = {}
    for number, curve in enumerate(recorded):
        trial = study.ask()
        for epoch in sorted(curve):
            trial.report(curve[epoch], epoch)
            if epoch < max(curve) and trial.should_prune():
                stopped[number] = epoch
                break
        if number in stopped:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, curve[max(curve)])
    finals = [curve[max(curve)] for curve in recorded]
    best = max(range(len(finals)), key=finals.__getitem__)
    kept = [finals[i] for i in range(len(finals)) if i not in stopped]
    saved = sum(max(recorded[i]) - epoch for i, epoch in stopped.items())
    return {
        "stopped": len(stopped), "at": dict(sorted(collections.Counter(stopped.values()).items())),
        "saved": saved, "total": sum(max(c) for c in recorded), "best_stopped": best in stopped,
        "best_kept": max(kept) if kept else float("nan"), "best": finals[best],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("CONVSCOPE_PETIMAGES", str(REPO.parent / "shared/data/petimages-sample")))
    parser.add_argument("--timeout", default="20m")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--reuse", type=Path, help="replay the study already in this runs folder")
    parser.add_argument("--keep", type=Path, help="run the study in this runs folder and keep it (for --reuse)")
    args = parser.parse_args()
    print(f"device: {device_description()}")
    with tempfile.TemporaryDirectory() as tmp:
        runs_dir = args.reuse or args.keep or Path(tmp) / "runs"
        if args.reuse is None:
            wall = run_study(runs_dir, args.data, args.timeout, args.epochs, args.jobs)
            print(f"study without pruning: {wall / 60:.1f} min wall, --timeout {args.timeout}, --jobs {args.jobs}, "
                  f"{args.epochs} epochs per trial, {' '.join(SPACE)}")
        recorded = curves(runs_dir)
    print(f"{len(recorded)} completed trials; {pruning_start(args.epochs).describe()}")
    finals = sorted((curve[max(curve)] for curve in recorded), reverse=True)
    print("final val/accuracy, best five: " + ", ".join(f"{v:.4f}" for v in finals[:5]))
    for name, pruner in candidates(args.epochs).items():
        r = replay(pruner, recorded)
        print(f"{name:<34} stops {r['stopped']}/{len(recorded)} trials (at epoch: count {r['at']}), saves "
              f"{r['saved']}/{r['total']} epochs ({100 * r['saved'] / max(1, r['total']):.0f}%); best trial "
              f"{'STOPPED' if r['best_stopped'] else 'kept'}; best kept {r['best_kept']:.4f} vs best {r['best']:.4f}")


if __name__ == "__main__":
    main()
