"""Batches sliced from a uint8 tensor that lives on the training device.

No DataLoader: the whole data set is one tensor; an epoch is a ``randperm`` on
the device, and normalisation and flips happen on the device too (airbench).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


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
        seed: int = 0,
    ) -> None:
        self.images = images
        self.labels = labels
        self.normalizer = normalizer.to(images.device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.flip = flip
        self.generator = torch.Generator(device=images.device).manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        device = self.images.device
        order = torch.randperm(n, device=device, generator=self.generator) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            if self.shuffle and stop - start < 2:
                break  # BatchNorm cannot train on a single image
            if order is None:
                images, labels = self.images[start:stop], self.labels[start:stop]
            else:
                index = order[start:stop]
                images, labels = self.images[index], self.labels[index]
            x = self.normalizer(images)
            if self.flip:
                mirror = torch.rand(len(x), device=device, generator=self.generator) < 0.5
                x = torch.where(mirror[:, None, None, None], x.flip(3), x)
            yield x.contiguous(memory_format=torch.channels_last), labels
