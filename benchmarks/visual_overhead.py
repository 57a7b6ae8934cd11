"""Per-epoch visuals on vs off, and convscope vs a plain training loop — same data, same run.

The seed preset trains on a 20,000-image epoch of the synthetic set at 64x64.
"Epoch time" is wall time from one epoch end to the next as seen by the
``on_epoch_end`` callback: training, validation, the visuals' capture on the
training thread, checkpointing, and whatever the background writer takes from
the CPU meanwhile. The first epoch (warm-up) is dropped; runs alternate
on/off to cancel drift. The plain loop is written the way the reference
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

from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EpochClock, device_description, naive_training_epochs  # noqa: E402

from convscope.train.batches import Normalizer  # noqa: E402
from convscope.train.config import build_config  # noqa: E402
from convscope.train.run import run  # noqa: E402
from convscope.train.synthetic import make_synthetic  # noqa: E402


def convscope_epochs(runs_dir: Path, visuals: bool, epochs: int, train_images: int) -> list[float]:
    config = build_config("seed", {
        "data": {"synthetic_size": int(train_images / 0.8)},
        "optim": {"epochs": epochs, "device": "cpu"},
        "tracking": {"runs_dir": str(runs_dir), "visuals": visuals},
    })
    clock = EpochClock()
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
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            on += convscope_epochs(Path(tmp) / f"on{repeat}", True, args.epochs, args.train_images)
            off += convscope_epochs(Path(tmp) / f"off{repeat}", False, args.epochs, args.train_images)
    plain = plain_epochs(args.epochs, args.train_images)
    t_on, t_off, t_plain = statistics.median(on), statistics.median(off), statistics.median(plain)
    print(f"convscope, visuals on : {t_on:6.2f} s/epoch  (epochs: {', '.join(f'{s:.2f}' for s in on)})")
    print(f"convscope, visuals off: {t_off:6.2f} s/epoch  (epochs: {', '.join(f'{s:.2f}' for s in off)})")
    print(f"plain loop            : {t_plain:6.2f} s/epoch  (epochs: {', '.join(f'{s:.2f}' for s in plain)})")
    print(f"visuals overhead      : {100 * (t_on / t_off - 1):+.1f}% per epoch (target <= 5%)")
    print(f"plain / convscope     : {t_plain / t_on:.2f}x (convscope with visuals on is this much faster)")


if __name__ == "__main__":
    main()
