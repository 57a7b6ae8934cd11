"""The search space: what a study varies, how users write it, and the one function that samples it.

Contract:
- ``SearchSpace`` holds, per setting, a range (``IntRange``/``FloatRange``), a ``Choice``, a
  fixed value (used as is, never suggested) or ``None`` (the base config's value, never suggested).
- ``suggest`` is the only place that calls ``trial.suggest_*``. Optuna parameter names are
  ``depth``, ``base_width``, ``growth``, ``width_1`` … ``width_N``, ``dropout``, ``lr``,
  ``weight_decay`` and ``batch_size``; ``config_from_params`` rebuilds a trial's config from them.
- User mistakes raise ``ConfigError`` naming the flag as the user wrote it
  (``--depth 2..9: the largest depth that fits 64x64 inputs is 5 …``).

Typical use (``cli.search_cmd``): ``space = space_from_settings(settings, base)`` with the
settings from the flags and the config file's ``search:`` section, then ``suggest(trial, space,
base)`` in the objective and ``make_sampler(seed)`` for the study.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import typing
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Union

from train.config import RunConfig
from train.errors import ConfigError

if TYPE_CHECKING:  # optuna is imported when a study runs, not when the command line starts
    import optuna
    from optuna.trial import FixedTrial


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

WIDTH_MODES = ("growth", "per-layer")
# What ``--lr on`` (etc.) searches; these are off (the base config's value) unless asked for.
OPTIONAL_RANGES: dict[str, Spec] = {
    "lr": FloatRange(1e-4, 3e-2, log=True),
    "weight_decay": FloatRange(1e-5, 1e-1, log=True),
    "batch_size": Choice((32, 64, 128, 256)),
}


@dataclass(frozen=True)
class SearchSpace:
    """Per setting: a range, a Choice, a fixed value, or None (the base config's value)."""
    depth: Spec = IntRange(1, None)  # conv blocks; 1 .. the largest depth that fits the input size
    widths: str | tuple[int, ...] = "growth"  # growth (base_width * growth**i) | per-layer (width_1..width_N) | fixed widths
    base_width: Spec = IntRange(8, 64, log=True)  # channels of conv1 (growth mode)
    growth: Spec = FloatRange(1.0, 2.5)  # channel multiplier from one block to the next (growth mode)
    layer_width: Spec = Choice((8, 16, 32, 64, 128, 256))  # each block's width (per-layer mode)
    dropout: Spec = FloatRange(0.0, 0.5)  # Dropout2d probability after every block
    lr: Spec = None  # peak learning rate; off unless asked for (--lr on = 1e-4..3e-2:log)
    weight_decay: Spec = None  # AdamW weight decay; off unless asked for (--weight-decay on = 1e-5..1e-1:log)
    batch_size: Spec = None  # images per step; off unless asked for (--batch-size on = 32,64,128,256)
    origins: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)  # setting -> as the user wrote it


SETTINGS = tuple(f.name for f in dataclasses.fields(SearchSpace) if f.name != "origins")
INT_SETTINGS = {"depth", "widths", "base_width", "layer_width", "batch_size"}
LIMITS: dict[str, tuple[typing.Callable[[float], bool], str]] = {
    **dict.fromkeys(("depth", "widths", "base_width", "layer_width"), (lambda v: v >= 1, "at least 1")),
    "batch_size": (lambda v: v >= 2, "at least 2 (BatchNorm needs two images per step)"),
    "growth": (lambda v: v > 0, "above 0"),
    "dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "lr": (lambda v: v > 0, "above 0"),
    "weight_decay": (lambda v: v >= 0, "at least 0"),
}
SPEC_SYNTAX = """\
search settings (flags, or the search: section of --config):
  2..6  whole numbers       2..  up to the largest depth that fits    16..128:step=16  in steps
  0.0..0.5  real numbers    1e-4..1e-1:log  on a log scale            32,64,128  one of these
  0.2  a fixed value (not searched)    on / off  the default range / the base config's value
  --widths growth (base_width x growth**i) | per-layer (width_1..width_N from --layer-width)
  --fix NAME=VALUE  the same as --NAME VALUE: fixes any setting, searched or not (--fix lr=1e-3)"""


def make_sampler(seed: int | None) -> "optuna.samplers.TPESampler":
    """The study's sampler. Per-layer widths are conditional (``width_4`` exists only when
    depth >= 4): ``group=True`` models each set of co-occurring parameters jointly instead of
    falling back to independent sampling, and ``multivariate=True`` captures depth x width x dropout."""
    with warnings.catch_warnings():
        import optuna

        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # group= is "experimental"
        return optuna.samplers.TPESampler(group=True, multivariate=True, seed=seed)


def config_keys(names: Iterable[str]) -> tuple[str, ...]:
    """The settings (flag names) that ``suggest``'s parameters ``names`` set (``width_K`` → ``widths``)."""
    return tuple(dict.fromkeys("widths" if name.startswith("width_") else name for name in names))


def suggest(trial: optuna.Trial | FixedTrial, space: SearchSpace, base: RunConfig) -> RunConfig:
    """``base`` with depth, widths, dropout, lr, weight_decay and batch_size drawn from ``space``.

    The only function that calls ``trial.suggest_*``. The result passes ``train.model.validate``.
    """
    from train.geometry import validate

    space = resolve(space, base)

    def draw(name: str, spec: Spec, keep: Any) -> Any:
        if spec is None:
            return keep
        if isinstance(spec, IntRange):
            return trial.suggest_int(name, spec.low, spec.high, step=spec.step, log=spec.log)
        if isinstance(spec, FloatRange):
            return trial.suggest_float(name, spec.low, spec.high, log=spec.log)
        if isinstance(spec, Choice):
            return trial.suggest_categorical(name, spec.values)
        return spec

    model, optim = base.model, base.optim
    depth = draw("depth", space.depth, model.depth)
    if isinstance(space.widths, tuple):
        shape: dict[str, Any] = {"widths": space.widths}
    elif space.widths == "per-layer":
        shape = {"widths": tuple(draw(f"width_{i}", space.layer_width, None) for i in range(1, depth + 1))}
    else:
        shape = {"widths": (), "base_width": draw("base_width", space.base_width, model.base_width),
                 "growth": draw("growth", space.growth, model.growth)}
    model = replace(model, depth=depth, dropout=draw("dropout", space.dropout, model.dropout), **shape)
    optim = replace(optim, lr=draw("lr", space.lr, optim.lr),
                    weight_decay=draw("weight_decay", space.weight_decay, optim.weight_decay),
                    batch_size=draw("batch_size", space.batch_size, optim.batch_size))
    validate(model)
    return replace(base, model=model, optim=optim)


def config_from_params(params: dict[str, Any], space: SearchSpace, base: RunConfig) -> RunConfig:
    """The RunConfig a trial with these ``params`` trained (e.g. the best trial), via ``FixedTrial``."""
    try:
        from optuna.trial import FixedTrial

        return suggest(FixedTrial(dict(params)), space, base)
    except ConfigError:
        raise
    except ValueError as error:  # FixedTrial: a parameter is missing or of another kind
        raise ConfigError(f"trial params {params} do not fit this search space ({error}); "
                          "use the study's own search settings and --fix values") from error


def resolve(space: SearchSpace, base: RunConfig) -> SearchSpace:
    """``space`` checked against ``base``'s input geometry, an open depth range closed at the
    largest depth that fits, the depth of fixed widths filled in. Raises ConfigError naming the flag."""
    from train.geometry import max_depth, min_image_size

    _check(space)
    fits, side, depth = max_depth(base.model), base.model.image_size, space.depth
    if isinstance(space.widths, tuple):
        if depth not in (None, len(space.widths), SearchSpace.depth):  # the default depth follows
            raise ConfigError(f"{_source(space, 'widths')} fixes the depth at {len(space.widths)}: "
                              f"drop {_source(space, 'depth')} or use --widths per-layer")
        depth = len(space.widths)
    elif isinstance(depth, IntRange) and depth.high is None:
        depth = replace(depth, high=max(fits, 1))
    top = max(spec_values(depth) or (base.model.depth,))
    if top > fits:
        source = (_source(space, "widths") if isinstance(space.widths, tuple) else
                  _source(space, "depth") if space.depth is not None else f"--depth {base.model.depth}")
        need = min_image_size(replace(base.model, depth=top))
        fewer = f"search at most {fits} blocks, or " if fits else ""
        raise ConfigError(f"{source}: the largest depth that fits {side}x{side} inputs is {fits} "
                          f"({fewer}use --image-size {need} or more)")
    return replace(space, depth=depth)


def parse_spec(text: str | int | float | list | tuple) -> IntRange | FloatRange | Choice | int | float:
    """``"2..6"`` → IntRange, ``"0.0..0.5"`` → FloatRange, ``"1e-4..1e-1:log"`` → log range,
    ``"16..128:step=16"``, ``"2.."`` (open top, depth only), ``"32,64,128"`` / a list → Choice,
    a single number → that fixed value. Raises ConfigError (without the flag: callers add it)."""
    if isinstance(text, bool):
        raise ConfigError(f"{text} is not a range, a list or a number (write on / off to switch a setting)")
    if isinstance(text, (int, float)):
        return text
    if isinstance(text, (list, tuple)):
        return Choice(tuple(_number(str(item)) for item in text))
    body, *options = str(text).strip().split(":")
    if ".." not in body:
        if options:
            raise ConfigError(f":{options[0]} applies to ranges only, e.g. 1e-4..1e-1:log")
        if "," in body:
            return Choice(tuple(_number(item) for item in body.split(",") if item.strip()))
        return _number(body)
    low_text, _, high_text = body.partition("..")
    low, high = _number(low_text), (_number(high_text) if high_text.strip() else None)
    log, step = False, None
    for option in (option.strip().lower() for option in options):
        if option == "log":
            log = True
        elif option.startswith("step="):
            step = _number(option[5:])
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


def space_from_settings(settings: dict[str, Any] | None, base: RunConfig | None = None,
                        labels: dict[str, str] | None = None) -> SearchSpace:
    """A SearchSpace from ``settings`` (setting → spec text, number or list; from flags or a
    config file's ``search:`` section; a single value fixes the setting). ``labels`` name a
    setting in messages where the user wrote it another way (``--fix lr=1e-3``). With ``base``,
    the space is also ``resolve``d against its input size."""
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for raw_name, raw in (settings or {}).items():
        name = str(raw_name).strip().replace("-", "_")
        shown = ",".join(map(str, raw)) if isinstance(raw, (list, tuple)) else raw
        origins[name] = (labels or {}).get(name) or f"{_flag(name)} {shown}"
        try:
            values[name] = _setting(name, raw)
        except ConfigError as error:
            shown_as = origins[name] if name in SETTINGS or name in (labels or {}) else _flag(name)
            raise ConfigError(f"{shown_as}: {error}") from None
    space = replace(SearchSpace(), **values, origins=tuple(origins.items()))
    _check(space)
    return resolve(space, base) if base is not None else space


def describe(space: SearchSpace) -> str:
    """A few lines showing what is searched, for ``--help`` and the start of a study."""

    def text(spec: Any) -> str:
        if spec is None:
            return "the base config's value (not searched)"
        if isinstance(spec, (IntRange, FloatRange)):
            top = "largest that fits" if spec.high is None else format_spec(spec.high)
            step = f", step {spec.step}" if getattr(spec, "step", 1) != 1 else ""
            return f"{format_spec(spec.low)} .. {top}" + ", log scale" * spec.log + step
        if isinstance(spec, Choice):
            return "one of " + ", ".join(map(str, spec.values))
        return f"fixed at {format_spec(spec)}"

    widths = ([("widths", space.widths)] if isinstance(space.widths, tuple) else
              [("width_1..N", space.layer_width)] if space.widths == "per-layer" else
              [("base_width", space.base_width), ("growth", space.growth)])
    rows = [("depth", space.depth), *widths, *((n, getattr(space, n)) for n in ("dropout", "lr", "weight_decay", "batch_size"))]
    return "\n".join(["search space (Optuna parameter: values):", *(f"  {n:<14}{text(spec)}" for n, spec in rows)])


# ---------------------------------------------------------------- helpers


def _number(text: str) -> int | float:
    for kind in (int, float):
        with contextlib.suppress(ValueError):
            if math.isfinite(value := kind(text.strip())):
                return value
    raise ConfigError(f"{text.strip()!r} is not a number")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _source(space: SearchSpace, name: str) -> str:
    return dict(space.origins).get(name) or f"{_flag(name)} {format_spec(getattr(space, name))}"


def _setting(name: str, raw: Any) -> Any:
    """One setting's spec, typed for the setting (``on``/``off`` included)."""
    if name not in SETTINGS:
        close = " or ".join(_flag(c) for c in difflib.get_close_matches(name, SETTINGS, n=3))
        raise ConfigError(f"not a search setting; {f'did you mean {close}? ' if close else ''}(search settings: "
                          f"{', '.join(SETTINGS)}; set anything else with its own flag)")
    word = raw.strip().lower() if isinstance(raw, str) else raw
    if name == "widths":
        if isinstance(word, str) and word.replace("_", "-") in WIDTH_MODES:
            return word.replace("_", "-")
        spec = parse_spec(raw)
        if isinstance(spec, (IntRange, FloatRange)):
            raise ConfigError("use growth, per-layer or fixed widths such as 16,32,64 "
                              "(ranges belong to --base-width, --growth or --layer-width)")
        return _typed("widths", spec if isinstance(spec, Choice) else Choice((spec,))).values
    if word == "on" or word is True:
        return OPTIONAL_RANGES.get(name, getattr(SearchSpace(), name))
    if word == "off" or word is False or word is None:
        return None
    return _typed(name, parse_spec(raw))


def _typed(name: str, spec: Any) -> Any:
    """Whole numbers for int settings, real numbers for the others."""
    whole = name in INT_SETTINGS
    if whole and (isinstance(spec, FloatRange) or not all(float(v).is_integer() for v in spec_values(spec))):
        raise ConfigError(f"{name} needs whole numbers, e.g. 2..6 or 16,32")
    value = int if whole else float
    if isinstance(spec, Choice):
        return Choice(tuple(value(v) for v in spec.values))
    if isinstance(spec, IntRange) and not whole:
        if spec.step != 1 or spec.high is None:
            raise ConfigError(f"{name} needs a real-number range with both ends, e.g. 0.0..0.5")
        return FloatRange(float(spec.low), float(spec.high), spec.log)
    return spec if isinstance(spec, (IntRange, FloatRange)) else value(spec)


def spec_values(spec: Any) -> tuple:
    """The numbers a spec names: range ends, choices or the fixed value(s)."""
    if isinstance(spec, (IntRange, FloatRange)):
        return tuple(v for v in (spec.low, spec.high) if v is not None)
    if isinstance(spec, Choice):
        return spec.values
    return () if spec is None else spec if isinstance(spec, tuple) else (spec,)


def _check(space: SearchSpace) -> None:
    """The checks that do not need the input size (``resolve`` checks depth against it)."""
    if not (space.widths in WIDTH_MODES or isinstance(space.widths, tuple)):
        raise ConfigError(f"--widths {space.widths}: use growth, per-layer or a list of widths such as 16,32,64")
    if space.widths == "per-layer" and space.layer_width is None:
        raise ConfigError(f"{_source(space, 'layer_width')}: per-layer widths need a range or choices, e.g. 16,32,64")
    for name in SETTINGS:
        spec, source = getattr(space, name), _source(space, name)
        if isinstance(spec, (IntRange, FloatRange)):
            step = getattr(spec, "step", 1)
            problem = (f"the low end is above the high end (write {spec.high}..{spec.low})"
                       if spec.high is not None and spec.low > spec.high else
                       "a log-scale range must start above 0" if spec.log and spec.low <= 0 else
                       "the step must be at least 1 (and cannot go with :log)" if step < 1 or spec.log and step != 1 else
                       f"give the upper end too, e.g. {spec.low}..{spec.low * 4}" if spec.high is None and name != "depth"
                       else "")
            if problem:
                raise ConfigError(f"{source}: {problem}")
        allowed, text = LIMITS[name]
        bad = [v for v in spec_values(spec if name != "widths" or isinstance(spec, tuple) else None) if not allowed(v)]
        if bad:
            raise ConfigError(f"{source}: {name} must be {text} (got {format_spec(bad[0])})")
