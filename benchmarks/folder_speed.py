"""Real photos, decode once vs the naive way — same data, same run.

On ``../shared/data/petimages-sample`` (or ``--data``) at 64x64 with the seed
preset on this machine's CPU:

- convscope: ``convscope train`` through its public API with everything on
  (MLflow, TensorBoard, per-epoch visuals), starting from an empty decode cache;
  its first epoch is timed from the call, so it includes validating and
  decoding every file and writing the cache;
- naive: torchvision ``ImageFolder`` + ``transforms`` (Resize, flip, ToTensor,
  Normalize) + ``DataLoader(num_workers=2)``, Adam, ``loss.item()`` every step —
  JPEGs decoded again every epoch.

Prints the epoch times, their ratio, and convscope's validation accuracy after
``--epochs`` epochs (the reference figure for this setup is about 81%).

    python benchmarks/folder_speed.py [--epochs 12] [--naive-epochs 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EpochClock, device_description, naive_training_epochs  # noqa: E402

from convscope.train.config import build_config  # noqa: E402
from convscope.train.data import load_data  # noqa: E402
from convscope.train.run import run  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "petimages-sample"


def naive_epochs(root: Path, epochs: int, val_fraction: float) -> list[float]:
    transform = transforms.Compose([
        transforms.Resize((64, 64)),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    ])
    full = datasets.ImageFolder(str(root), transform=transform)
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(0))
    train = Subset(full, order[int(val_fraction * len(full)):].tolist())
    loader = DataLoader(train, batch_size=128, shuffle=True, num_workers=2)
    return naive_training_epochs(loader, epochs)

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--naive-epochs", type=int, default=2)
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"--data {args.data}: no such folder (the PetImages sample lives in ../shared/data)")
    print(f"device: {device_description()}")
    print(f"data: {args.data}, 64x64, seed preset")
    naive = naive_epochs(args.data, args.naive_epochs, 0.2)
    naive_epoch = statistics.median(naive)
    with tempfile.TemporaryDirectory() as tmp:
        def config(epochs: int, visuals: bool):  # type: ignore[no-untyped-def]
            return build_config("seed", {
                "data": {"data": str(args.data)},
                "optim": {"epochs": epochs, "device": "cpu"},
                "tracking": {"runs_dir": tmp, "visuals": visuals},
            })

        plain = config(3, visuals=False)
        start = time.perf_counter()
        load_data(plain.data, 64, plain.optim.seed, cache_dir=Path(tmp) / "cache", dataset_dir=Path(tmp), progress=False)
        cache_build = time.perf_counter() - start  # validate + decode + write the cache, from nothing
        like_for_like = run(plain, progress=False, echo=lambda line: None)  # reuses the cache
        clock = EpochClock()
        full = run(config(args.epochs, visuals=True), on_epoch_end=clock, progress=False, echo=lambda line: None)
    train_only = [h["train_seconds"] for h in like_for_like.history]
    steady = statistics.median(train_only[1:])
    whole = statistics.median(clock.epoch_seconds[1:])
    first = cache_build + train_only[0]
    print(f"naive epoch (training pass, JPEGs decoded by 2 workers): {naive_epoch:6.2f} s  "
          f"(epochs: {', '.join(f'{s:.2f}' for s in naive)})")
    print(f"convscope training pass, epochs 2+    : {steady:6.2f} s  -> {naive_epoch / steady:.1f}x faster "
          f"(same work as the naive loop; target >= 4x)")
    print(f"cache build (validate+decode every file): {cache_build:6.2f} s; + first training pass = {first:.2f} s "
          f"-> {first / naive_epoch:.2f}x a naive epoch (target <= 1.0)")
    print(f"convscope whole epoch with everything on: {whole:6.2f} s  -> {naive_epoch / whole:.1f}x faster "
          f"(adds validation, per-epoch visuals to MLflow + TensorBoard, checkpoint)")
    print(f"validation accuracy after {len(full.history)} epochs: {full.final['val/accuracy']:.3f} "
          f"(best {full.best_val_accuracy:.3f}; reference about 0.81)")

if __name__ == "__main__":
    main()
