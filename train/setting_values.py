"""What values each setting takes: the one place that knows every setting's type and range.

``coerce_value`` types one value (a config file's, a flag's, a checkpoint's), ``value_problem`` says
what is wrong with a typed one, and ``check_values`` checks a whole ``RunConfig`` (every field, then
the settings that depend on each other). The config file reader, the flag parser, ``--fix`` and the
environment flags call them with the name the user wrote; ``train.config.build_config`` calls
``check_values`` on every config.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from typing import Any

from convscope.train.config_sections import SECTIONS, RunConfig
from convscope.train.errors import ConfigError

POOLS = ("none", "max")  # as train.model.POOLS
HEADS = ("flatten", "gap")  # as train.model.HEADS
SCHEDULES = ("onecycle", "cosine", "constant")  # as train.loop.SCHEDULES
PRECISIONS = ("auto", "bf16", "fp32")  # as train.loop.PRECISIONS
GRAPH_MODES = ("auto", "off")  # --cuda-graph
VISUAL_EPOCHS = ("auto", "all", "latest", "ends")  # --visual-epochs, as pictures.epoch_visuals

Limit = tuple[Callable[[Any], bool], str]


def _at_least(low: int) -> Limit:
    return (lambda v: v >= low), f"at least {low}"


def _finite(test: Callable[[float], bool], text: str) -> Limit:
    return (lambda v: math.isfinite(v) and test(v)), f"a finite number {text}"


def _one_of(choices: tuple[str, ...]) -> Limit:
    return (lambda v: v in choices), f"one of {', '.join(choices)}"


CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("model", "pool"): POOLS, ("model", "head"): HEADS, ("optim", "schedule"): SCHEDULES,
    ("optim", "precision"): PRECISIONS, ("optim", "cuda_graph"): GRAPH_MODES,
    ("tracking", "visual_epochs"): VISUAL_EPOCHS,
}
"""(section, field) -> the words a text setting takes."""


_NOT_EMPTY: Limit = (lambda v: bool(v.strip())), "a non-empty text"

# (section, field) -> (test, what it must be); a tuple field's test applies to every item
LIMITS: dict[tuple[str, str], Limit] = {
    ("model", "depth"): _at_least(1),
    ("model", "widths"): _at_least(1),
    ("model", "base_width"): _at_least(1),
    ("model", "growth"): _finite(lambda v: v > 0, "above 0"),
    ("model", "dropout"): _finite(lambda v: 0 <= v < 1, "in [0, 1)"),
    ("model", "kernel_size"): _at_least(1),
    ("model", "stride"): _at_least(1),
    ("model", "padding"): _at_least(0),
    ("model", "pool"): _one_of(CHOICES[("model", "pool")]),
    ("model", "head"): _one_of(CHOICES[("model", "head")]),
    ("model", "head_hidden"): _at_least(0),
    ("model", "bypass"): _at_least(1),
    ("model", "image_size"): _at_least(1),
    ("model", "in_channels"): _at_least(1),
    ("model", "num_classes"): _at_least(2),
    ("data", "data"): _NOT_EMPTY,
    ("data", "val_fraction"): _finite(lambda v: 0 < v < 1, "in (0, 1)"),
    ("data", "test_fraction"): _finite(lambda v: 0 <= v < 0.9, "in [0, 0.9)"),
    ("data", "folds"): ((lambda v: v == 0 or v >= 2), "0 (no cross-validation) or at least 2"),
    ("data", "fold"): _at_least(0),
    ("data", "classes"): _NOT_EMPTY,
    ("data", "memory_fraction"): _finite(lambda v: 0 < v <= 1, "in (0, 1]"),
    ("data", "synthetic_size"): _at_least(2),
    ("data", "probes_per_class"): _at_least(0),
    ("data", "train_limit"): _at_least(0),
    ("data", "probe"): _NOT_EMPTY,
    ("data", "analysis_size"): _at_least(0),
    ("data", "data_seed"): ((lambda v: v >= -1), "-1 (the same as --seed) or at least 0"),
    ("optim", "epochs"): _at_least(1),
    ("optim", "batch_size"): _at_least(2),
    ("optim", "lr"): _finite(lambda v: v > 0, "above 0"),
    ("optim", "weight_decay"): _finite(lambda v: v >= 0, "of at least 0"),
    ("optim", "schedule"): _one_of(CHOICES[("optim", "schedule")]),
    ("optim", "patience"): _at_least(0),
    ("optim", "crop_padding"): _at_least(0),
    ("optim", "label_smoothing"): _finite(lambda v: 0 <= v < 1, "in [0, 1)"),
    ("optim", "seed"): (lambda v: 0 <= v <= 2**32 - 1, "a whole number from 0 to 4294967295 (2**32 - 1)"),
    ("optim", "device"): _NOT_EMPTY,
    ("optim", "precision"): _one_of(CHOICES[("optim", "precision")]),
    ("optim", "cuda_graph"): _one_of(CHOICES[("optim", "cuda_graph")]),
    ("tracking", "runs_dir"): _NOT_EMPTY,
    ("tracking", "experiment"): _NOT_EMPTY,
    ("tracking", "visual_epochs"): _one_of(CHOICES[("tracking", "visual_epochs")]),
}

# (section, field) -> why, added to the message
LIMIT_NOTES: dict[tuple[str, str], str] = {
    ("optim", "batch_size"): "BatchNorm needs two images a step",
    ("data", "synthetic_size"): "one per class at least",
    ("model", "num_classes"): "a classifier needs two classes",
}

_KIND_TEXT = {int: "an integer", float: "a number", bool: "true or false", str: "a text"}


def setting_section(name: str) -> str | None:
    """The config section that holds setting ``name`` (field names are unique across sections), or None."""
    return next((section for section, cls in SECTIONS.items()
                 if any(f.name == name for f in dataclasses.fields(cls))), None)


def setting_label(section: str, name: str) -> str:
    """How a message names a setting when it cannot tell where the value came from:
    ``--batch-size / optim.batch_size`` (``model.num_classes`` for one that is no flag)."""
    cls = SECTIONS[section]
    is_flag = next(f for f in dataclasses.fields(cls) if f.name == name).metadata.get("cli", True)
    return f"--{name.replace('_', '-')} / {section}.{name}" if is_flag else f"{section}.{name}"


def field_type(section: str, name: str) -> Any:
    return typing.get_type_hints(SECTIONS[section])[name]


def coerce_value(section: str, name: str, value: Any, label: str | None = None) -> Any:
    """``value`` as the type of setting ``section.name``; ConfigError saying what it got and what it needs.

    Integers must be integers, switches true or false; a number is accepted where text is
    expected, an integer or a numeric text (YAML reads ``1e-3`` as text) where a number is, and a
    tuple of integers may be a list or a comma- or space-separated text (``"8,16"``)."""
    hint = field_type(section, name)
    label = label or setting_label(section, name)
    if typing.get_origin(hint) is tuple:
        kind = typing.get_args(hint)[0]
        if isinstance(value, str) and kind is int:
            items: Any = value.replace(",", " ").split()
        elif isinstance(value, (list, tuple)):
            items = value
        elif isinstance(value, (str, int)) and not isinstance(value, bool):
            items = (value,)  # one probe file, one bypassed block
        else:
            raise ConfigError(f"{label} must be a list of {_plural(kind)} "
                              f"(got {value!r})")
        try:
            return tuple(_scalar(kind, item, from_text=isinstance(value, str)) for item in items)
        except ValueError as error:
            raise ConfigError(f"{label} must be a list of {_plural(kind)} "
                              f"(got {value!r}: {error})") from None
    try:
        return _scalar(hint, value)
    except ValueError as error:
        raise ConfigError(f"{label} must be {_KIND_TEXT[hint]} (got {value!r}{_reason(error, value)})") from None


def _reason(error: ValueError, value: Any) -> str:
    return f": {error}" if str(error) and isinstance(value, (list, tuple, dict)) else ""


def _scalar(kind: type, value: Any, from_text: bool = False) -> Any:
    if isinstance(value, (list, tuple, dict)):
        raise ValueError("a single value is expected, not a list" if not isinstance(value, dict)
                         else "a single value is expected, not a mapping")
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{value!r} is not true or false")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_text and isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ValueError(f"{value!r} is not an integer")
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"{value!r} is not a number")
    if kind is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"{value!r} is not a text")
    return value


def _has_type(value: Any, hint: Any) -> bool:
    if typing.get_origin(hint) is tuple:
        kind = typing.get_args(hint)[0]
        return isinstance(value, tuple) and all(_has_type(item, kind) for item in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _plural(kind: type) -> str:
    return {int: "integers", str: "texts"}.get(kind, f"{kind.__name__}s")


def value_problem(section: str, name: str, value: Any) -> str | None:
    """What is wrong with the typed ``value`` of ``section.name`` (``"must be at least 1 (got 0)"``), or None."""
    limit = LIMITS.get((section, name))
    if limit is None:
        return None
    test, text = limit
    items = value if isinstance(value, tuple) else (value,)
    bad = [item for item in items if not test(item)]
    if not bad:
        return None
    shown = " ".join(map(str, value)) if isinstance(value, tuple) else repr(value) if isinstance(value, str) else value
    note = f"; {LIMIT_NOTES[section, name]}" if (section, name) in LIMIT_NOTES else ""
    return f"must be {'all ' if isinstance(value, tuple) else ''}{text} (got {shown}){note}"


def check_value(section: str, name: str, value: Any, label: str | None = None) -> Any:
    """``value`` typed for ``section.name`` and checked against its range; ConfigError naming ``label``."""
    typed = coerce_value(section, name, value, label)
    problem = value_problem(section, name, typed)
    if problem:
        raise ConfigError(f"{label or setting_label(section, name)} {problem}")
    return typed


def check_values(config: RunConfig, label: Callable[[str, str], str] = setting_label) -> None:
    """ConfigError for the first setting of ``config`` of the wrong type or out of its range, or
    for settings that do not go together; ``label(section, name)`` names a setting in the message.

    Checks values only: whether the architecture fits the input size is ``train.model.validate``'s."""
    for section in SECTIONS:
        part = getattr(config, section)
        for f in dataclasses.fields(part):
            value = getattr(part, f.name)
            hint = field_type(section, f.name)
            if not _has_type(value, hint):
                kind = typing.get_args(hint)[0] if typing.get_origin(hint) is tuple else None
                need = f"a tuple of {_plural(kind)}" if kind else _KIND_TEXT.get(hint, str(hint))
                raise ConfigError(f"{label(section, f.name)} must be {need} (got {value!r})")
            problem = value_problem(section, f.name, value)
            if problem:
                raise ConfigError(f"{label(section, f.name)} {problem}")
    data, optim, model = config.data, config.optim, config.model
    if data.folds and data.fold >= data.folds:
        raise ConfigError(f"{label('data', 'fold')} must be between 0 and {data.folds - 1} (got {data.fold}): "
                          f"{label('data', 'folds')} is {data.folds}")
    if not data.folds and data.fold:
        raise ConfigError(f"{label('data', 'fold')} {data.fold} needs {label('data', 'folds')} (the number of folds)")
    if optim.crop_padding >= model.image_size:
        raise ConfigError(f"{label('optim', 'crop_padding')} must be below {label('model', 'image_size')} "
                          f"{model.image_size} (got {optim.crop_padding}); 0 switches random crops off")
