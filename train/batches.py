"""Batches for the training loop, sliced from a uint8 tensor on the training device.

No DataLoader for data that fits in memory: the whole data set is one tensor
on the device; an epoch is a ``randperm`` on the device, and normalisation and
augmentation (flips, padded random crops) happen on the device too (airbench).
Data sets too large for memory are streamed from their files by
``StreamingBatches`` (a DataLoader with decoding workers) and augmented the
same way once on the device.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

if TYPE_CHECKING:
    from train.data import ImageSet


class Normalizer:
    """Scales uint8 images to floats with per-channel mean and std (of the training set)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean = mean.float().reshape(1, -1, 1, 1)
        self.std = std.float().reshape(1, -1, 1, 1)

    @classmethod
    def fit(cls, images: torch.Tensor) -> Normalizer:
        pixels = images.float().div_(255).transpose(0, 1).reshape(images.shape[1], -1)
        return cls(pixels.mean(dim=1), pixels.std(dim=1).clamp_min(1e-3))

    def to(self, device: torch.device) -> Normalizer:
        return Normalizer(self.mean.to(device), self.std.to(device))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div_(255)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def state(self) -> dict[str, list[float]]:
        return {"mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}


class Batches(Protocol):
    generator: torch.Generator  # its state is checkpointed, so a resumed run sees the same batches

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


def augment(x: torch.Tensor, generator: torch.Generator, *, flip: bool, crop_padding: int) -> torch.Tensor:
    """Random horizontal flips and padded random crops of a float batch, on its device."""
    n, channels, height, width = x.shape
    if crop_padding > 0:
        padded = F.pad(x, (crop_padding,) * 4, mode="reflect")
        padded_width = width + 2 * crop_padding
        offsets = torch.randint(0, 2 * crop_padding + 1, (2, n, 1, 1), device=x.device, generator=generator)
        rows = offsets[0] + torch.arange(height, device=x.device)[None, :, None]
        cols = offsets[1] + torch.arange(width, device=x.device)[None, None, :]
        index = (rows * padded_width + cols).reshape(n, 1, height * width).expand(n, channels, height * width)
        x = padded.reshape(n, channels, -1).gather(2, index).reshape(n, channels, height, width)
    if flip:
        mirror = torch.rand(n, device=x.device, generator=generator) < 0.5
        x = torch.where(mirror[:, None, None, None], x.flip(3), x)
    return x


class DeviceBatches:
    """Iterates ``(inputs, labels)`` batches; ``inputs`` are normalised, channels_last floats."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        normalizer: Normalizer,
        batch_size: int,
        *,
        shuffle: bool = False,
        flip: bool = False,
        crop_padding: int = 0,
        seed: int = 0,
    ) -> None:
        self.images = images
        self.labels = labels
        self.normalizer = normalizer.to(images.device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.flip = flip
        self.crop_padding = crop_padding
        self.generator = torch.Generator(device=images.device).manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n, device=self.images.device, generator=self.generator) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            if self.shuffle and stop - start < 2:
                break  # BatchNorm cannot train on a single image
            if order is None:
                images, labels = self.images[start:stop], self.labels[start:stop]
            else:
                index = order[start:stop]
                images, labels = self.images[index], self.labels[index]
            x = augment(self.normalizer(images), self.generator, flip=self.flip, crop_padding=self.crop_padding)
            yield x.contiguous(memory_format=torch.channels_last), labels


class _FileImages(Dataset[tuple[torch.Tensor, int]]):
    """Decodes one validated file per item (only used when the data set does not fit in memory)."""

    def __init__(self, paths: tuple[str, ...], labels: torch.Tensor, image_size: int) -> None:
        self.paths, self.labels, self.image_size = paths, labels.tolist(), image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from train.images import decode_file

        decoded = decode_file(Path(self.paths[index]), self.image_size)
        if decoded.array is None:  # the file changed since it was validated
            return torch.zeros(3, self.image_size, self.image_size, dtype=torch.uint8), self.labels[index]
        return torch.from_numpy(decoded.array), self.labels[index]


class StreamingBatches:
    """Like DeviceBatches, but decoding files with DataLoader workers every epoch."""

    def __init__(
        self, image_set: ImageSet, normalizer: Normalizer, batch_size: int, device: torch.device, *,
        shuffle: bool = False, flip: bool = False, crop_padding: int = 0, seed: int = 0,
    ) -> None:
        self.device = device
        self.normalizer = normalizer.to(device)
        self.flip, self.crop_padding, self.shuffle = flip, crop_padding, shuffle
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.loader = DataLoader(
            _FileImages(image_set.ids, image_set.labels, image_set.image_size),
            batch_size=batch_size,
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(seed),
            num_workers=min(8, os.cpu_count() or 1),
            pin_memory=device.type == "cuda",
            drop_last=False,
            persistent_workers=True,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self.loader:
            if self.shuffle and len(labels) < 2:
                break
            images = images.to(self.device, non_blocking=True)
            x = augment(self.normalizer(images), self.generator, flip=self.flip, crop_padding=self.crop_padding)
            yield x.contiguous(memory_format=torch.channels_last), labels.to(self.device, non_blocking=True)


def make_batches(
    image_set: ImageSet, normalizer: Normalizer, batch_size: int, device: torch.device, *,
    shuffle: bool = False, flip: bool = False, crop_padding: int = 0, seed: int = 0,
) -> Batches:
    """DeviceBatches when the images are in memory (moved to ``device`` once), else StreamingBatches."""
    options = {"shuffle": shuffle, "flip": flip, "crop_padding": crop_padding, "seed": seed}
    if image_set.images is None:
        return StreamingBatches(image_set, normalizer, batch_size, device, **options)
    return DeviceBatches(image_set.images.to(device), image_set.labels.to(device), normalizer, batch_size, **options)
