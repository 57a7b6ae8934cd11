"""The decode-once cache: every validated image of a folder as one uint8 tensor on disk.

A cache entry is ``<cache-dir>/<key>.safetensors`` holding ``images``
(N×3×S×S uint8), ``labels`` and ``splits`` (int64; 0 train, 1 val, 2 test, -1
unsplit), with the kept file paths and the skipped files (path, reason) as
JSON in the safetensors metadata. The key covers the decoder version, the
image size and, for every file, its path, size, modification time, label and
split — so any changed, added or removed file makes a new key and the folder
is decoded again. Paths are hashed as their file-system bytes (``os.fsencode``), so
any name the OS allows makes a key; a file that vanished before it could be looked
at is hashed as missing (the decoder then skips it). Entries are written atomically (temp file + rename).
Processes that miss the same entry together (a study's workers starting at once) decode it once:
the first holds ``decoding_lock`` while it decodes and stores, the others wait for it and load.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from convscope.train.atomic import write_atomically

CACHE_FORMAT = "convscope.decoded/1"
DECODER_VERSION = "1"  # bump when train.images decodes differently: old entries stop matching
SPLIT_CODES = {"all": -1, "train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class DecodedFiles:
    images: torch.Tensor  # N×3×S×S uint8, kept files only, in listing order
    labels: torch.Tensor  # N int64
    splits: torch.Tensor  # N int64 (SPLIT_CODES)
    ids: tuple[str, ...]  # the kept files' paths
    skipped: tuple[tuple[str, str], ...]  # (path, reason) of every file that was not kept
    total: int  # files looked at


Stamp = tuple[int, int] | None  # (size, mtime_ns) of a file, None when it could not be looked at


def file_stamp(path: Path) -> Stamp:
    """``(size, mtime_ns)`` of ``path``, or None when it vanished or cannot be looked at; never raises."""
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return None
    return stat.st_size, stat.st_mtime_ns


def cache_key(
    files: Sequence[Path], labels: Sequence[int], splits: Sequence[int], image_size: int, version: str,
    stamps: Sequence[Stamp] | None = None,
) -> str:
    """The entry key of these files (see the module docstring); ``stamps`` are their
    :func:`file_stamp` when the caller already has them. Never raises because of a file."""
    stamps = [file_stamp(path) for path in files] if stamps is None else stamps
    digest = hashlib.sha256(f"{CACHE_FORMAT}\0{version}\0{image_size}\n".encode())
    for path, label, split, stamp in zip(files, labels, splits, stamps, strict=True):
        size, mtime = stamp if stamp is not None else ("missing", "missing")
        digest.update(os.fsencode(path) + f"\0{size}\0{mtime}\0{label}\0{split}\n".encode())
    return digest.hexdigest()[:24]


def entry_path(cache_dir: Path, key: str, image_size: int) -> Path:
    return cache_dir / f"{key}-{image_size}px.safetensors"


def load_entry(path: Path) -> DecodedFiles | None:
    """The cached entry, or None when absent or unreadable (it is then rebuilt)."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        if meta.get("format") != CACHE_FORMAT:
            return None
        tensors = load_file(str(path))
        skipped = tuple((p, r) for p, r in json.loads(meta["skipped"]))
        return DecodedFiles(
            tensors["images"], tensors["labels"], tensors["splits"], tuple(json.loads(meta["ids"])), skipped,
            int(meta["total"]),
        )
    except (SafetensorError, OSError, KeyError, ValueError):
        return None


def store_entry(path: Path, decoded: DecodedFiles) -> None:
    write_atomically(path, lambda tmp: save_file(
        {"images": decoded.images.contiguous(), "labels": decoded.labels, "splits": decoded.splits},
        tmp,
        metadata={
            "format": CACHE_FORMAT,
            "ids": json.dumps(decoded.ids),
            "skipped": json.dumps(decoded.skipped),
            "total": str(decoded.total),
        },
    ))


@contextlib.contextmanager
def decoding_lock(entry: Path, on_wait: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Hold the lock of cache entry ``entry`` (an advisory lock on ``<entry>.lock``, released by the
    system if its holder dies) while decoding it; ``on_wait`` is called once if another process holds
    it. Where no lock can be taken (a read-only cache folder, no ``fcntl``) nothing is held."""
    try:
        import fcntl

        entry.parent.mkdir(parents=True, exist_ok=True)
        handle = open(entry.with_name(entry.name + ".lock"), "ab")
    except (ImportError, OSError):
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
