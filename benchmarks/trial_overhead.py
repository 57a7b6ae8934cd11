"""A study's fixed cost per trial: what a trial costs beyond its training, against the same study
with the between-trial cleanup walking the whole heap (the way it was before ``gc.freeze``).

Runs ``convscope search`` (tiny preset, 32x32, 1 epoch of 205 images: almost no training) with 2
and with 8 trials, in fresh processes, alternating the two variants; the marginal cost of a trial
is (time of 8 - time of 2) / 6, so the start-up (imports, stores, the study) cancels out.

    python benchmarks/trial_overhead.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_description  # noqa: E402

RUN = """
import gc, sys
import convscope.search.study
if sys.argv[1] == "full-walk":
    def release_memory():
        gc.collect()
    convscope.search.study.release_memory = release_memory
from convscope.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def study_seconds(variant: str, trials: int, runs_dir: Path) -> float:
    argv = ["search", "--preset", "tiny", "--image-size", "32", "--synthetic-size", "256", "--epochs", "1",
            "--trials", str(trials), "--pruner", "none", "--runs-dir", str(runs_dir), "--quiet"]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", RUN, variant, *argv], cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"device: {device_description()}")
    marginal: dict[str, list[float]] = {"frozen": [], "full-walk": []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for variant in marginal:
                few = study_seconds(variant, 2, Path(tmp) / f"{variant}-{round_}-2")
                many = study_seconds(variant, 8, Path(tmp) / f"{variant}-{round_}-8")
                marginal[variant].append((many - few) / 6)
    for variant, values in marginal.items():
        print(f"{variant:<10} {statistics.median(values):.2f} s per trial  ({', '.join(f'{v:.2f}' for v in values)})")
    print(f"full-walk / frozen: {statistics.median(marginal['full-walk']) / statistics.median(marginal['frozen']):.2f}x")


if __name__ == "__main__":
    main()
