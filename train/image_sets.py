"""The image sets a run trains and validates on, and what is lost from them while it runs.

``ImageSet`` holds N images' labels and ids, and either the decoded images or, when streaming,
what is needed to decode them again (their stamps); ``Splits`` is a data set's train, validation
and test sets with every file left out of them. ``FileLog`` records files lost after validation
(vanished or changed while streaming), shared by the sets of one data set; when more than
:data:`MAX_LOST_FRACTION` of a batch or of the data set is lost, :class:`VanishedFilesError`
ends the run.
"""

from __future__ import annotations

import csv
import os
import sys
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from convscope.train.cache import Stamp, file_stamp
from convscope.train.errors import ConfigError
from convscope.train.images import VANISHED, decode_file, decode_many

CHANGED = "changed since validated"  # its size or modification time differs from when it was validated
MAX_LOST_FRACTION = 0.5  # more of a batch (or of the data set) lost after validation ends the run
MIN_CHECKED_BATCH = 4  # batches smaller than this are not held to MAX_LOST_FRACTION (the data set still is)


class VanishedFilesError(ConfigError):
    """Too many files vanished or changed after validation to go on training honestly."""


def printable_path(path: str | Path) -> str:
    """``path`` as one printable line: bytes that are not UTF-8 as ``\\xff``, control
    characters (a newline in a name) as ``\\n``-style escapes; other names unchanged."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class FileLog:
    """Files lost after validation (``(path, reason)``, each path once), shared by the sets of one
    data set. Once :meth:`attach` names the skipped-files CSV, :meth:`flush` appends new rows to it.

    ``total`` is the number of validated images; :meth:`record` raises :class:`VanishedFilesError`
    when more than :data:`MAX_LOST_FRACTION` of them are lost."""

    def __init__(self, total: int = 0) -> None:
        self.total = total
        self._rows: dict[str, str] = {}
        self._written = 0
        self._csv: Path | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def rows(self) -> tuple[tuple[str, str], ...]:
        return tuple(self._rows.items())

    @property
    def csv_path(self) -> Path | None:
        return self._csv

    def record(self, path: str, reason: str) -> bool:
        """Note one lost file; True when it was not noted before."""
        with self._lock:
            new = path not in self._rows
            if new:
                self._rows[path] = reason
            lost = len(self._rows)
        if self.total and lost > MAX_LOST_FRACTION * self.total:
            raise VanishedFilesError(
                f"{lost:,} of {self.total:,} validated files vanished or changed while training (more than "
                f"{MAX_LOST_FRACTION:.0%}); the data folder is being changed under the run — restore it and train again"
            )
        return new

    def attach(self, csv_path: Path) -> None:
        """From now on :meth:`flush` appends to ``csv_path`` (which already holds the earlier rows)."""
        self._csv, self._written = csv_path, len(self._rows)

    def flush(self) -> None:
        """Append the rows recorded since the last flush to the attached CSV (nothing when none is attached)."""
        with self._lock:
            if self._csv is None or self._written == len(self._rows):
                return
            new = list(self._rows.items())[self._written :]
            self._written = len(self._rows)
        try:
            with self._csv.open("a", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerows((printable_path(p), r) for p, r in new)
        except OSError as error:
            print(f"convscope: could not add to {self._csv} ({error.strerror or error})", file=sys.stderr)

    def summary(self) -> str:
        """``3 of 2,000 files lost since validation (2 vanished, 1 changed since validated) — see …csv``."""
        counts = Counter(self._rows.values())
        parts = ", ".join(f"{n} {reason}" for reason, n in counts.most_common())
        where = f" — see {self._csv}" if self._csv else ""
        return f"{len(self._rows):,} of {self.total:,} files lost since validation ({parts}){where}"


@dataclass(frozen=True)
class ImageSet:
    """Labels and ids (a path or ``synthetic:i``) of N images, and the images themselves:
    in memory as one uint8 tensor (N×3×S×S), or ``None`` when they are streamed from files.

    Streamed sets carry each file's ``stamps`` (size, mtime) from validation: a file whose
    stamp differs later, or that no longer decodes, is lost (``lost``, shared by all subsets)."""

    labels: torch.Tensor
    ids: tuple[str, ...]
    images: torch.Tensor | None = None
    image_size: int = 0
    stamps: tuple[Stamp, ...] | None = None
    lost: FileLog = field(default_factory=FileLog, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    def subset(self, indices: torch.Tensor) -> ImageSet:
        images = self.images[indices] if self.images is not None else None
        chosen = indices.tolist()
        stamps = tuple(self.stamps[i] for i in chosen) if self.stamps is not None else None
        return replace(self, labels=self.labels[indices], ids=tuple(self.ids[i] for i in chosen), images=images,
                       stamps=stamps)

    def decode(self, index: int) -> tuple[np.ndarray | None, str | None]:
        """Decode streamed item ``index``: ``(uint8 3×S×S array, None)``, or ``(None, reason)`` when
        its file vanished, changed since validation or no longer decodes. Never raises for a file."""
        path = Path(self.ids[index])
        if self.stamps is not None:
            now = file_stamp(path)
            if now is None:
                return None, VANISHED
            if now != self.stamps[index]:
                return None, CHANGED
        decoded = decode_file(path, self.image_size)
        return decoded.array, decoded.reason

    def take_available(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, kept)``: the uint8 images at ``indices`` that can still be read, and the
        positions (into ``indices``) they come from — pair labels and ids with ``kept``, never
        with ``indices``. Lost files are recorded in ``lost``; raises :class:`VanishedFilesError`
        when more than :data:`MAX_LOST_FRACTION` of ``indices`` (or of the data set) are lost."""
        if self.images is not None:
            return self.images[indices], torch.arange(len(indices))
        chosen = indices.tolist()
        paths = [Path(self.ids[i]) for i in chosen]
        results = decode_many(paths, self.image_size, progress=False)
        arrays: list[torch.Tensor] = []
        kept: list[int] = []
        for position, (index, result) in enumerate(zip(chosen, results, strict=True)):
            reason = result.reason
            if self.stamps is not None and (now := file_stamp(paths[position])) != self.stamps[index]:
                reason = VANISHED if now is None else CHANGED  # not the file that was validated
            if reason is None and result.array is not None:
                arrays.append(torch.from_numpy(result.array))
                kept.append(position)
            else:
                self.lost.record(self.ids[index], reason or VANISHED)
        lost = len(chosen) - len(kept)
        if lost:
            self.lost.flush()
            if len(chosen) >= MIN_CHECKED_BATCH and lost > MAX_LOST_FRACTION * len(chosen):
                raise VanishedFilesError(
                    f"{lost:,} of {len(chosen):,} images could not be read again since they were validated "
                    f"(e.g. {printable_path(self.ids[chosen[_first_missing(kept)]])}); "
                    "the data folder is being changed under the run — restore it and train again"
                )
        empty = torch.empty(0, 3, self.image_size, self.image_size, dtype=torch.uint8)
        return (torch.stack(arrays) if arrays else empty), torch.tensor(kept, dtype=torch.long)

    def take(self, indices: torch.Tensor) -> torch.Tensor:
        """The uint8 images at ``indices``, one per index, in order (decoded from their files when
        streaming). Never returns fewer images than indices: when a streamed file was lost since
        validation, it raises :class:`VanishedFilesError` naming it (use :meth:`take_available`
        to drop lost files together with their labels instead)."""
        images, kept = self.take_available(indices)
        if len(kept) != len(indices):
            missing = indices[_first_missing(kept.tolist())].item()
            raise VanishedFilesError(
                f"{printable_path(self.ids[missing])} vanished or changed since it was validated "
                f"({len(indices) - len(kept)} of {len(indices)} requested images are lost); restore it and train again"
            )
        return images


@dataclass(frozen=True)
class Splits:
    train: ImageSet
    val: ImageSet
    class_names: tuple[str, ...]
    fingerprint: str  # identifies the exact data (files, sizes, mtimes or generator settings)
    description: str  # one line for the console
    test: ImageSet | None = None
    skipped: tuple[tuple[str, str], ...] = ()  # (path, reason) of files left out by listing and validation
    total_files: int = 0
    decoded: int = 0  # images decoded by this call (0 when everything came from the cache)

    @property
    def vanished(self) -> FileLog:
        """Files lost after validation (streaming), shared by ``train``, ``val`` and ``test``."""
        return self.train.lost

    def skipped_summary(self, csv_path: Path | None = None) -> str | None:
        """``skipped 3 of 25,000 files: 2 unreadable, 1 too large — see …/skipped_files.csv``."""
        if not self.skipped:
            return None
        counts = Counter(reason for _, reason in self.skipped)
        parts = ", ".join(f"{n} {reason}" for reason, n in counts.most_common())
        where = f" — see {csv_path}" if csv_path else ""
        return f"skipped {len(self.skipped):,} of {self.total_files:,} files: {parts}{where}"

    def write_skipped_csv(self, path: Path) -> Path:
        """Write ``path,reason`` rows of every skipped and every lost file so far (paths as
        :func:`printable_path`, UTF-8); files lost later are appended to it as they are noticed."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "reason"])
            writer.writerows((printable_path(p), reason) for p, reason in (*self.skipped, *self.vanished.rows))
        self.vanished.attach(path)
        return path


def _first_missing(kept: Sequence[int]) -> int:
    """The first position not in the sorted ``kept``."""
    for position, index in enumerate(kept):
        if position != index:
            return position
    return len(kept)
