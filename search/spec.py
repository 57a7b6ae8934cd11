"""How a search setting is written: ranges, choices and fixed values, and their text form."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Union

from convscope.train.errors import ConfigError


@dataclass(frozen=True)
class IntRange:
    """Whole numbers ``low..high`` inclusive; ``high=None`` (depth only) = the largest that fits."""
    low: int
    high: int | None
    log: bool = False
    step: int = 1


@dataclass(frozen=True)
class FloatRange:
    """Real numbers ``low..high`` inclusive, uniform or on a log scale."""
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Choice:
    """One of ``values`` (Optuna categorical)."""
    values: tuple


Spec = Union[IntRange, FloatRange, Choice, int, float, None]  # None = keep the base config's value


def parse_spec(text: str | int | float | list | tuple) -> IntRange | FloatRange | Choice | int | float:
    """``"2..6"`` → IntRange, ``"0.0..0.5"`` → FloatRange, ``"1e-4..1e-1:log"`` → log range,
    ``"16..128:step=16"``, ``"2.."`` (open top, depth only), ``"32,64,128"`` / a list → Choice,
    a single number → that fixed value. Raises ConfigError (without the flag: callers add it)."""
    if isinstance(text, bool):
        raise ConfigError(f"{text} is not a range, a list or a number (write on / off to switch a setting)")
    if isinstance(text, (int, float)):
        return text
    if isinstance(text, (list, tuple)):
        return Choice(tuple(number(str(item)) for item in text))
    body, *options = str(text).strip().split(":")
    if ".." not in body:
        if options:
            raise ConfigError(f":{options[0]} applies to ranges only, e.g. 1e-4..1e-1:log")
        if "," in body:
            return Choice(tuple(number(item) for item in body.split(",") if item.strip()))
        return number(body)
    low_text, _, high_text = body.partition("..")
    low, high = number(low_text), (number(high_text) if high_text.strip() else None)
    log, step = False, None
    for option in (option.strip().lower() for option in options):
        if option == "log":
            log = True
        elif option.startswith("step="):
            step = number(option[5:])
        else:
            raise ConfigError(f"unknown range option :{option} (use :log or :step=N)")
    if isinstance(low, int) and isinstance(high, (int, type(None))) and isinstance(step, (int, type(None))):
        return IntRange(low, high, log, 1 if step is None else step)
    if step is not None:
        raise ConfigError(":step=N needs whole numbers, e.g. 16..128:step=16")
    if high is None:
        raise ConfigError(f"{text!r} needs an upper end, e.g. {low}..{low * 10}")
    return FloatRange(float(low), float(high), log)


def format_spec(spec: Spec | str | tuple) -> str:
    """The inverse of ``parse_spec`` (``None`` → ``off``)."""
    if spec is None:
        return "off"
    if isinstance(spec, IntRange):
        options = (":log" if spec.log else "") + (f":step={spec.step}" if spec.step != 1 else "")
        return f"{spec.low}..{'' if spec.high is None else spec.high}{options}"
    if isinstance(spec, FloatRange):
        return f"{spec.low!r}..{spec.high!r}" + (":log" if spec.log else "")
    values = spec.values if isinstance(spec, Choice) else spec if isinstance(spec, tuple) else None
    if values is not None:
        return ",".join(repr(v) if isinstance(v, float) else str(v) for v in values) + ("," * (len(values) == 1))
    return repr(spec) if isinstance(spec, float) else str(spec)


def spec_values(spec: Any) -> tuple:
    """The numbers a spec names: range ends, choices or the fixed value(s)."""
    if isinstance(spec, (IntRange, FloatRange)):
        return tuple(v for v in (spec.low, spec.high) if v is not None)
    if isinstance(spec, Choice):
        return spec.values
    return () if spec is None else spec if isinstance(spec, tuple) else (spec,)


def number(text: str) -> int | float:
    for kind in (int, float):
        with contextlib.suppress(ValueError):
            if math.isfinite(value := kind(text.strip())):
                return value
    raise ConfigError(f"{text.strip()!r} is not a number")
