"""Batches for the training loop, sliced from a uint8 tensor on the training device.

No DataLoader for data that fits in memory: the whole data set is one tensor
on the device; an epoch is a ``randperm`` on the device, and normalisation and
augmentation (flips, padded random crops) happen on the device too (airbench).
Data sets too large for memory are streamed from their files by
``StreamingBatches`` (a DataLoader with decoding workers) and augmented the
same way once on the device.

Streaming never trains on a stand-in: a file that vanished, changed or no longer
decodes since it was validated is dropped from its batch *together with its label*
(the batch is smaller; images and labels stay aligned), recorded in the data set's
``FileLog`` (and so in ``skipped_files.csv``), and counted in one line on stderr at
the end of the pass. More than ``MAX_LOST_FRACTION`` of a batch (of at least
``MIN_CHECKED_BATCH`` items) or of the data set lost ends the run with
``VanishedFilesError``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from convscope.train.image_sets import MAX_LOST_FRACTION, MIN_CHECKED_BATCH, ImageSet, VanishedFilesError, printable_path


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


PREPARED_BYTES_ON_CUDA = 512 * 2**20
"""On CUDA, about how many bytes of float images one pass of indexing, normalisation and augmentation
prepares (``prepared_per_pass``)."""


def prepared_per_pass(device: torch.device, image_shape: Sequence[int], batch_size: int) -> int:
    """How many images ``DeviceBatches`` prepares in one pass on ``device``: one batch on a CPU (larger
    passes measured 2.4–2.8× slower there, ``benchmarks/batch_preparation.py``: the batch no longer
    fits the caches), and on CUDA whole batches up to ``PREPARED_BYTES_ON_CUDA`` of floats, so that a
    batch costs the training thread a few torch calls instead of some thirty (each one a kernel launch
    and a trip through the GIL, which the threads drawing pictures beside training make slow)."""
    if device.type != "cuda":
        return batch_size
    image_bytes = 4 * max(1, int(torch.Size(image_shape).numel()))
    return max(1, PREPARED_BYTES_ON_CUDA // (image_bytes * batch_size)) * batch_size


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
        drop_last: bool = False,
        per_pass: int | None = None,
    ) -> None:
        """``drop_last``: every batch is full (a CUDA graph's static shape); the remainder of fewer
        than ``batch_size`` images, a different random one each epoch when shuffling, is left out.
        ``per_pass``: images gathered, normalised and augmented together, then handed out a batch
        (a view) at a time; rounded down to whole batches; default one batch (``prepared_per_pass``)."""
        self.images = images
        self.labels = labels
        self.normalizer = normalizer.to(images.device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.flip = flip
        self.crop_padding = crop_padding
        self.drop_last = drop_last
        self.per_pass = max(1, (per_pass or batch_size) // batch_size) * batch_size
        self.generator = torch.Generator(device=images.device).manual_seed(seed)

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.labels) // self.batch_size
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.labels), device=self.images.device, generator=self.generator) if self.shuffle else None
        n = len(self.labels) // self.batch_size * self.batch_size if self.drop_last else len(self.labels)
        if self.shuffle and n % self.batch_size == 1:
            n -= 1  # BatchNorm cannot train on a single image
        for begin in range(0, n, self.per_pass):
            end = min(begin + self.per_pass, n)
            if order is None:
                images, labels = self.images[begin:end], self.labels[begin:end]
            else:
                index = order[begin:end]
                images, labels = self.images[index], self.labels[index]
            x = augment(self.normalizer(images), self.generator, flip=self.flip, crop_padding=self.crop_padding)
            x = x.contiguous(memory_format=torch.channels_last)
            if end - begin == self.batch_size:
                yield x, labels
                continue
            for start in range(0, end - begin, self.batch_size):
                yield x[start : start + self.batch_size], labels[start : start + self.batch_size]


_Item = tuple[torch.Tensor | None, int, int, str | None]  # image (None when lost), label, index, reason


class _FileImages(Dataset[_Item]):
    """Decodes one validated file per item (only used when the data set does not fit in memory).

    An item is ``(image, label, index, None)``, or ``(None, label, index, reason)`` when the
    file was lost since validation: never a stand-in image."""

    def __init__(self, image_set: ImageSet) -> None:
        self.image_set = image_set
        self.labels = image_set.labels.tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> _Item:
        array, reason = self.image_set.decode(index)
        if array is None:
            return None, self.labels[index], index, reason or "unreadable"
        return torch.from_numpy(array), self.labels[index], index, None


def _collate(items: Sequence[_Item]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[tuple[int, str]]]:
    """``(images, labels, indices, lost)`` of the readable items; ``lost`` is ``(index, reason)`` of the rest."""
    kept = [item for item in items if item[0] is not None]
    lost = [(index, reason or "unreadable") for image, _, index, reason in items if image is None]
    if kept:
        images = torch.stack([image for image, _, _, _ in kept])  # type: ignore[misc]
    else:
        images = torch.empty(0, dtype=torch.uint8)
    labels = torch.tensor([label for _, label, _, _ in kept], dtype=torch.long)
    indices = torch.tensor([index for _, _, index, _ in kept], dtype=torch.long)
    return images, labels, indices, lost


class StreamingBatches:
    """Like DeviceBatches, but decoding files with DataLoader workers every epoch.

    Lost files are dropped with their labels (see the module docstring); ``lost_this_pass``
    counts them for the latest pass and ``last_indices`` holds the set indices of the images
    in the batch yielded last."""

    def __init__(
        self, image_set: ImageSet, normalizer: Normalizer, batch_size: int, device: torch.device, *,
        shuffle: bool = False, flip: bool = False, crop_padding: int = 0, seed: int = 0,
        workers: int | None = None, drop_last: bool = False,
    ) -> None:
        self.device = device
        self.image_set = image_set
        self.normalizer = normalizer.to(device)
        self.flip, self.crop_padding, self.shuffle = flip, crop_padding, shuffle
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.lost_this_pass = 0
        self.last_indices = torch.empty(0, dtype=torch.long)
        workers = min(8, os.cpu_count() or 1) if workers is None else workers
        self.loader = DataLoader(
            _FileImages(image_set),
            batch_size=batch_size,
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(seed),
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=device.type == "cuda",
            drop_last=drop_last,
            persistent_workers=workers > 0,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.lost_this_pass = 0
        log = self.image_set.lost
        try:
            for images, labels, indices, lost in self.loader:
                if lost:
                    self._note_lost(lost, len(labels) + len(lost))
                if len(labels) == 0 or (self.shuffle and len(labels) < 2):
                    continue  # nothing left, or a single image BatchNorm cannot train on
                self.last_indices = indices
                images = images.to(self.device, non_blocking=True)
                x = augment(self.normalizer(images), self.generator, flip=self.flip, crop_padding=self.crop_padding)
                yield x.contiguous(memory_format=torch.channels_last), labels.to(self.device, non_blocking=True)
        finally:
            log.flush()
        if self.lost_this_pass:
            print(f"convscope: {self.lost_this_pass:,} of {len(self.image_set):,} images of this pass could not be "
                  f"read again and were dropped with their labels; {log.summary()}", file=sys.stderr)

    def _note_lost(self, lost: list[tuple[int, str]], batch: int) -> None:
        """Record the lost items of one batch; raise when more than MAX_LOST_FRACTION of it is lost."""
        for index, reason in lost:
            self.image_set.lost.record(self.image_set.ids[index], reason)
        self.lost_this_pass += len(lost)
        if batch >= MIN_CHECKED_BATCH and len(lost) > MAX_LOST_FRACTION * batch:
            self.image_set.lost.flush()
            raise VanishedFilesError(
                f"{len(lost)} of the {batch} images of a batch could not be read again since they were validated "
                f"(e.g. {printable_path(self.image_set.ids[lost[0][0]])}: {lost[0][1]}); the data folder is being "
                "changed under the run — restore it and train again"
            )


class LabelTap:
    """Wraps batches and keeps the labels of every batch it yields, so that predictions made
    over a pass can be paired with the labels of the images that were really in it (a streamed
    pass may drop lost files): ``labels()`` after the pass, on the CPU."""

    def __init__(self, batches: Batches) -> None:
        self.batches = batches
        self._labels: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._labels = []
        for inputs, labels in self.batches:
            self._labels.append(labels.detach().cpu())
            yield inputs, labels

    def labels(self) -> torch.Tensor:
        return torch.cat(self._labels) if self._labels else torch.empty(0, dtype=torch.long)


def make_batches(
    image_set: ImageSet, normalizer: Normalizer, batch_size: int, device: torch.device, *,
    shuffle: bool = False, flip: bool = False, crop_padding: int = 0, seed: int = 0, drop_last: bool = False,
) -> Batches:
    """DeviceBatches when the images are in memory (moved to ``device`` once), else StreamingBatches."""
    options = {"shuffle": shuffle, "flip": flip, "crop_padding": crop_padding, "seed": seed, "drop_last": drop_last}
    if image_set.images is None:
        return StreamingBatches(image_set, normalizer, batch_size, device, **options)
    per_pass = prepared_per_pass(device, image_set.images.shape[1:], batch_size)
    return DeviceBatches(image_set.images.to(device), image_set.labels.to(device), normalizer, batch_size,
                         per_pass=per_pass, **options)
