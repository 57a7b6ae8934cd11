"""Per-epoch visuals on vs off (and written beside the training vs before the next epoch), and
convscope vs a plain training loop — same data, same run.

The seed preset trains on a 20,000-image epoch of the synthetic set at 64x64.
"Epoch time" is wall time from one epoch end to the next as seen by the
``on_epoch_end`` callback: training, validation, the visuals' capture on the
training thread, checkpointing, and whatever the background writer takes from
the CPU meanwhile. The first epoch (warm-up) is dropped; runs alternate
on/off to cancel drift. On a CPU convscope writes an epoch's visuals before the next epoch
starts; "overlapped" writes them on the tracker's worker thread while training goes on (what it
does on a GPU). The plain loop is written the way the reference
network's author would: a DataLoader over a TensorDataset of floats,
``loss.item()`` every step, no channels_last.

    python benchmarks/visual_overhead.py [--epochs 3] [--repeats 2] [--train-images 20000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EpochClock, device_description, naive_training_epochs  # noqa: E402

import train.run  # noqa: E402
from tracking.epoch_visuals import EpochVisuals  # noqa: E402
from train.batches import Normalizer  # noqa: E402
from train.config import build_config  # noqa: E402
from train.run import run  # noqa: E402
from train.synthetic import make_synthetic  # noqa: E402


class OverlappedVisuals(EpochVisuals):
    """EpochVisuals that always write on the tracker's worker, beside the training."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "overlap": True})


def convscope_epochs(runs_dir: Path, visuals: bool, epochs: int, train_images: int, overlapped: bool = False) -> list[float]:
    config = build_config("seed", {
        "data": {"synthetic_size": int(train_images / 0.8)},
        "optim": {"epochs": epochs, "device": "cpu"},
        "tracking": {"runs_dir": str(runs_dir), "visuals": visuals},
    })
    clock = EpochClock()
    with mock.patch.object(train.run, "EpochVisuals", OverlappedVisuals if overlapped else EpochVisuals):
        run(config, on_epoch_end=clock, progress=False, echo=lambda line: None)
    return clock.epoch_seconds[1:]


def plain_epochs(epochs: int, train_images: int) -> list[float]:
    images, labels = make_synthetic(train_images, 64, seed=0)
    x = Normalizer.fit(images)(images)
    loader = DataLoader(TensorDataset(x, labels), batch_size=128, shuffle=True)
    return naive_training_epochs(loader, epochs)[1:]

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is dropped")
    parser.add_argument("--repeats", type=int, default=2, help="on/off pairs")
    parser.add_argument("--train-images", type=int, default=20_000)
    args = parser.parse_args()
    print(f"device: {device_description()}")
    print(f"seed preset, synthetic 64x64, {args.train_images} training images per epoch")
    on: list[float] = []
    off: list[float] = []
    overlapped: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            on += convscope_epochs(Path(tmp) / f"on{repeat}", True, args.epochs, args.train_images)
            off += convscope_epochs(Path(tmp) / f"off{repeat}", False, args.epochs, args.train_images)
            overlapped += convscope_epochs(Path(tmp) / f"ov{repeat}", True, args.epochs, args.train_images, True)
    plain = plain_epochs(args.epochs, args.train_images)
    t_on, t_off, t_plain = statistics.median(on), statistics.median(off), statistics.median(plain)
    t_overlapped = statistics.median(overlapped)

    def listed(seconds: list[float]) -> str:
        return ", ".join(f"{s:.2f}" for s in seconds)

    print(f"convscope, visuals on : {t_on:6.2f} s/epoch  (epochs: {listed(on)})")
    print(f"  ... written overlapped: {t_overlapped:6.2f} s/epoch  (epochs: {listed(overlapped)})")
    print(f"convscope, visuals off: {t_off:6.2f} s/epoch  (epochs: {listed(off)})")
    print(f"plain loop            : {t_plain:6.2f} s/epoch  (epochs: {listed(plain)})")
    print(f"visuals overhead      : {100 * (t_on / t_off - 1):+.1f}% per epoch (target <= 5%); "
          f"overlapped {100 * (t_overlapped / t_off - 1):+.1f}%")
    print(f"plain / convscope     : {t_plain / t_on:.2f}x (convscope with visuals on is this much faster)")


if __name__ == "__main__":
    main()
