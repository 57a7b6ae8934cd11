"""Image-folder layouts: which files belong to which class and split.

Two layouts are understood:

- **class folders** (the PetImages layout): ``root/<class>/**/<file>``; convscope
  splits them with a seeded stratified split (``--val-fraction``);
- **pre-split**: ``root/train/<class>/…``, ``root/val/<class>/…`` (``valid`` and
  ``validation`` are accepted too) and optionally ``root/test/<class>/…``.

Every regular file under a class folder is listed — ``Thumbs.db`` and friends
included — so that the validating decoder can report what it skipped.
Hidden folders are ignored.

Listing never raises because of a file. What cannot be listed as a regular file is
recorded in :attr:`FileList.skipped` as ``(path, reason)`` with one of
:data:`LISTING_REASONS`: a symlink whose target is missing, a symlink loop, a FIFO,
socket or device, a name that is not valid UTF-8 (it could not be reported, logged or
tracked faithfully, so it is skipped rather than half-used), a file or folder that
vanished or could not be read while it was listed, and a symlinked folder (not followed,
so that no file is listed twice and no loop is walked). Symlinks to regular files are
listed like the files themselves.
"""

from __future__ import annotations

import errno
import os
import stat as stat_module
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from convscope.train.errors import ConfigError
from convscope.train.images import VANISHED  # listed, then gone (or a folder gone while it was walked)

VAL_NAMES = ("val", "valid", "validation")

BROKEN_LINK = "broken link"  # a symlink whose target does not exist
LINK_LOOP = "symlink loop"
NOT_A_FILE = "not a regular file"  # FIFO, socket, device
BAD_NAME = "name not UTF-8"
UNLISTABLE = "unreadable folder"  # permission denied or I/O error while listing
LINKED_FOLDER = "linked folder not followed"
LISTING_REASONS = (BROKEN_LINK, LINK_LOOP, NOT_A_FILE, BAD_NAME, VANISHED, UNLISTABLE, LINKED_FOLDER)


@dataclass(frozen=True)
class FileList:
    """The regular files of one split with their class indices, and what was not listed."""

    files: tuple[Path, ...]
    labels: tuple[int, ...]
    skipped: tuple[tuple[str, str], ...] = ()  # (path, reason in LISTING_REASONS)


@dataclass(frozen=True)
class Layout:
    kind: str  # "class-folders" or "pre-split"
    class_names: tuple[str, ...]
    splits: dict[str, FileList]  # "all" for class folders; "train", "val" (and "test") when pre-split

    @property
    def all_files(self) -> list[Path]:
        return [f for part in self.splits.values() for f in part.files]

    @property
    def skipped(self) -> tuple[tuple[str, str], ...]:
        """``(path, reason)`` of every entry under the class folders that was not listed."""
        return tuple(row for part in self.splits.values() for row in part.skipped)


def check_folder(root: Path, flag: str = "--data") -> None:
    """ConfigError (naming ``flag``) when ``root`` does not exist or is no folder."""
    if not root.exists():
        raise ConfigError(f"{flag} {root}: no such folder; give a folder with one sub-folder per class")
    if not root.is_dir():
        raise ConfigError(f"{flag} {root}: is a file, not a folder; give a folder with one sub-folder per class")


def find_layout(root: Path, flag: str = "--data", *, classes: Sequence[str] | None = None) -> Layout:
    """Inspect ``root``; ConfigError (naming ``flag``) when it is not a usable image folder, or, given
    ``classes`` (a trained network's), when its class folders are not those (checked before any is listed)."""
    check_folder(root, flag)
    children = {p.name.lower(): p for p in _subfolders(root)}
    val_dir = next((children[name] for name in VAL_NAMES if name in children), None)
    if "train" in children and val_dir is not None:
        class_names = _class_names(children["train"], flag)
        _check_classes(root, class_names, classes, flag)
        splits = {"train": _list(children["train"], class_names, flag), "val": _list(val_dir, class_names, flag)}
        if "test" in children:
            splits["test"] = _list(children["test"], class_names, flag)
        return Layout("pre-split", class_names, splits)
    if "train" in children and val_dir is None and len(children) <= 2:
        raise ConfigError(f"{flag} {root}: found train/ but no val/ folder; add {root}/val/<class>/… or put the class folders directly in {root}")
    class_names = _class_names(root, flag)
    _check_classes(root, class_names, classes, flag)
    return Layout("class-folders", class_names, {"all": _list(root, class_names, flag)})


def _check_classes(root: Path, names: Sequence[str], expected: Sequence[str] | None, flag: str) -> None:
    if expected is None or sorted(names) == sorted(expected):
        return
    missing = sorted(set(expected) - set(names))
    extra = sorted(set(names) - set(expected))
    said = "; ".join(part for part in (f"missing {_few(missing)}" if missing else "",
                                       f"unknown to the model {_few(extra)}" if extra else "") if part)
    raise ConfigError(f"{flag} {root}: its class folders are not the model's classes ({_few(expected)}): {said}")


def _few(names: Sequence[str], shown: int = 5) -> str:
    """``names`` for one line of text: the first ``shown``, then how many more."""
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_names(folder: Path, flag: str) -> tuple[str, ...]:
    names = tuple(p.name for p in _subfolders(folder))
    if len(names) < 2:
        raise ConfigError(
            f"{flag} {folder}: found {len(names)} class folder(s); put the images of each class in its own "
            f"sub-folder (e.g. {folder}/Cat, {folder}/Dog) — at least 2 classes"
        )
    return names


def _list(folder: Path, class_names: tuple[str, ...], flag: str) -> FileList:
    files: list[Path] = []
    labels: list[int] = []
    skipped: list[tuple[str, str]] = []
    for index, name in enumerate(class_names):
        class_dir = folder / name
        if not class_dir.is_dir():
            raise ConfigError(f"{flag}: {folder} has no class folder {name!r} (every split needs the same classes)")
        found: list[Path] = []
        _walk(class_dir, found, skipped)
        if not found:
            unlisted = [path for path, why in skipped if why == UNLISTABLE and Path(path) == class_dir]
            if unlisted:
                raise ConfigError(f"{flag}: class folder {class_dir} cannot be read (no permission to list it); "
                                  "fix its permissions")
            raise ConfigError(f"{flag}: class folder {class_dir} is empty; remove it or add images")
        found.sort()
        files += found
        labels += [index] * len(found)
    return FileList(tuple(files), tuple(labels), tuple(sorted(skipped)))


def _walk(folder: Path, found: list[Path], skipped: list[tuple[str, str]]) -> None:
    """Append the regular files under ``folder`` to ``found`` and everything else worth
    reporting to ``skipped``; hidden folders are not entered (hidden *files* are listed)."""
    try:
        with os.scandir(folder) as entries:
            listed = list(entries)
    except FileNotFoundError:
        skipped.append((str(folder), VANISHED))
        return
    except OSError:
        skipped.append((str(folder), UNLISTABLE))
        return
    for entry in listed:
        path = folder / entry.name
        reason = _unlisted_reason(entry)
        if reason == "folder":
            if not entry.name.startswith("."):
                _walk(path, found, skipped)
        elif reason is None:
            found.append(path)
        elif reason:
            skipped.append((str(path), reason))


def _unlisted_reason(entry: os.DirEntry[str]) -> str | None:
    """None for a regular file (or a link to one), ``"folder"`` for a real sub-folder,
    ``""`` for a hidden link to a folder (ignored like hidden folders), else the skip reason."""
    try:
        entry.name.encode("utf-8")
    except UnicodeEncodeError:
        return BAD_NAME
    try:
        if entry.is_dir(follow_symlinks=False):
            return "folder"
        is_link = entry.is_symlink()
        mode = entry.stat(follow_symlinks=True).st_mode
    except FileNotFoundError:
        return BROKEN_LINK if _is_link(entry) else VANISHED
    except OSError as error:
        if error.errno == errno.ELOOP:
            return LINK_LOOP
        return UNLISTABLE
    if stat_module.S_ISREG(mode):
        return None
    if stat_module.S_ISDIR(mode) and is_link:
        return "" if entry.name.startswith(".") else LINKED_FOLDER
    return NOT_A_FILE


def _is_link(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_symlink()
    except OSError:
        return False
