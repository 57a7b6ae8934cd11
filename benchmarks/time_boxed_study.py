"""Best validation accuracy against wall time for a time-boxed ``convscope search``.

Runs ``convscope search --timeout T`` on ``../shared/data/petimages-sample`` (or ``--data``)
with the default search space, in a fresh runs folder, then reads the study back and prints,
per minute of the budget, the best validation accuracy found so far, plus the trials done,
pruned (and at which epoch) and failed, and the machine.

    python benchmarks/time_boxed_study.py [--timeout 20m] [--jobs 2] [--epochs 12] [-- extra flags]

Not a test: it takes as long as its budget.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_description  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "petimages-sample"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("CONVSCOPE_PETIMAGES", str(DEFAULT_DATA)))
    parser.add_argument("--timeout", default="20m", help="the study's time budget (default: 20m)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default: 2)")
    parser.add_argument("--epochs", type=int, default=12, help="epochs per trial (default: 12)")
    parser.add_argument("--runs-dir", help="keep the study here (default: a temporary folder)")
    parser.add_argument("extra", nargs="*", help="more `convscope search` flags, after --")
    args = parser.parse_args()
    if args.data != "synthetic" and not Path(args.data).is_dir():
        print(f"no photo sample at {args.data}: give --data or CONVSCOPE_PETIMAGES", file=sys.stderr)
        return 2
    runs = Path(args.runs_dir or tempfile.mkdtemp(prefix="convscope-timebox-"))
    command = [sys.executable, "-m", "convscope", "search", "--data", args.data, "--timeout", args.timeout,
               "--jobs", str(args.jobs), "--epochs", str(args.epochs), "--runs-dir", str(runs),
               "--no-visuals", "--quiet", *args.extra]
    print("+", " ".join(command[2:]), flush=True)
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO)
    wall = time.monotonic() - started
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(runs / "optuna" / "journal.log")))
    study = optuna.load_study(study_name="convscope-study", storage=storage)
    trials = study.get_trials(deepcopy=False)
    start = min(t.datetime_start for t in trials if t.datetime_start)
    states = Counter(t.state.name for t in trials)
    pruned_at = Counter(max(t.intermediate_values, default=0) for t in trials if t.state.name == "PRUNED")
    print(f"\n{device_description()}")
    print(f"exit {done.returncode}, wall {wall / 60:.1f} min, trials {dict(states)}, "
          f"pruned after epoch {dict(sorted(pruned_at.items()))}")
    print("minute  best val accuracy  trials complete")
    best, complete = float("nan"), 0
    finished = sorted((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.datetime_complete)
    minutes = int(wall // 60) + 1
    index = 0
    for minute in range(1, minutes + 1):
        while index < len(finished) and (finished[index].datetime_complete - start).total_seconds() <= minute * 60:
            value = finished[index].value
            best = value if best != best or value > best else best
            complete += 1
            index += 1
        print(f"{minute:>6}  {best:>17.4f}  {complete:>15}")
    if finished:
        top = max(finished, key=lambda t: t.value)
        print(f"best trial #{top.number}: {top.value:.4f} {top.params}")
    print(f"study kept in {runs}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
