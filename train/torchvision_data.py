"""torchvision's own data sets (``--data cifar10``, ``--data oxford-pets``) as uint8 tensors.

Contract: ``load_named_dataset`` returns the data set's own train/test split as
train/val, images ``uint8`` N×3×S×S and labels ``int64``, decoded once. Files are
fetched only with ``download=True``; every user-side failure (files missing or
corrupt, download failed, unknown name, bad ``--classes``) is a one-line
``ConfigError`` naming the flag and the folder where the files are expected.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from convscope.train.errors import ConfigError
from convscope.train.images import decode_many

KNOWN = ("cifar10", "oxford-pets")
_SIZES = {"cifar10": "about 170 MB", "oxford-pets": "about 800 MB"}
_FOLDERS = {"cifar10": "cifar-10-batches-py", "oxford-pets": "oxford-iiit-pet"}
_PET_NAMES = ("cat", "dog")  # OxfordIIITPet's binary labels: 0 = cat, 1 = dog
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
T = TypeVar("T")


@dataclass(frozen=True)
class NamedDataset:
    """A torchvision data set, its train split as ``train_*`` and its test split as ``val_*``."""

    train_images: torch.Tensor  # uint8, N×3×S×S
    train_labels: torch.Tensor  # int64, N
    val_images: torch.Tensor
    val_labels: torch.Tensor
    class_names: tuple[str, ...]  # index i is the name of label i
    ids_train: tuple[str, ...]  # one id per image: a file path, or "cifar10:train:<index>"
    ids_val: tuple[str, ...]
    fingerprint: str  # name, classes, image size and the data files' sizes/mtimes
    description: str  # one line for the console
    skipped: tuple[tuple[str, str], ...] = ()  # (path, reason from train.images.SKIP_REASONS) of undecodable files


def load_named_dataset(
    name: str, root: Path, image_size: int, *, classes: str = "default", download: bool = False, progress: bool = True
) -> NamedDataset:
    """Load ``name`` (one of ``KNOWN``) from ``root`` at ``image_size``×``image_size``.

    ``classes``: ``"default"`` (cat and dog), ``"all"``, or a comma list of the data set's
    class names; labels follow the order given. Raises ``ConfigError`` for user mistakes.
    """
    if name not in KNOWN:
        raise ConfigError(f"--data {name}: unknown data set; use one of {', '.join(KNOWN)} or an image folder")
    if image_size < 1:
        raise ConfigError(f"--image-size must be a positive number of pixels (got {image_size})")
    root = Path(root).expanduser()
    if name == "cifar10":
        return _cifar10(root, image_size, classes, download)
    return _oxford_pets(root, image_size, classes, download, progress)


def parse_classes(classes: str, all_names: Sequence[str], default: Sequence[str]) -> tuple[str, ...]:
    """``"default"`` → ``default``; ``"all"`` → ``all_names``; else a comma list of names, validated."""
    spec = classes.strip().lower()
    if spec == "default":
        return tuple(default)
    if spec == "all":
        return tuple(all_names)
    wanted = tuple(part.strip() for part in spec.split(",") if part.strip())
    unknown = [c for c in wanted if c not in all_names]
    if unknown or len(wanted) < 2 or len(set(wanted)) != len(wanted):
        problem = f"unknown {', '.join(unknown)}" if unknown else "give at least 2 different classes"
        raise ConfigError(
            f"--classes {classes}: {problem}; use 'default', 'all' or a comma list of {', '.join(all_names)}"
        )
    return wanted


def select_classes(
    data: np.ndarray, targets: Sequence[int], all_names: Sequence[str], classes: str, image_size: int
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...], torch.Tensor]:
    """Keep the CIFAR images of ``classes`` and relabel them 0..k-1 in the order named.

    ``data`` is CIFAR's raw ``.data`` (uint8 N×H×W×3). Returns the images (uint8
    N'×3×S×S, resized), the new labels (int64), the class names and the kept indices.
    """
    names = parse_classes(classes, all_names, default=("cat", "dog"))
    old = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    mapping = torch.full((len(all_names),), -1, dtype=torch.long)
    for new, class_name in enumerate(names):
        mapping[list(all_names).index(class_name)] = new
    labels = mapping[old]
    kept = torch.nonzero(labels >= 0).flatten()
    images = torch.from_numpy(np.ascontiguousarray(data[kept.numpy()])).permute(0, 3, 1, 2)
    return resize_uint8(images, image_size), labels[kept], names, kept


def resize_uint8(images: torch.Tensor, image_size: int, chunk: int = 2048) -> torch.Tensor:
    """Resize uint8 N×3×H×W to N×3×S×S (bilinear, antialiased when shrinking), in chunks."""
    if images.shape[-2:] == (image_size, image_size):
        return images.contiguous()
    shrinking = image_size < max(images.shape[-2:])
    out = torch.empty(len(images), images.shape[1], image_size, image_size, dtype=torch.uint8)
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk].float()
        part = F.interpolate(part, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=shrinking)
        out[start : start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _open(name: str, root: Path, download: bool, make: Callable[[], T]) -> T:
    """Call ``make()``; turn torchvision's missing/corrupt/download errors into one-line ConfigErrors."""
    folder = root / _FOLDERS[name]
    try:
        return make()
    except (RuntimeError, OSError) as exc:
        reason = " ".join(str(exc).split())
        if download and isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
            raise ConfigError(
                f"--data {name} --download: the download failed ({reason}); check the network, "
                f"or put the files in {folder} yourself"
            ) from None
        if download:
            raise ConfigError(
                f"--data {name} --download: the files in {folder} are still incomplete or corrupted ({reason}); "
                f"delete that folder and try again"
            ) from None
        if folder.exists():
            raise ConfigError(
                f"--data {name}: the files in {folder} are incomplete or corrupted; delete that folder and "
                f"add --download to fetch them again ({_SIZES[name]}), or put the right files there"
            ) from None
        raise ConfigError(
            f"--data {name}: the files are not in {folder}; add --download to fetch them "
            f"({_SIZES[name]}), or put them there"
        ) from None


def _cifar10(root: Path, image_size: int, classes: str, download: bool) -> NamedDataset:
    from torchvision.datasets import CIFAR10

    parse_classes(classes, CIFAR10_CLASSES, default=("cat", "dog"))  # a typo fails before any download
    parts = {}
    for split, train in (("train", True), ("val", False)):
        dataset = _open("cifar10", root, download, partial(CIFAR10, root, train=train, download=download))
        images, labels, names, kept = select_classes(dataset.data, dataset.targets, dataset.classes, classes, image_size)
        ids = tuple(f"cifar10:{'train' if train else 'test'}:{i}" for i in kept.tolist())
        parts[split] = (images, labels, ids)
    base = root / _FOLDERS["cifar10"]
    files = [base / f for f, _ in CIFAR10.train_list + CIFAR10.test_list] + [base / CIFAR10.meta["filename"]]
    return _assemble("cifar10", parts, names, files, image_size, f"{root}, 32x32")


def _oxford_pets(root: Path, image_size: int, classes: str, download: bool, progress: bool) -> NamedDataset:
    from torchvision.datasets import OxfordIIITPet

    names = parse_classes(classes, _PET_NAMES, default=_PET_NAMES)
    remap = torch.tensor([names.index(n) for n in _PET_NAMES])
    parts, skipped, files = {}, [], []
    for split, pet_split in (("train", "trainval"), ("val", "test")):
        dataset = _open(
            "oxford-pets",
            root,
            download,
            partial(OxfordIIITPet, root, split=pet_split, target_types="binary-category", download=download),
        )
        paths = [Path(p) for p in dataset._images]
        decoded = decode_many(paths, image_size, progress=progress)
        good = [i for i, d in enumerate(decoded) if d.kept]
        if not good:
            raise ConfigError(
                f"--data oxford-pets: none of the {len(paths)} {pet_split} images in {dataset._images_folder} "
                f"could be decoded; delete {root / _FOLDERS['oxford-pets']} and add --download to fetch them again"
            )
        skipped += [(str(paths[i]), str(d.reason)) for i, d in enumerate(decoded) if not d.kept]
        images = torch.empty(len(good), 3, image_size, image_size, dtype=torch.uint8)
        for row, i in enumerate(good):
            images[row] = torch.from_numpy(decoded[i].array)
        labels = remap[torch.tensor([dataset._bin_labels[i] for i in good], dtype=torch.long)]
        parts[split] = (images, labels, tuple(str(paths[i]) for i in good))
        files += paths + [dataset._anns_folder / f"{pet_split}.txt"]
    note = f", skipped {len(skipped)} files that could not be decoded" if skipped else ""
    return _assemble("oxford-pets", parts, names, files, image_size, f"{root}{note}", tuple(skipped))


def _assemble(
    name: str,
    parts: dict[str, tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]],
    names: tuple[str, ...],
    files: Sequence[Path],
    image_size: int,
    where: str,
    skipped: tuple[tuple[str, str], ...] = (),
) -> NamedDataset:
    (train_x, train_y, train_ids), (val_x, val_y, val_ids) = parts["train"], parts["val"]
    return NamedDataset(
        train_images=train_x,
        train_labels=train_y,
        val_images=val_x,
        val_labels=val_y,
        class_names=names,
        ids_train=train_ids,
        ids_val=val_ids,
        fingerprint=_fingerprint(name, names, image_size, files),
        description=(
            f"{name} ({where}): {len(train_y)} train / {len(val_y)} val images at "
            f"{image_size}x{image_size}, classes {', '.join(names)}"
        ),
        skipped=skipped,
    )


def _fingerprint(name: str, names: Sequence[str], image_size: int, files: Sequence[Path]) -> str:
    digest = hashlib.sha256(f"{name}\0{','.join(names)}\0{image_size}\n".encode())
    for path in files:
        try:
            stat = path.stat()
            digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path.name}\0missing\n".encode())
    return f"{name}-" + digest.hexdigest()[:16]
