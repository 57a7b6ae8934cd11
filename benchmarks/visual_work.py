"""CPU seconds of one epoch's visuals for the seed network, run inline into real MLflow (sqlite) and
TensorBoard sinks — the work the background writer does beside the training, without the noise of
a training run around it (``visual_overhead.py`` measures that). Run it on two checkouts to
compare them: ``PYTHONPATH=<other checkout> python benchmarks/visual_work.py``.

    python benchmarks/visual_work.py [--epochs 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_description, seed_visuals  # noqa: E402

from convscope.pictures.epoch_visuals import EpochVisuals  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8, help="epochs of visuals timed after one warm-up")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)  # as on the background writer
    code = Path(sys.modules[EpochVisuals.__module__].__file__ or "").resolve().parent.parent
    print(f"device: {device_description()}; code from {code}")
    with tempfile.TemporaryDirectory() as tmp:
        model, visuals, sinks = seed_visuals(Path(tmp), "visual-work")
        cpu, wall = [], []
        for step in range(1, args.epochs + 1):
            started_cpu, started_wall = time.process_time(), time.perf_counter()
            visuals.log(model, step=step)
            cpu.append(time.process_time() - started_cpu)
            wall.append(time.perf_counter() - started_wall)
        sinks.close()
    print(f"per epoch: {statistics.median(cpu):.3f} s CPU, {statistics.median(wall):.3f} s wall "
          f"(median of {args.epochs}; CPU: {', '.join(f'{s:.3f}' for s in cpu)})")


if __name__ == "__main__":
    main()
