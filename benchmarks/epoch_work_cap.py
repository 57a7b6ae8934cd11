"""How fast a device may train before a run's per-epoch work holds it back, measured on any machine.

On a GPU an epoch of the seed network at graphed speed takes hundredths of a second; what a run
does besides training (validation, the visuals' capture, the checkpoint snapshot, and on the
background writer the pictures, statistics, MLflow, TensorBoard and checkpoint files) then decides
its speed. This benchmark runs ``convscope train``'s real epoch loop (``train.run.run``, real
embedded MLflow and TensorBoard stores, the seed preset at 64×64) with the training pass and the
validation pass replaced by a wait that holds no lock, as waiting for a device does. The wait is
``--device-epoch`` seconds: 0 asks how many epochs per second the per-epoch work sustains at all.

It prints, per device epoch, the steady-state epoch wall time (the median after the first
``--warmup`` epochs, once the writer's queue is full) and what that caps training at in images per
second for epochs of ``--images`` images: visuals off, ``--visual-epochs all`` (every epoch's
pictures, training waits for them) and ``--visual-epochs latest`` (what ``auto`` picks on CUDA:
training never waits for pictures), with how many epochs got pictures.

    python benchmarks/epoch_work_cap.py [--epochs 24] [--device-epoch 0 0.067] [--images 20000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # as the convscope command sets them
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EpochClock, device_description  # noqa: E402

import convscope.train.run as run_module  # noqa: E402
from convscope.train.config import build_config  # noqa: E402
from convscope.train.loop import EpochStats  # noqa: E402


def device_stand_ins(epoch_seconds: float, images: int) -> tuple[object, object]:
    """A training pass and a validation pass that take ``epoch_seconds`` (training) without holding
    the GIL and report made-up figures; the final pass with predictions returns a prediction per image."""

    def train_one_epoch(stepper: object, batches: object, **_: object) -> EpochStats:
        time.sleep(epoch_seconds)
        return EpochStats(0.5, 0.5, images, max(epoch_seconds, 1e-9))

    def evaluate(model: torch.nn.Module, batches: object, device: torch.device, *,
                 return_predictions: bool = False, **_: object) -> tuple[EpochStats, torch.Tensor | None]:
        if not return_predictions:
            return EpochStats(0.5, 0.5, 0, 1e-9), None
        labels = torch.cat([labels for _, labels in batches])
        return EpochStats(0.5, 0.5, len(labels), 1e-9), torch.zeros_like(labels)

    return train_one_epoch, evaluate


def steady_epoch_seconds(runs_dir: Path, epochs: int, warmup: int, visual_epochs: str, device_epoch: float,
                         images: int) -> tuple[float, int]:
    """The median epoch wall time after ``warmup`` epochs, and how many epochs got pictures."""
    config = build_config("seed", {
        "data": {"synthetic_size": 1000},
        "optim": {"epochs": epochs, "device": "cpu"},
        "tracking": {"runs_dir": str(runs_dir), "visuals": visual_epochs != "off",
                     "visual_epochs": "all" if visual_epochs == "off" else visual_epochs},
    })
    train, evaluate = device_stand_ins(device_epoch, images)
    run_module.train_one_epoch, run_module.evaluate = train, evaluate  # type: ignore[assignment]
    clock = EpochClock()
    run_module.run(config, on_epoch_end=clock, progress=False, echo=lambda line: None)
    pictures = list((runs_dir / "tensorboard").rglob("events.out.tfevents.*"))
    return statistics.median(clock.epoch_seconds[warmup:]), _epochs_with_pictures(pictures)


def _epochs_with_pictures(event_files: list[Path]) -> int:
    """Epochs (steps above 0) with a saliency picture in the TensorBoard event files."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps = set()
    for path in event_files:
        for event in EventFileLoader(str(path)).Load():
            if any(value.tag == "saliency" for value in event.summary.value) and event.step > 0:
                steps.add(event.step)
    return len(steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--warmup", type=int, default=8, help="epochs dropped: the writer's queue fills meanwhile")
    parser.add_argument("--device-epoch", type=float, nargs="+", default=[0.0, 0.067],
                        help="seconds the device takes per epoch (0.067: 300,000 img/s at 20,000 images)")
    parser.add_argument("--images", type=int, default=20000, help="training images per epoch, for the img/s cap")
    args = parser.parse_args()
    print(f"machine: {device_description()}; per-epoch work of the seed preset at 64x64, {args.epochs} epochs")
    print(f"{'device epoch':>12} {'visuals':>8} {'epoch wall':>11} {'epochs/s':>9} {'img/s cap':>11} "
          f"{'epochs with pictures':>21}")
    for device_epoch in args.device_epoch:
        for visual_epochs in ("off", "all", "latest"):
            with tempfile.TemporaryDirectory() as tmp:
                wall, drawn = steady_epoch_seconds(Path(tmp), args.epochs, args.warmup, visual_epochs, device_epoch,
                                                   args.images)
            shown = "-" if visual_epochs == "off" else f"{drawn} of {args.epochs}"
            print(f"{device_epoch:>11.3f}s {visual_epochs:>8} {wall:>10.3f}s {1 / wall:>9.1f} "
                  f"{args.images / wall:>11,.0f} {shown:>21}", flush=True)


if __name__ == "__main__":
    main()
