"""Image-folder layouts: which files belong to which class and split.

Two layouts are understood:

- **class folders** (the PetImages layout): ``root/<class>/**/<file>``; convscope
  splits them with a seeded stratified split (``--val-fraction``);
- **pre-split**: ``root/train/<class>/…``, ``root/val/<class>/…`` (``valid`` and
  ``validation`` are accepted too) and optionally ``root/test/<class>/…``.

Every regular file under a class folder is listed — ``Thumbs.db`` and friends
included — so that the validating decoder can report what it skipped.
Hidden folders are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from train.errors import ConfigError

VAL_NAMES = ("val", "valid", "validation")


@dataclass(frozen=True)
class FileList:
    files: tuple[Path, ...]
    labels: tuple[int, ...]


@dataclass(frozen=True)
class Layout:
    kind: str  # "class-folders" or "pre-split"
    class_names: tuple[str, ...]
    splits: dict[str, FileList]  # "all" for class folders; "train", "val" (and "test") when pre-split

    @property
    def all_files(self) -> list[Path]:
        return [f for part in self.splits.values() for f in part.files]


def find_layout(root: Path, flag: str = "--data") -> Layout:
    """Inspect ``root``; ConfigError (naming ``flag``) when it is not a usable image folder."""
    if not root.exists():
        raise ConfigError(f"{flag} {root}: no such folder; give a folder with one sub-folder per class")
    if not root.is_dir():
        raise ConfigError(f"{flag} {root}: is a file, not a folder; give a folder with one sub-folder per class")
    children = {p.name.lower(): p for p in _subfolders(root)}
    val_dir = next((children[name] for name in VAL_NAMES if name in children), None)
    if "train" in children and val_dir is not None:
        class_names = _class_names(children["train"], flag)
        splits = {"train": _list(children["train"], class_names, flag), "val": _list(val_dir, class_names, flag)}
        if "test" in children:
            splits["test"] = _list(children["test"], class_names, flag)
        return Layout("pre-split", class_names, splits)
    if "train" in children and val_dir is None and len(children) <= 2:
        raise ConfigError(f"{flag} {root}: found train/ but no val/ folder; add {root}/val/<class>/… or put the class folders directly in {root}")
    class_names = _class_names(root, flag)
    return Layout("class-folders", class_names, {"all": _list(root, class_names, flag)})


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
    for index, name in enumerate(class_names):
        class_dir = folder / name
        if not class_dir.is_dir():
            raise ConfigError(f"{flag}: {folder} has no class folder {name!r} (every split needs the same classes)")
        found = sorted(p for p in class_dir.rglob("*") if p.is_file() and not _hidden(p, class_dir))
        if not found:
            raise ConfigError(f"{flag}: class folder {class_dir} is empty; remove it or add images")
        files += found
        labels += [index] * len(found)
    return FileList(tuple(files), tuple(labels))


def _hidden(path: Path, base: Path) -> bool:
    """Inside a hidden folder (``.git``, ``.ipynb_checkpoints``); hidden *files* are still listed."""
    return any(part.startswith(".") for part in path.relative_to(base).parts[:-1])
