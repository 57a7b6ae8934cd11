"""Data sets as uint8 tensors: the synthetic set, image folders, torchvision sets.

``load_data`` is the one entry point. Image folders are validated and decoded
once (``train.images``), in parallel, into one uint8 tensor that is cached on
disk (``train.cache``); later runs and every trial of a study load the cache
and never touch a JPEG again. A folder too large for memory (more than
``--memory-fraction`` of the available RAM) is streamed from the files instead,
with a notice.

Every file that is not trained on is reported, one way: ``Splits.skipped`` holds
what listing (``train.folders``) and validation (``train.images``) left out, and
``Splits.vanished`` (a :class:`FileLog` shared by the train, val and test sets)
what went missing or changed *after* validation, while streaming.
``Splits.write_skipped_csv`` writes both to ``skipped_files.csv`` and keeps
appending later losses to it. A file lost while streaming is dropped together with
its label, never replaced by a stand-in image; when more than
:data:`MAX_LOST_FRACTION` of a batch or of the data set is lost,
:class:`VanishedFilesError` (a one-line ``ConfigError``) ends the run instead of
training on what is left.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import torch

from convscope.train.cache import (
    DECODER_VERSION,
    SPLIT_CODES,
    DecodedFiles,
    Stamp,
    cache_key,
    decoding_lock,
    entry_path,
    file_stamp,
    load_entry,
    store_entry,
)
from convscope.train.config_sections import SYNTHETIC_DEPTH, DataConfig
from convscope.train.errors import ConfigError
from convscope.train.folders import Layout, find_layout
from convscope.train.image_sets import FileLog, ImageSet, Splits
from convscope.train.images import VANISHED, decode_many
from convscope.train.splits import split_indices
from convscope.train.synthetic import (
    CLASS_NAMES,
    GENERATOR_VERSION,
    SCALE_CLASS_NAMES,
    SCALE_GENERATOR_VERSION,
    make_scale_task,
    make_synthetic,
)

DECODE_CHUNK = 2048  # files decoded per batch of work: bounds the memory held outside the tensor
def load_data(
    config: DataConfig, image_size: int, seed: int, *, cache_dir: Path, dataset_dir: Path, progress: bool = True
) -> Splits:
    """Load the data set named by ``config.data`` at ``image_size`` and split it with ``seed``:
    ``--val-fraction`` of every class, or fold ``--fold`` of ``--folds`` stratified folds."""
    if config.data == "synthetic" or SYNTHETIC_DEPTH.fullmatch(config.data):
        return _synthetic(config, image_size, seed)
    from convscope.train.torchvision_data import KNOWN, load_named_dataset

    if config.data in KNOWN:
        if config.test_fraction:
            raise ConfigError(f"--data {config.data} comes with its own train and validation split: --test-fraction "
                              "needs the synthetic set or an image folder with one sub-folder per class")
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
    train_idx, val_idx, test_idx = split_indices(labels, config, seed)
    return Splits(
        train=full.subset(train_idx),
        val=full.subset(val_idx),
        test=full.subset(test_idx) if test_idx is not None else None,
        class_names=names,
        fingerprint="synthetic-" + hashlib.sha256(key.encode()).hexdigest()[:16],
        description=description + _fold_note(config),
        total_files=config.synthetic_size,
    )


_GENERATING = threading.Lock()


def _generated(kind: str, count: int, image_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic images and labels, generated once per process: every fold of a depth study
    and every trial of a study reuses them (callers only ever index them, which copies). Trials
    that start together as threads of one process wait for the one that generates them."""
    with _GENERATING:
        return _generate(kind, count, image_size, seed)


@functools.lru_cache(maxsize=1)
def _generate(kind: str, count: int, image_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
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
    """Decode (or load from the cache) an image folder; every file left out is in ``skipped``."""
    root = Path(config.data).expanduser()
    layout = find_layout(root)
    files, labels, splits = _entries(layout)
    stamps = [file_stamp(path) for path in files]
    key = cache_key(files, labels, splits, image_size, DECODER_VERSION, stamps)
    needed = len(files) * 3 * image_size * image_size
    streaming = needed > config.memory_fraction * available_memory()
    cache_file = entry_path(cache_dir, key, image_size)
    decoded_now = 0
    cached = False
    entry = None if streaming else load_entry(cache_file)
    kept_stamps: tuple[Stamp, ...] | None = None
    if entry is None:
        waiting = f"convscope: another process is decoding {root} into the decode cache: waiting for it"
        with contextlib.nullcontext() if streaming else decoding_lock(
                cache_file, lambda: progress and print(waiting, file=sys.stderr)):
            entry = None if streaming else load_entry(cache_file)  # it may have been stored while we waited
            if entry is None:
                entry, kept_stamps = _decode(files, labels, splits, stamps, image_size, keep=not streaming,
                                             progress=progress)
                decoded_now = entry.total
                cached = not streaming and _store_best_effort(cache_file, entry)
    skipped = (*layout.skipped, *entry.skipped)
    total = entry.total + len(layout.skipped)
    _check_usable(root, layout, entry)
    if streaming:
        source = (f"streaming from the files: {needed / 2**30:.1f} GiB decoded would exceed "
                  f"{config.memory_fraction:.0%} of the available memory (--memory-fraction)")
    elif decoded_now:
        source = "decoded now, cached" if cached else "decoded now, not cached"
    else:
        source = "from the decode cache"
    kept = ImageSet(entry.labels, entry.ids, entry.images if not streaming else None, image_size,
                    stamps=kept_stamps if streaming else None, lost=FileLog(len(entry.ids)))
    if layout.kind == "pre-split":
        if config.folds:
            raise ConfigError(f"--data {root}: its train/ and val/ folders fix the split; --folds needs one "
                              "sub-folder per class (put the images of train/ and val/ together)")
        parts = {name: kept.subset(torch.nonzero(entry.splits == code).flatten()) for name, code in SPLIT_CODES.items()
                 if name != "all"}
        train, val, test = parts["train"], parts["val"], parts["test"] if len(parts["test"]) else None
        if config.test_fraction and test is None:
            raise ConfigError(f"--data {root}: its train/ and val/ folders fix the split; for a test split put a "
                              "test/ folder beside them (--test-fraction needs one sub-folder per class)")
    else:
        train_idx, val_idx, test_idx = split_indices(entry.labels, config, seed)
        train, val = kept.subset(train_idx), kept.subset(val_idx)
        test = kept.subset(test_idx) if test_idx is not None else None
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
        skipped=skipped,
        total_files=total,
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
    files: Sequence[Path], labels: Sequence[int], splits: Sequence[int], stamps: Sequence[Stamp], image_size: int, *,
    keep: bool, progress: bool,
) -> tuple[DecodedFiles, tuple[Stamp, ...]]:
    """Validate every file by decoding it; keep the pixels (``keep``) or only the verdicts (streaming).

    Also returns the kept files' ``stamps`` (taken before decoding). A file that vanished
    before or while it was decoded is skipped as ``vanished``."""
    images = torch.empty(len(files) if keep else 0, 3, image_size, image_size, dtype=torch.uint8)
    kept: list[int] = []
    skipped: list[tuple[str, str]] = []
    for start in range(0, len(files), DECODE_CHUNK):
        chunk = files[start : start + DECODE_CHUNK]
        for offset, result in enumerate(decode_many(chunk, image_size, progress=progress)):
            if result.array is None or stamps[start + offset] is None:
                skipped.append((str(chunk[offset]), result.reason or VANISHED))
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
    ), tuple(stamps[i] for i in kept)


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

