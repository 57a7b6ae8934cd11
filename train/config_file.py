"""Run settings read from a YAML or TOML file, and layers of settings merged.

A file names settings exactly as ``config.yaml`` (logged with every run) does:
sections written out (``model: {depth: 3}``) or fields given flat (``depth: 3``).
Every value is typed and range-checked by ``train.setting_values.check_value`` and a wrong
one is named as written there (``--config run.yaml: optim.lr``).
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import yaml

from convscope.train.config import PRESETS
from convscope.train.config_sections import SECTIONS
from convscope.train.setting_values import check_value
from convscope.train.errors import ConfigError

EXTRA_SECTIONS = ("search",)  # config-file sections that are not RunConfig sections


def load_config_file(path: str | Path) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """Read a YAML or TOML config file → (preset or None, section -> field -> value).

    Sections may be written out (``model: {depth: 3}``) or fields given flat
    (``depth: 3``); flat names are matched to their section. A ``search:`` section is
    returned as is (``convscope search`` reads it). Raises ConfigError naming ``--config``.
    """
    file = Path(path)
    if file.is_dir():
        raise ConfigError(f"--config {path}: a folder; give a YAML or TOML file")
    if not file.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"--config {path}: cannot read it ({error})") from None
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
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"--config {path}: preset {preset!r} is none of {', '.join(PRESETS)}")
    owner = {f.name: section for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
    overrides: dict[str, dict[str, Any]] = {}
    for key, value in raw.items():
        key = str(key).replace("-", "_")
        if key in EXTRA_SECTIONS and isinstance(value, dict):
            overrides[key] = dict(value)
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
