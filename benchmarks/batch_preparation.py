"""Seconds per epoch of ``train.batches.DeviceBatches`` (indexing, normalisation, flips and padded crops)
with its batches prepared one at a time against several per pass, on one device, same run.

What ``train.batches.prepared_per_pass`` chooses from: on a CPU one batch a pass (a larger pass no
longer fits the caches), on CUDA whole batches up to ``PREPARED_BYTES_ON_CUDA``.

    python benchmarks/batch_preparation.py [--device cpu] [--images 20000] [--batch-size 128 512]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_description  # noqa: E402

from convscope.train.batches import DeviceBatches, Normalizer, prepared_per_pass  # noqa: E402
from convscope.train.loop import select_device  # noqa: E402


def epoch_seconds(batches: DeviceBatches, device: torch.device, rounds: int) -> float:
    """The fastest of ``rounds`` passes over ``batches`` (each batch's result touched, the device waited for)."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for inputs, _ in batches:
            inputs.sum()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    device = select_device(args.device)
    print(f"device: {device_description(device)}; {args.images:,} images of 3x64x64, flips and 4-pixel crops")
    images = torch.randint(0, 256, (args.images, 3, 64, 64), dtype=torch.uint8)
    labels = torch.randint(0, 2, (args.images,))
    normalizer = Normalizer.fit(images)
    images, labels = images.to(device), labels.to(device)
    many = prepared_per_pass(torch.device("cuda"), (3, 64, 64), 512)  # what CUDA would prepare per pass
    for batch_size in args.batch_size:
        rows = {}
        for per_pass in (batch_size, many // batch_size * batch_size):
            batches = DeviceBatches(images, labels, normalizer, batch_size, shuffle=True, flip=True, crop_padding=4,
                                    drop_last=True, per_pass=per_pass)
            rows[per_pass] = epoch_seconds(batches, device, args.rounds)
        one, several = rows.values()
        print(f"batch {batch_size:>4}: one a pass {one:7.3f} s   {many // batch_size} a pass {several:7.3f} s   "
              f"one a pass is {several / one:.2f}x as fast")


if __name__ == "__main__":
    main()
