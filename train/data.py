"""Data sets as uint8 tensors: the synthetic set, image folders, torchvision sets.

``load_data`` is the one entry point. Image folders are validated and decoded
once (``train.images``), in parallel, into one uint8 tensor that is cached on
disk (``train.cache``); later runs and every trial of a study load the cache
and never touch a JPEG again. A folder too large for memory (more than
``--memory-fraction`` of the available RAM) is streamed from the files instead,
with a notice.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import os
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from train.cache import DECODER_VERSION, SPLIT_CODES, DecodedFiles, cache_key, entry_path, load_entry, store_entry
from train.config import DataConfig
from train.errors import ConfigError
from train.folders import Layout, find_layout
from train.images import decode_many
from train.splits import split_indices, stratified_folds, stratified_split  # noqa: F401 (re-exported)
from train.synthetic import (
    CLASS_NAMES,
    GENERATOR_VERSION,
    SCALE_CLASS_NAMES,
    SCALE_GENERATOR_VERSION,
    make_scale_task,
    make_synthetic,
)

DECODE_CHUNK = 2048  # files decoded per batch of work: bounds the memory held outside the tensor
SYNTHETIC_DEPTH = re.compile(r"synthetic-depth(\d+)")  # --data synthetic-depthK: a task that needs K blocks


@dataclass(frozen=True)
class ImageSet:
    """Labels and ids (a path or ``synthetic:i``) of N images, and the images themselves:
    in memory as one uint8 tensor (N×3×S×S), or ``None`` when they are streamed from files."""

    labels: torch.Tensor
    ids: tuple[str, ...]
    images: torch.Tensor | None = None
    image_size: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    def subset(self, indices: torch.Tensor) -> ImageSet:
        images = self.images[indices] if self.images is not None else None
        return replace(self, labels=self.labels[indices], ids=tuple(self.ids[i] for i in indices.tolist()), images=images)

    def take(self, indices: torch.Tensor) -> torch.Tensor:
        """The uint8 images at ``indices`` (decoded from their files when streaming)."""
        if self.images is not None:
            return self.images[indices]
        results = decode_many([Path(self.ids[i]) for i in indices.tolist()], self.image_size, progress=False)
        return torch.stack([torch.from_numpy(r.array) for r in results if r.array is not None])


@dataclass(frozen=True)
class Splits:
    train: ImageSet
    val: ImageSet
    class_names: tuple[str, ...]
    fingerprint: str  # identifies the exact data (files, sizes, mtimes or generator settings)
    description: str  # one line for the console
    test: ImageSet | None = None
    skipped: tuple[tuple[str, str], ...] = ()  # (path, reason) of files that were not used
    total_files: int = 0
    decoded: int = 0  # images decoded by this call (0 when everything came from the cache)

    def skipped_summary(self, csv_path: Path | None = None) -> str | None:
        """``skipped 3 of 25,000 files: 2 unreadable, 1 too large — see …/skipped_files.csv``."""
        if not self.skipped:
            return None
        counts = Counter(reason for _, reason in self.skipped)
        parts = ", ".join(f"{n} {reason}" for reason, n in counts.most_common())
        where = f" — see {csv_path}" if csv_path else ""
        return f"skipped {len(self.skipped):,} of {self.total_files:,} files: {parts}{where}"

    def write_skipped_csv(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "reason"])
            writer.writerows(self.skipped)
        return path


def load_data(
    config: DataConfig, image_size: int, seed: int, *, cache_dir: Path, dataset_dir: Path, progress: bool = True
) -> Splits:
    """Load the data set named by ``config.data`` at ``image_size`` and split it with ``seed``:
    ``--val-fraction`` of every class, or fold ``--fold`` of ``--folds`` stratified folds."""
    if config.data == "synthetic" or SYNTHETIC_DEPTH.fullmatch(config.data):
        return _synthetic(config, image_size, seed)
    from train.torchvision_data import KNOWN, load_named_dataset

    if config.data in KNOWN:
        if config.folds:
            raise ConfigError(f"--data {config.data} comes with its own train and validation split: "
                              "--folds needs the synthetic set or an image folder with one sub-folder per class")
        named = load_named_dataset(
            config.data, dataset_dir, image_size, classes=config.classes, download=config.download, progress=progress
        )
        return Splits(
            train=ImageSet(named.train_labels, named.ids_train, named.train_images),
            val=ImageSet(named.val_labels, named.ids_val, named.val_images),
            class_names=named.class_names,
            fingerprint=named.fingerprint,
            description=named.description,
            skipped=named.skipped,
            total_files=len(named.train_labels) + len(named.val_labels) + len(named.skipped),
        )
    return _folder(config, image_size, seed, cache_dir, progress)


def _synthetic(config: DataConfig, image_size: int, seed: int) -> Splits:
    match = SYNTHETIC_DEPTH.fullmatch(config.data)
    size = f"{config.synthetic_size} images, {image_size}x{image_size}"
    if match is None:
        images, labels = _generated("gabor", config.synthetic_size, image_size, seed)
        names, key = CLASS_NAMES, f"{GENERATOR_VERSION}:{config.synthetic_size}:{image_size}:{seed}"
        description = f"no --data given: using the built-in synthetic set ({size}, classes {'/'.join(names)})"
    else:
        scale = int(match.group(1))
        try:
            images, labels = _generated(f"scale{scale}", config.synthetic_size, image_size, seed)
        except ValueError as error:
            raise ConfigError(f"--data {config.data}: {error}") from None
        names = SCALE_CLASS_NAMES
        key = f"{SCALE_GENERATOR_VERSION}:{scale}:{config.synthetic_size}:{image_size}:{seed}"
        description = (f"--data {config.data}: pairs of squares {2**scale - 2} px apart whose tints agree or "
                       f"differ; k3 s2 blocks need {scale} to see both ({size}, classes {'/'.join(names)})")
    full = ImageSet(labels, tuple(f"synthetic:{i}" for i in range(len(labels))), images)
    train_idx, val_idx = split_indices(labels, config, seed)
    return Splits(
        train=full.subset(train_idx),
        val=full.subset(val_idx),
        class_names=names,
        fingerprint="synthetic-" + hashlib.sha256(key.encode()).hexdigest()[:16],
        description=description + _fold_note(config),
        total_files=config.synthetic_size,
    )


@functools.lru_cache(maxsize=1)
def _generated(kind: str, count: int, image_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic images and labels, generated once per process: every fold of a depth study
    and every trial of a study reuses them (callers only ever index them, which copies)."""
    if kind == "gabor":
        return make_synthetic(count, image_size, seed)
    return make_scale_task(count, image_size, seed, int(kind.removeprefix("scale")))


def _store_best_effort(cache_file: Path, entry: DecodedFiles) -> bool:
    """Write the cache entry; a full or read-only cache directory costs a decode next time, not this run."""
    try:
        store_entry(cache_file, entry)
    except OSError as error:
        print(f"convscope: could not write the decode cache {cache_file} ({error.strerror or error}); "
              "training goes on, the next run decodes again — free space there or set --cache-dir",
              file=sys.stderr)
        return False
    return True


def _folder(config: DataConfig, image_size: int, seed: int, cache_dir: Path, progress: bool) -> Splits:
    root = Path(config.data).expanduser()
    layout = find_layout(root)
    files, labels, splits = _entries(layout)
    key = cache_key(files, labels, splits, image_size, DECODER_VERSION)
    needed = len(files) * 3 * image_size * image_size
    streaming = needed > config.memory_fraction * available_memory()
    cache_file = entry_path(cache_dir, key, image_size)
    decoded_now = 0
    cached = False
    entry = None if streaming else load_entry(cache_file)
    if entry is None:
        entry = _decode(files, labels, splits, image_size, keep=not streaming, progress=progress)
        decoded_now = entry.total
        if not streaming:
            cached = _store_best_effort(cache_file, entry)
    _check_usable(root, layout, entry)
    if streaming:
        source = (f"streaming from the files: {needed / 2**30:.1f} GiB decoded would exceed "
                  f"{config.memory_fraction:.0%} of the available memory (--memory-fraction)")
    elif decoded_now:
        source = "decoded now, cached" if cached else "decoded now, not cached"
    else:
        source = "from the decode cache"
    kept = ImageSet(entry.labels, entry.ids, entry.images if not streaming else None, image_size)
    if layout.kind == "pre-split":
        if config.folds:
            raise ConfigError(f"--data {root}: its train/ and val/ folders fix the split; --folds needs one "
                              "sub-folder per class (put the images of train/ and val/ together)")
        parts = {name: kept.subset(torch.nonzero(entry.splits == code).flatten()) for name, code in SPLIT_CODES.items()
                 if name != "all"}
        train, val, test = parts["train"], parts["val"], parts["test"] if len(parts["test"]) else None
    else:
        train_idx, val_idx = split_indices(entry.labels, config, seed)
        train, val, test = kept.subset(train_idx), kept.subset(val_idx), None
    return Splits(
        train=train,
        val=val,
        test=test,
        class_names=layout.class_names,
        fingerprint=f"files-{key[:16]}",
        description=(
            f"{root} ({layout.kind}): {len(entry.ids):,} images in {len(layout.class_names)} classes "
            f"({', '.join(layout.class_names)}), {len(train):,} train / {len(val):,} val"
            + (f" / {len(test):,} test" if test is not None else "") + _fold_note(config) + f" — {source}"
        ),
        skipped=entry.skipped,
        total_files=entry.total,
        decoded=decoded_now,
    )


def _entries(layout: Layout) -> tuple[list[Path], list[int], list[int]]:
    files: list[Path] = []
    labels: list[int] = []
    splits: list[int] = []
    for name, part in layout.splits.items():
        files += part.files
        labels += part.labels
        splits += [SPLIT_CODES[name]] * len(part.files)
    return files, labels, splits


def _decode(
    files: Sequence[Path], labels: Sequence[int], splits: Sequence[int], image_size: int, *, keep: bool, progress: bool
) -> DecodedFiles:
    """Validate every file by decoding it; keep the pixels (``keep``) or only the verdicts (streaming)."""
    images = torch.empty(len(files) if keep else 0, 3, image_size, image_size, dtype=torch.uint8)
    kept: list[int] = []
    skipped: list[tuple[str, str]] = []
    for start in range(0, len(files), DECODE_CHUNK):
        chunk = files[start : start + DECODE_CHUNK]
        for offset, result in enumerate(decode_many(chunk, image_size, progress=progress)):
            if result.array is None:
                skipped.append((str(chunk[offset]), result.reason or "unreadable"))
                continue
            if keep:
                images[len(kept)] = torch.from_numpy(result.array)
            kept.append(start + offset)
    index = torch.tensor(kept, dtype=torch.long)
    return DecodedFiles(
        images=images[: len(kept)].clone() if keep else images,
        labels=torch.tensor(labels, dtype=torch.long)[index] if kept else torch.empty(0, dtype=torch.long),
        splits=torch.tensor(splits, dtype=torch.long)[index] if kept else torch.empty(0, dtype=torch.long),
        ids=tuple(str(files[i]) for i in kept),
        skipped=tuple(skipped),
        total=len(files),
    )


def _check_usable(root: Path, layout: Layout, entry: DecodedFiles) -> None:
    if not entry.ids:
        raise ConfigError(f"--data {root}: none of its {entry.total:,} files is a readable image")
    present = set(entry.labels.tolist())
    for index, name in enumerate(layout.class_names):
        if index not in present:
            raise ConfigError(f"--data {root}: class folder {name!r} holds no readable image")
    if layout.kind == "pre-split":
        for name in ("train", "val"):
            if not (entry.splits == SPLIT_CODES[name]).any():
                raise ConfigError(f"--data {root}: the {name}/ folder holds no readable image")


def _fold_note(config: DataConfig) -> str:
    return f", fold {config.fold} of {config.folds} for validation" if config.folds else ""


def available_memory() -> int:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``; else free pages)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: assume it fits

