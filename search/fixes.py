"""``--fix NAME=VALUE``: fix any run setting of a study, typed by its RunConfig field."""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import replace
from typing import Any

from train.config import SECTIONS, RunConfig, check_values, setting_label, value_problem
from train.errors import ConfigError


def parse_fixes(items: list[str]) -> dict[str, Any]:
    """``["lr=1e-3", "epochs=3"]`` → ``{"lr": 0.001, "epochs": 3}``, typed by the RunConfig field.

    Any field of any config section may be fixed (``optim.lr=`` and ``batch-size=`` also work);
    a later item wins. Raises ConfigError naming ``--fix``."""
    fixes: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--fix {item!r}: write NAME=VALUE, e.g. --fix lr=1e-3")
        name = normalise(name)
        fixes[name] = coerce_field(name, value.strip())
    return fixes


def apply_fixes(base: RunConfig, fixes: dict[str, Any]) -> RunConfig:
    """``base`` with every fixed field set, found by field name in any section of ``SECTIONS``."""
    parts: dict[str, dict[str, Any]] = {}
    for raw_name, value in fixes.items():
        name = normalise(raw_name)
        section, _ = field_of(name)
        parts.setdefault(section, {})[name] = coerce_field(name, value)
    model = parts.get("model", {})
    if model.get("widths") and "depth" not in model:  # fixed widths fix the depth too
        model["depth"] = len(model["widths"])
    fixed = replace(base, **{section: replace(getattr(base, section), **values) for section, values in parts.items()})
    check_values(fixed, lambda section, name: f"--fix {name}" if name in parts.get(section, {})
                 else setting_label(section, name))
    return fixed


def normalise(name: str) -> str:
    name = name.strip().replace("-", "_")
    section, dot, rest = name.partition(".")
    return rest if dot and section in SECTIONS else name


def field_of(name: str) -> tuple[str, dataclasses.Field]:
    """(section, field) of a RunConfig field by name; ConfigError naming --fix otherwise."""
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            if f.name == name:
                if not f.metadata.get("cli", True):
                    raise ConfigError(f"--fix {name}: {name} is set from the data and cannot be fixed")
                return section, f
    known = [f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"did you mean {' or '.join(close)}?" if close else f"known settings: {', '.join(known)}"
    raise ConfigError(f"--fix {name}: no such setting; {hint}")


def coerce_field(name: str, value: Any) -> Any:
    """``value`` (text or typed) as the type of RunConfig field ``name``; ConfigError naming --fix."""
    section, _ = field_of(name)
    hint = typing.get_type_hints(SECTIONS[section])[name]
    many = typing.get_origin(hint) is tuple
    items = (value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple))
             else (value,)) if many else (value,)
    try:
        typed = tuple(_scalar(typing.get_args(hint)[0] if many else hint, v) for v in items if not many or str(v).strip())
    except ValueError as error:
        shown = value
        flag = "--" + name.replace("_", "-")
        search = f"; to search a range use {flag} {value}" if ".." in str(value) else ""
        raise ConfigError(f"--fix {name}={shown}: {error}{search}") from None
    result = typed if many else typed[0]
    problem = value_problem(section, name, result)
    if problem:
        raise ConfigError(f"--fix {name}={value}: {name} {problem}")
    return result


def _scalar(kind: type, value: Any) -> Any:
    text = str(value).strip()
    if kind is bool:
        if isinstance(value, bool) or text.lower() in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            return value if isinstance(value, bool) else text.lower() in ("true", "yes", "on", "1")
        raise ValueError("needs true or false")
    if kind in (int, float):
        try:
            number = float(value) if not isinstance(value, bool) else math.nan
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or (kind is int and not number.is_integer()):
            raise ValueError("needs a whole number" if kind is int else "needs a finite number")
        return kind(number)
    return text
