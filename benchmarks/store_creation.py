"""How long a fresh embedded MLflow store takes to create, and how often creation fails.

Each of N creations runs in a new process (as a first ``convscope train`` would):
``MlflowClient("sqlite:///<new folder>/mlflow.db").search_experiments()``, which
creates the database and runs all of MLflow's schema migrations. Prints
min/median/max seconds, the failures and their exception names, the SQLAlchemy
and alembic versions of the interpreter that ran them, and the device.

    python benchmarks/store_creation.py [-n 10] [--python /other/venv/bin/python]

``--python`` measures another environment (e.g. a venv with a different SQLAlchemy).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_description  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

BARE = """
import sys
from mlflow import MlflowClient
MlflowClient(f"sqlite:///{sys.argv[1]}/mlflow.db").search_experiments()
"""

VERSIONS = """
import json, sqlalchemy, alembic, mlflow
print(json.dumps({"sqlalchemy": sqlalchemy.__version__, "alembic": alembic.__version__, "mlflow": mlflow.__version__}))
"""


def failure_name(stderr: str) -> str:
    """The exception class of the last traceback line (``module.Error: message`` → ``Error``)."""
    for line in reversed(stderr.strip().splitlines()):
        head = line.split(":", 1)[0].strip()
        if head and " " not in head and (head.endswith(("Error", "Exception")) or "." in head):
            return head.rsplit(".", 1)[-1]
    return "unknown"


def create_once(python: str, script: str) -> tuple[float, str | None]:
    """Seconds to create one fresh store, and the failure's exception name (None on success)."""
    with tempfile.TemporaryDirectory(prefix="convscope-store-") as folder:
        start = time.perf_counter()
        done = subprocess.run([python, "-c", script, folder], capture_output=True, text=True, cwd=REPO)
        seconds = time.perf_counter() - start
    return seconds, None if done.returncode == 0 else failure_name(done.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="fresh stores to create (default: 10)")
    parser.add_argument("--python", default=sys.executable, help="interpreter to measure (default: this one)")
    args = parser.parse_args()
    versions = json.loads(subprocess.run([args.python, "-c", VERSIONS], capture_output=True, text=True,
                                         check=True).stdout)
    print(f"device: {device_description()}")
    print(f"python: {args.python}; mlflow {versions['mlflow']}, SQLAlchemy {versions['sqlalchemy']}, "
          f"alembic {versions['alembic']}")
    print(f"creating {args.n} fresh sqlite stores")
    seconds: list[float] = []
    failures: Counter[str] = Counter()
    for index in range(args.n):
        took, failure = create_once(args.python, BARE)
        seconds.append(took)
        if failure:
            failures[failure] += 1
        print(f"  {index + 1:>3}: {took:6.2f} s  {failure or 'ok'}", flush=True)
    print(f"seconds: min {min(seconds):.2f}, median {statistics.median(seconds):.2f}, max {max(seconds):.2f}")
    detail = ", ".join(f"{name} x{count}" for name, count in failures.most_common())
    print(f"failures: {sum(failures.values())}/{args.n}" + (f" ({detail})" if detail else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
