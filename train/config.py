"""Run configuration: a preset and overrides resolved into a checked ``RunConfig``.

The sections are the frozen dataclasses of ``train.config_sections``; the values each setting
takes are checked by ``train.setting_values``. The fully resolved ``RunConfig`` is logged with
every run (``config.yaml``, which ``--config`` reads back), so a run can always be reproduced.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from convscope.train.config_sections import SECTIONS, RunConfig
from convscope.train.errors import ConfigError
from convscope.train.setting_values import check_values, coerce_value

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The reference network: 409,682 parameters at 3x64x64, 2 classes.
    "seed": {},
    # A small, fast network for smoke tests and quick looks.
    "tiny": {"model": {"depth": 3, "base_width": 8, "head_hidden": 32}},
}


def build_config(preset: str = "seed", overrides: dict[str, dict[str, Any]] | None = None) -> RunConfig:
    """Resolve preset, then ``overrides`` (section -> field -> value) into a RunConfig.

    Raises ConfigError for an unknown preset, section or field, or a value of the wrong type or
    out of its range (``check_values``), naming it.
    """
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    merged: dict[str, dict[str, Any]] = {name: dict(values) for name, values in PRESETS[preset].items()}
    for section, values in (overrides or {}).items():
        if section not in SECTIONS:
            raise ConfigError(f"unknown config section {section!r}: use one of {', '.join(SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"config section {section} must be a mapping of settings (got {values!r})")
        merged.setdefault(section, {}).update(values)
    given = (overrides or {}).get("model", {})
    depth_follows = isinstance(given, dict) and "widths" in given and "depth" not in given
    parts: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        known = {f.name for f in dataclasses.fields(cls)}
        values = merged.get(section, {})
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown {section} setting(s) {', '.join(unknown)}: known are {', '.join(sorted(known))}")
        parts[section] = cls(**_coerce(cls, values))
    if depth_follows and parts["model"].widths:  # widths given, depth not: one block per width
        parts["model"] = dataclasses.replace(parts["model"], depth=len(parts["model"].widths))
    config = RunConfig(preset=preset, **parts)
    check_values(config)
    return config


def _coerce(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` as the types of ``cls``'s fields (lists from YAML/TOML become tuples);
    ConfigError naming the setting for a value of the wrong type."""
    section = next(name for name, known in SECTIONS.items() if known is cls)
    return {key: coerce_value(section, key, value) for key, value in values.items()}


def flatten(config: RunConfig) -> dict[str, Any]:
    """``section.field -> value`` for logging as params (tuples as comma lists)."""
    flat: dict[str, Any] = {"preset": config.preset}
    for section in SECTIONS:
        for key, value in dataclasses.asdict(getattr(config, section)).items():
            if isinstance(value, (tuple, list)):
                value = ",".join(str(v) for v in value)
            flat[f"{section}.{key}"] = value
    return flat


def to_dict(config: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(values: dict[str, Any]) -> RunConfig:
    """Inverse of ``to_dict`` (used by checkpoints and ``--resume``)."""
    overrides = {section: values.get(section, {}) for section in SECTIONS}
    return build_config(values.get("preset", "seed"), overrides)
