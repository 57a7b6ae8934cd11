"""How fast a device may train before a run's per-epoch work holds it back, measured on any machine.

On a GPU an epoch of the seed network at graphed speed takes hundredths of a second; what a run
does besides training (validation, the visuals' capture, the checkpoint snapshot, and on the
background writer the pictures, statistics, MLflow, TensorBoard and checkpoint files) then decides
its speed. This benchmark runs ``convscope train``'s real epoch loop (``train.run.run``, real
embedded MLflow and TensorBoard stores, the seed preset at 64×64) with the training pass replaced
by what a GPU asks of the training thread: per batch, the torch calls a CUDA run makes (counted on
real batches, ``batch_calls``; each lets the GIL go and takes it back, so the threads beside
training slow it), then a wait that holds no lock until ``--device-epoch`` seconds have passed (0
asks how many epochs per second the per-epoch work sustains at all); validation takes no time.

It prints, per device epoch, the steady-state epoch wall time (the median after the first
``--warmup`` epochs, once the writer's queue is full), how long the epoch's launches took the
training thread (they must fit in the device epoch, or the device waits for them), and what the
wall time caps training at in images per second for epochs of ``--images`` images: visuals off,
``--visual-epochs all`` (every epoch's pictures, training waits for them) and ``--visual-epochs
latest`` (what ``auto`` picks on CUDA: training never waits for pictures), with how many epochs got
pictures.

    python benchmarks/epoch_work_cap.py [--epochs 24] [--device-epoch 0 0.067] [--calls-per-batch N]
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


STEP_CALLS = 5
"""Torch calls of a graphed training step besides its batch: the two copies into the graph's static
inputs, the replay, and the two device hyper-parameters the schedule writes (``train.step``)."""


def batch_calls(batch_size: int) -> int:
    """The torch calls (each lets the GIL go and takes it back) that ``train.batches.DeviceBatches``
    makes per batch of the seed preset on CUDA (``prepared_per_pass``: many batches prepared in one
    pass), counted over a real pass of small images, plus ``STEP_CALLS``."""
    from torch.overrides import TorchFunctionMode

    from convscope.train.batches import DeviceBatches, Normalizer, prepared_per_pass

    class Count(TorchFunctionMode):
        calls = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            if getattr(func, "__name__", "") != "__get__":  # attribute reads (.shape, .device) stay in Python
                self.calls += 1
            return func(*args, **(kwargs or {}))

    optim = build_config("seed").optim
    per_pass = prepared_per_pass(torch.device("cuda"), (3, 64, 64), batch_size)
    images = torch.zeros(per_pass, 3, 8, 8, dtype=torch.uint8)  # a pass's worth; small: only calls are counted
    batches = DeviceBatches(images, torch.zeros(len(images), dtype=torch.long), Normalizer.fit(images), batch_size,
                            shuffle=True, flip=optim.flip, crop_padding=optim.crop_padding, drop_last=True,
                            per_pass=per_pass)
    with Count() as count:
        for _ in batches:
            pass
    return round(count.calls / len(batches)) + STEP_CALLS


def device_stand_ins(epoch_seconds: float, images: int, launch_batches: int, calls_per_batch: int,
                     launches: list[float]) -> tuple[object, object]:
    """A training pass that makes ``calls_per_batch`` tiny torch calls for each of ``launch_batches``
    batches (what launching a graphed epoch on a GPU asks of the training thread) and then waits,
    holding no lock, until ``epoch_seconds`` have passed since it began (the device working through
    its queue meanwhile), appending the seconds its calls took to ``launches``; and a validation pass
    that reports made-up figures (the final pass with predictions returns a prediction per image)."""

    tiny = torch.zeros(8)

    def train_one_epoch(stepper: object, batches: object, **_: object) -> EpochStats:
        start = time.perf_counter()
        for _ in range(launch_batches):
            for _ in range(calls_per_batch):
                tiny.add_(1)  # a torch call: the GIL is let go and taken back, as each launch on a GPU does
        launches.append(time.perf_counter() - start)
        time.sleep(max(0.0, start + epoch_seconds - time.perf_counter()))  # the device finishes the queue
        return EpochStats(0.5, 0.5, images, max(time.perf_counter() - start, 1e-9))

    def evaluate(model: torch.nn.Module, batches: object, device: torch.device, *,
                 return_predictions: bool = False, **_: object) -> tuple[EpochStats, torch.Tensor | None]:
        if not return_predictions:
            return EpochStats(0.5, 0.5, 0, 1e-9), None
        labels = torch.cat([labels for _, labels in batches])
        return EpochStats(0.5, 0.5, len(labels), 1e-9), torch.zeros_like(labels)

    return train_one_epoch, evaluate


def steady_epoch_seconds(runs_dir: Path, epochs: int, warmup: int, visual_epochs: str, device_epoch: float,
                         images: int, batch_size: int, calls_per_batch: int) -> tuple[float, float, int]:
    """The median epoch wall time after ``warmup`` epochs, the median time its launches took, and how
    many epochs got pictures."""
    config = build_config("seed", {
        "data": {"synthetic_size": 1000},
        "optim": {"epochs": epochs, "device": "cpu"},
        "tracking": {"runs_dir": str(runs_dir), "visuals": visual_epochs != "off",
                     "visual_epochs": "all" if visual_epochs == "off" else visual_epochs},
    })
    launches: list[float] = []
    train, evaluate = device_stand_ins(device_epoch, images, images // batch_size, calls_per_batch, launches)
    run_module.train_one_epoch, run_module.evaluate = train, evaluate  # type: ignore[assignment]
    clock = EpochClock()
    run_module.run(config, on_epoch_end=clock, progress=False, echo=lambda line: None)
    pictures = list((runs_dir / "tensorboard").rglob("events.out.tfevents.*"))
    return (statistics.median(clock.epoch_seconds[warmup:]), statistics.median(launches[warmup:]),
            _epochs_with_pictures(pictures))


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
    parser.add_argument("--batch-size", type=int, default=512, help="images per step: how many batches to launch")
    parser.add_argument("--calls-per-batch", type=int, default=None,
                        help="torch calls the training thread makes per batch (default: counted on a real batch)")
    args = parser.parse_args()
    calls = args.calls_per_batch if args.calls_per_batch is not None else batch_calls(args.batch_size)
    print(f"machine: {device_description()}; per-epoch work of the seed preset at 64x64, {args.epochs} epochs; "
          f"{args.images // args.batch_size} batches of {calls} torch calls launched per epoch")
    print(f"{'device epoch':>12} {'visuals':>8} {'epoch wall':>11} {'launches':>9} {'epochs/s':>9} {'img/s cap':>11} "
          f"{'epochs with pictures':>21}")
    for device_epoch in args.device_epoch:
        for visual_epochs in ("off", "all", "latest"):
            with tempfile.TemporaryDirectory() as tmp:
                wall, launched, drawn = steady_epoch_seconds(Path(tmp), args.epochs, args.warmup, visual_epochs, device_epoch,
                                                   args.images, args.batch_size, calls)
            shown = "-" if visual_epochs == "off" else f"{drawn} of {args.epochs}"
            print(f"{device_epoch:>11.3f}s {visual_epochs:>8} {wall:>10.3f}s {launched * 1000:>7.1f}ms {1 / wall:>9.1f} "
                  f"{args.images / wall:>11,.0f} {shown:>21}", flush=True)


if __name__ == "__main__":
    main()
