"""Command-line flags generated from the config dataclasses.

Every field of every section becomes ``--field-name``; its comment in
``train/config.py`` becomes the help text. Flags are parsed with
``argparse.SUPPRESS`` defaults so only what the user typed overrides the preset
and the ``--config`` file.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import tokenize
import tomllib
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from train.config import SECTIONS, check_value
from train.errors import ConfigError

SEPARATOR = "::"  # dest = "section::field"
EXTRA_SECTIONS = ("search",)  # config-file sections that are not RunConfig sections


@cache
def field_comments(cls: type) -> dict[str, str]:
    """``field -> trailing comment`` read from the class source (empty if unavailable)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments: dict[str, str] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            head = token.line.strip().split(":", 1)[0]
            if head in names:
                comments[head] = token.string.lstrip("#").strip()
    return comments


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One argument group per section, one flag per field."""
    seen: dict[str, str] = {}
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(f"{section} settings")
        comments = field_comments(cls)
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if not field.metadata.get("cli", True):
                continue
            flag = "--" + field.name.replace("_", "-")
            if flag in seen:
                raise RuntimeError(f"flag {flag} is defined by both {seen[flag]} and {section}")
            seen[flag] = section
            default = field.default if field.default is not dataclasses.MISSING else None
            help_text = comments.get(field.name, "")
            if default not in (None, "", ()):
                help_text += f" (default: {_show(default)})"
            kwargs = _argument_kwargs(hints[field.name], field.name)
            group.add_argument(
                flag, dest=f"{section}{SEPARATOR}{field.name}", default=argparse.SUPPRESS, help=help_text, **kwargs
            )


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(str(v) for v in value)
    return str(value)


def _argument_kwargs(hint: Any, name: str) -> dict[str, Any]:
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(hint) is tuple:
        (item, _) = typing.get_args(hint)
        if item is str:
            return {"action": "append", "metavar": name.upper()}  # repeatable: --probe a.jpg --probe b.jpg
        return {"nargs": "+", "type": item, "metavar": "N"}
    if hint in (int, float, str):
        return {"type": hint, "metavar": {int: "N", float: "X", str: "TEXT"}[hint]}
    if isinstance(hint, types.UnionType):
        raise RuntimeError(f"config field {name} has an unsupported type {hint}")
    return {"type": hint}


def overrides_from_args(namespace: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The flags the user gave, as ``section -> field -> value``."""
    overrides: dict[str, dict[str, Any]] = {}
    for dest, value in vars(namespace).items():
        if SEPARATOR in dest:
            section, name = dest.split(SEPARATOR)
            value = tuple(value) if isinstance(value, list) else value
            overrides.setdefault(section, {})[name] = check_value(section, name, value, "--" + name.replace("_", "-"))
    return overrides


def load_config_file(path: str | Path) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """Read a YAML or TOML config file → (preset or None, section -> field -> value).

    Sections may be written out (``model: {depth: 3}``) or fields given flat
    (``depth: 3``); flat names are matched to their section.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--config {path}: no such file")
    text = file.read_text()
    try:
        if file.suffix.lower() == ".toml":
            raw = tomllib.loads(text)
        elif file.suffix.lower() in (".yaml", ".yml"):
            raw = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"--config {path}: use a .yaml, .yml or .toml file")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        raise ConfigError(f"--config {path}: cannot parse it: {str(error).splitlines()[0]}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"--config {path}: expected a mapping of settings at the top level")
    preset = raw.pop("preset", None)
    owner = {f.name: section for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    overrides: dict[str, dict[str, Any]] = {}
    for key, value in raw.items():
        key = str(key).replace("-", "_")
        if key in EXTRA_SECTIONS and isinstance(value, dict):
            overrides[key] = dict(value)  # read by other commands (convscope search)
        elif key in SECTIONS and (isinstance(value, dict) or key not in owner):  # "data: ~/PetImages" is the field
            if not isinstance(value, dict):
                raise ConfigError(f"--config {path}: {key} must be a mapping of settings, e.g. "
                                  f"{key}: {{{next(iter(owner_fields(key)))}: …}} (got {value!r})")
            for name, item in value.items():
                name = str(name).replace("-", "_")
                if name not in owner_fields(key):
                    raise ConfigError(f"--config {path}: unknown setting {key}.{name}; known {key} settings are "
                                      f"{', '.join(owner_fields(key))}")
                overrides.setdefault(key, {})[name] = _file_value(path, key, name, item)
        elif key in owner:
            overrides.setdefault(owner[key], {})[key] = _file_value(path, owner[key], key, value)
        else:
            raise ConfigError(f"--config {path}: unknown setting {key!r}; see 'convscope train --help'")
    return preset, overrides


def owner_fields(section: str) -> list[str]:
    return [f.name for f in dataclasses.fields(SECTIONS[section])]


def _file_value(path: str | Path, section: str, name: str, value: Any) -> Any:
    """A config file's value typed and range-checked, named as written there (``optim.lr``)."""
    return check_value(section, name, value, f"--config {path}: {section}.{name}")


def merge(*layers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Later layers win, field by field."""
    merged: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, values in layer.items():
            merged.setdefault(section, {}).update(values)
    return merged
