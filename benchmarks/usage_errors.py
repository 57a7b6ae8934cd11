"""How long a usage error takes: wall time from process start to exit, against Python's own start-up.

A usage error (a bad flag value, an unknown flag, a missing config file) should be
reported as soon as the command line is read: before torch, MLflow or Optuna are
imported, let alone a store opened. Each representative case runs N times in a new
process (the rounds interleave the cases, after one untimed warm-up round), in a fresh
temporary working directory with ``--runs-dir`` inside it and no ``CONVSCOPE_*`` or
``MLFLOW_*`` variable from outside. Prints min/median/max seconds and the exit code of
each case, the same for ``python -c "pass"`` (interpreter start-up) and
``python -c "import torch"`` (the heavy import a usage error must not wait for), each
median over the torch import's median, and the device.

    python benchmarks/usage_errors.py [-n 5] [--source DIR] [--python /other/venv/bin/python]

``--source DIR`` runs convscope from another source tree, e.g. an older commit checked out
with ``git worktree add /tmp/old <commit>``: DIR goes first on ``PYTHONPATH`` and the
command is ``python -m <module>``, the module of ``[project.scripts] convscope =
"module:main"`` in DIR/pyproject.toml (the interpreter's own editable install of convscope stays
behind DIR). Without it, this repository is measured the same way.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_description  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

# (label, arguments after the module; RUNS stands for <tmp>/runs); missing.yaml is relative
# to the temporary working directory, where it does not exist
RUNS = "<runs>"
CASES: list[tuple[str, list[str]]] = [
    ("train --epochs 0", ["train", "--epochs", "0", "--runs-dir", RUNS]),
    ("train --nope", ["train", "--nope", "--runs-dir", RUNS]),
    ("search --trials 0", ["search", "--trials", "0", "--runs-dir", RUNS]),
    ("depth --folds 1", ["depth", "--folds", "1", "--runs-dir", RUNS]),
    ("train --config missing.yaml", ["train", "--config", "missing.yaml", "--runs-dir", RUNS]),
    ("train --lr nan", ["train", "--lr", "nan", "--runs-dir", RUNS]),
]
BASELINES: list[tuple[str, list[str]]] = [
    ('python -c "pass"', ["-c", "pass"]),
    ('python -c "import torch"', ["-c", "import torch"]),
]
TORCH = BASELINES[1][0]


@dataclass
class Timing:
    label: str
    argv: list[str]  # after the interpreter
    seconds: list[float]
    codes: set[int]


def console_module(source: Path) -> str:
    """The module of the ``convscope`` console script in ``source``/pyproject.toml."""
    file = source / "pyproject.toml"
    try:
        target = tomllib.loads(file.read_text())["project"]["scripts"]["convscope"]
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError) as error:
        raise SystemExit(f"{file}: no [project.scripts] convscope entry ({type(error).__name__}: {error})") from None
    module, _, function = str(target).partition(":")
    if not module or function != "main":
        raise SystemExit(f"{file}: expected convscope = \"module:main\", found {target!r}")
    return module


def clean_env(source: Path) -> dict[str, str]:
    """This environment without convscope's or MLflow's settings, ``source`` first on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVSCOPE_", "MLFLOW_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")]))
    return env


def run_once(python: str, argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Seconds from start to exit of one new process, and its exit code."""
    with tempfile.TemporaryDirectory(prefix="convscope-usage-") as folder:
        args = [str(Path(folder) / "runs") if arg == RUNS else arg for arg in argv]
        start = time.perf_counter()
        done = subprocess.run([python, *args], cwd=folder, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        return time.perf_counter() - start, done.returncode


def measure(python: str, timings: list[Timing], env: dict[str, str], repeats: int, warmup: int) -> None:
    """Round-robin over ``timings`` so that drift in the machine's load spreads over all of them."""
    for round_index in range(warmup + repeats):
        for timing in timings:
            seconds, code = run_once(python, timing.argv, env)
            if round_index >= warmup:
                timing.seconds.append(seconds)
                timing.codes.add(code)
        print(f"  round {round_index + 1}/{warmup + repeats}{' (warm-up)' if round_index < warmup else ''}",
              file=sys.stderr, flush=True)


def cpu_summary() -> str:
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("model name")), model)
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {os.cpu_count()} cores ({affinity} usable)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5, help="timed runs of every case (default: 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default: 1)")
    parser.add_argument("--source", type=Path, default=REPO,
                        help="source tree to run convscope from (default: this repository)")
    parser.add_argument("--python", default=sys.executable, help="interpreter to run (default: this one)")
    args = parser.parse_args()
    if args.n < 1 or args.warmup < 0:
        parser.error("-n must be at least 1 and --warmup at least 0")
    source = args.source.expanduser().resolve()
    module = console_module(source)
    env = clean_env(source)
    timings = [Timing(label, argv, [], set()) for label, argv in BASELINES]
    timings += [Timing(label, ["-m", module, *argv], [], set()) for label, argv in CASES]
    print(f"device: {device_description()}")
    print(f"machine: {cpu_summary()}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"python: {args.python}")
    print(f"source: {source} (python -m {module})")
    print(f"{args.n} timed runs each after {args.warmup} warm-up round(s); seconds from process start to exit")
    measure(args.python, timings, env, args.n, args.warmup)
    torch_median = statistics.median(next(t for t in timings if t.label == TORCH).seconds)
    width = max(len(t.label) for t in timings)
    print(f"{'case':<{width}}  {'exit':>4}  {'min':>6}  {'median':>6}  {'max':>6}  median / torch import")
    for timing in timings:
        codes = ",".join(str(code) for code in sorted(timing.codes))
        median = statistics.median(timing.seconds)
        print(f"{timing.label:<{width}}  {codes:>4}  {min(timing.seconds):6.2f}  {median:6.2f}  "
              f"{max(timing.seconds):6.2f}  {median / torch_median:5.2f}x")
    wrong = [t.label for t in timings if t.label not in dict(BASELINES) and t.codes != {2}]
    if wrong:
        print(f"not exit code 2 every time: {', '.join(wrong)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
