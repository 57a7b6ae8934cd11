"""Why the embedded study storage is a journal file: N processes hammering one study.

Each worker process runs fast trials (a trivial objective, so storage access
dominates) on one shared study, stored either in SQLite (Optuna's default
``sqlite:///`` RDB storage) or in Optuna's journal file. Prints, per storage,
the trials recorded, the workers that crashed and why ("database is locked"),
and the wall time.

    python benchmarks/storage_contention.py [--workers 8] [--trials 40]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_description  # noqa: E402


def open_storage(kind: str, folder: str) -> optuna.storages.BaseStorage | str:
    if kind == "sqlite":
        return f"sqlite:///{folder}/study.db"
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(f"{folder}/journal.log"))


def worker(kind: str, folder: str, trials: int, errors: multiprocessing.Queue) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        study = optuna.load_study(study_name="s", storage=open_storage(kind, folder))
        study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=trials)
    except Exception as error:  # what a study worker would die of
        errors.put(f"{type(error).__name__}: {str(error).splitlines()[0][:80]}")


def measure(kind: str, workers: int, trials: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        optuna.create_study(study_name="s", storage=open_storage(kind, folder))
        errors: multiprocessing.Queue = multiprocessing.Queue()
        start = time.perf_counter()
        processes = [multiprocessing.Process(target=worker, args=(kind, folder, trials, errors)) for _ in range(workers)]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        seconds = time.perf_counter() - start
        recorded = len(optuna.load_study(study_name="s", storage=open_storage(kind, folder)).trials)
        failures = [errors.get() for _ in range(errors.qsize())]
    print(f"{kind:8s}: {recorded:4d} of {workers * trials} trials recorded in {seconds:5.1f} s; "
          f"{len(failures)} of {workers} workers crashed" + (f" ({failures[0]})" if failures else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--trials", type=int, default=40)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    print(f"device: {device_description()}; {args.workers} processes x {args.trials} trials on one study")
    for kind in ("sqlite", "journal"):
        measure(kind, args.workers, args.trials)


if __name__ == "__main__":
    main()
