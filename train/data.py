"""Data sets as uint8 tensors: the synthetic set and image folders.

Everything is decoded once into one ``uint8`` tensor (N×3×S×S) with int64
labels; training slices batches from it (``train.batches``). Issue 3 adds the
validating decoder, the on-disk cache and torchvision's data sets behind the
same ``load_data`` entry point.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from train.config import DataConfig
from train.errors import ConfigError
from train.synthetic import CLASS_NAMES, GENERATOR_VERSION, make_synthetic

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class ImageSet:
    """Images (uint8, N×3×S×S), labels (int64, N) and one id per image (a path or ``synthetic:i``)."""

    images: torch.Tensor
    labels: torch.Tensor
    ids: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor) -> ImageSet:
        return ImageSet(self.images[indices], self.labels[indices], tuple(self.ids[i] for i in indices.tolist()))


@dataclass(frozen=True)
class Splits:
    train: ImageSet
    val: ImageSet
    class_names: tuple[str, ...]
    fingerprint: str  # identifies the exact data (files, sizes, mtimes or generator settings)
    description: str  # one line for the console


def load_data(config: DataConfig, image_size: int, seed: int) -> Splits:
    """Load the data set named by ``config.data`` at ``image_size`` and split it with ``seed``."""
    if config.data == "synthetic":
        return _synthetic(config, image_size, seed)
    return _folder(config, image_size, seed)


def _synthetic(config: DataConfig, image_size: int, seed: int) -> Splits:
    images, labels = make_synthetic(config.synthetic_size, image_size, seed)
    full = ImageSet(images, labels, tuple(f"synthetic:{i}" for i in range(len(labels))))
    train_idx, val_idx = stratified_split(labels, config.val_fraction, seed)
    key = f"{GENERATOR_VERSION}:{config.synthetic_size}:{image_size}:{seed}"
    return Splits(
        train=full.subset(train_idx),
        val=full.subset(val_idx),
        class_names=CLASS_NAMES,
        fingerprint="synthetic-" + hashlib.sha256(key.encode()).hexdigest()[:16],
        description=(
            f"no --data given: using the built-in synthetic set ({config.synthetic_size} images, "
            f"{image_size}x{image_size}, classes {'/'.join(CLASS_NAMES)})"
        ),
    )


def _folder(config: DataConfig, image_size: int, seed: int) -> Splits:
    root = Path(config.data).expanduser()
    if not root.exists():
        raise ConfigError(f"--data {config.data}: no such folder; give a folder with one sub-folder per class")
    if not root.is_dir():
        raise ConfigError(f"--data {config.data}: is a file, not a folder; give a folder with one sub-folder per class")
    files, labels, class_names = scan_class_folders(root)
    images = decode_images(files, image_size)
    full = ImageSet(images, torch.tensor(labels, dtype=torch.long), tuple(str(f) for f in files))
    train_idx, val_idx = stratified_split(full.labels, config.val_fraction, seed)
    return Splits(
        train=full.subset(train_idx),
        val=full.subset(val_idx),
        class_names=class_names,
        fingerprint=files_fingerprint(files, image_size),
        description=f"{root}: {len(files)} images in {len(class_names)} classes ({', '.join(class_names)})",
    )


def scan_class_folders(root: Path) -> tuple[list[Path], list[int], tuple[str, ...]]:
    """Image files under ``root/<class>/`` (sorted), their class indices and the class names."""
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise ConfigError(
            f"--data {root}: found {len(class_dirs)} class folder(s); put the images of each class "
            f"in its own sub-folder (e.g. {root}/Cat, {root}/Dog), at least 2 classes"
        )
    files: list[Path] = []
    labels: list[int] = []
    for index, class_dir in enumerate(class_dirs):
        found = sorted(p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise ConfigError(f"--data {root}: class folder {class_dir.name!r} holds no images")
        files += found
        labels += [index] * len(found)
    return files, labels, tuple(d.name for d in class_dirs)


def decode_image(path: Path | str, image_size: int) -> np.ndarray:
    """One image file → RGB uint8 array (3×S×S), EXIF orientation applied, resized to a square."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        image = image.resize((image_size, image_size), Image.Resampling.BILINEAR, reducing_gap=3.0)
        return np.asarray(image).transpose(2, 0, 1).copy()


def decode_images(files: Sequence[Path], image_size: int) -> torch.Tensor:
    """Decode ``files`` in parallel threads (Pillow releases the GIL) into one uint8 tensor."""
    out = torch.empty(len(files), 3, image_size, image_size, dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for index, array in enumerate(pool.map(lambda f: decode_image(f, image_size), files)):
            out[index] = torch.from_numpy(array)
    return out


def stratified_split(labels: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and validation indices: every class split by ``val_fraction``, the same for the same seed."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"--val-fraction must be between 0 and 1 (got {val_fraction})")
    gen = torch.Generator().manual_seed(seed)
    train_parts, val_parts = [], []
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        n_val = min(len(members) - 1, max(1, round(val_fraction * len(members))))
        val_parts.append(members[:n_val])
        train_parts.append(members[n_val:])
    return torch.cat(train_parts).sort().values, torch.cat(val_parts).sort().values


def files_fingerprint(files: Sequence[Path], image_size: int) -> str:
    digest = hashlib.sha256(str(image_size).encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return "files-" + digest.hexdigest()[:16]
