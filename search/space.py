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

import dataclasses
import difflib
import typing
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from convscope.search.spec import Choice, FloatRange, IntRange, Spec, format_spec, parse_spec, spec_values
from convscope.train.config_sections import SECTIONS, RunConfig
from convscope.train.setting_values import CHOICES, LIMIT_NOTES, setting_section
from convscope.train.setting_values import LIMITS as CONFIG_LIMITS
from convscope.train.errors import ConfigError

if TYPE_CHECKING:  # optuna is imported when a study runs, not when the command line starts
    import optuna
    from optuna.trial import FixedTrial


WIDTH_MODES = ("growth", "per-layer")
MAX_PARAMS = 2_000_000
"""The default parameter budget of a study's networks: about five times the seed network's
409,682, room for width 32 with padding 1 (1.6 M), small enough that any trial trains on a CPU."""


@dataclass(frozen=True)
class SearchSpace:
    """Per setting: a range, a Choice, a fixed value, or None (the base config's value). Each field's
    comment is its search flag's help; a field named like a run setting searches that setting. The
    fields' order is the order ``suggest`` draws them in (a seeded study's draws depend on it)."""
    depth: Spec = IntRange(1, None)  # conv blocks
    widths: str | tuple[int, ...] = "growth"  # growth (base_width * growth**i) | per-layer (width_1..width_N) | fixed widths
    base_width: Spec = IntRange(8, 64, log=True)  # channels of conv1 (growth mode)
    growth: Spec = FloatRange(1.0, 2.0)  # channel multiplier from one block to the next (growth mode)
    layer_width: Spec = Choice((8, 16, 32, 64, 128, 256))  # each block's width (per-layer mode)
    dropout: Spec = FloatRange(0.0, 0.5)  # Dropout2d probability after every block
    head: Spec = None  # classifier head: flatten (the seed's) | gap (global average pool)
    head_activation: Spec = None  # a ReLU between the head's two linear layers: true | false
    lr: Spec = FloatRange(1e-3, 3e-2, log=True)  # peak learning rate (one-cycle)
    label_smoothing: Spec = field(default=None, metadata={"on": FloatRange(0.0, 0.2)})  # label smoothing of the training loss
    weight_decay: Spec = FloatRange(1e-5, 1e-2, log=True)  # AdamW weight decay
    batch_size: Spec = field(default=None, metadata={"on": Choice((32, 64, 128, 256))})  # images per step
    image_size: Spec = None  # input side in pixels (e.g. 64,96)
    kernel_size: Spec = field(default=None, metadata={"on": Choice((3, 5))})  # conv kernel size
    max_params: Spec = MAX_PARAMS  # networks above this many parameters are pruned before training
    origins: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)  # setting -> as the user wrote it


SETTINGS = tuple(f.name for f in dataclasses.fields(SearchSpace) if f.name != "origins")
OPTIONAL_RANGES: dict[str, Spec] = {
    f.name: f.metadata.get("on", f.default) for f in dataclasses.fields(SearchSpace)
    if "on" in f.metadata}
"""What ``--NAME on`` searches: a field's ``on`` metadata (those off unless asked for), or its default."""
SHAPE_SETTINGS = ("image_size", "depth", "widths", "base_width", "growth", "layer_width")
"""Settings ``suggest`` draws in order, by hand: they decide the network's geometry together."""
NOT_SAMPLED = ("max_params",)  # a limit on what is sampled, never a trial parameter itself
PLAIN_SETTINGS = tuple(name for name in SETTINGS if name not in SHAPE_SETTINGS + NOT_SAMPLED)
"""Settings that are one field of the run config each, drawn alike: a new searchable setting is a
field of ``SearchSpace`` named like its config field, and nothing else."""


def _declared(name: str) -> tuple[str, Any] | None:
    """The run config's (section, type) of setting ``name``, or None for a search-only setting."""
    section = setting_section(name)
    return (section, typing.get_type_hints(SECTIONS[section])[name]) if section else None


_AT_LEAST_1: tuple[typing.Callable[[float], bool], str] = (lambda v: v >= 1, "at least 1")
INT_SETTINGS = {"depth", "widths", "layer_width", "max_params"} | {
    name for name in SETTINGS if (_declared(name) or (None, None))[1] is int}
WORDS: dict[str, tuple] = {
    name: (False, True) if kind is bool else CHOICES[(section, name)]
    for name in SETTINGS if (found := _declared(name)) is not None
    for section, kind in [found] if kind is bool or (section, name) in CHOICES}
"""Settings whose values are words, not numbers: one of them fixes it, a comma list (or ``on``) searches."""
LIMITS: dict[str, tuple[typing.Callable[[float], bool], str]] = {
    **dict.fromkeys(("depth", "widths", "layer_width", "max_params"), _AT_LEAST_1),
    **{name: (CONFIG_LIMITS[(section, name)][0], CONFIG_LIMITS[(section, name)][1]
              + (f" ({LIMIT_NOTES[(section, name)]})" if (section, name) in LIMIT_NOTES else ""))
       for name in SETTINGS if name not in WORDS and (found := _declared(name)) is not None
       for section in [found[0]] if (section, name) in CONFIG_LIMITS},
}
"""What a searched value must be: the run config's own limit of the setting (``train.setting_values.LIMITS``)."""


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
    """``base`` with every setting ``space`` searches drawn: the shape settings by hand, in order
    (``SHAPE_SETTINGS``), then every other one into its config field (``PLAIN_SETTINGS``).

    The only function that calls ``trial.suggest_*``. The result passes ``train.model.validate``.
    """
    from convscope.train.geometry import validate

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
    model = replace(model, image_size=draw("image_size", space.image_size, model.image_size))
    depth = draw("depth", space.depth, model.depth)
    if isinstance(space.widths, tuple):
        shape: dict[str, Any] = {"widths": space.widths}
    elif space.widths == "per-layer":
        shape = {"widths": tuple(draw(f"width_{i}", space.layer_width, None) for i in range(1, depth + 1))}
    else:
        shape = {"widths": (), "base_width": draw("base_width", space.base_width, model.base_width),
                 "growth": draw("growth", space.growth, model.growth)}
    model = replace(model, depth=depth, **shape)
    sections = {"model": model, "data": base.data, "optim": optim}
    for name in PLAIN_SETTINGS:
        section = setting_section(name)
        assert section in sections, f"search setting {name} is no model, data or optim setting"
        sections[section] = replace(sections[section], **{name: draw(name, getattr(space, name),
                                                                     getattr(sections[section], name))})
    model, optim = sections["model"], sections["optim"]
    validate(model)
    return replace(base, model=model, data=sections["data"], optim=optim)


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
    from convscope.train.geometry import max_depth, min_image_size

    _check(space)
    if space.image_size is not None:  # every depth searched must fit the smallest input searched
        base = replace(base, model=replace(base.model, image_size=min(spec_values(space.image_size))))
    if space.kernel_size is not None:  # … and the largest kernel searched
        base = replace(base, model=replace(base.model, kernel_size=max(spec_values(space.kernel_size))))
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
        larger = f"use --image-size {need} or more" if need is not None else "no input size fits that many blocks"
        raise ConfigError(f"{source}: the largest depth that fits {side}x{side} inputs is {fits} "
                          f"({fewer}{larger})")
    return replace(space, depth=depth)


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


def params_text(params: dict[str, Any]) -> str:
    """A trial's parameters as people read them: ``depth=4, base_width=43, growth=1.58`` (floats to three
    significant digits)."""
    return ", ".join(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}"
                     for name, value in params.items())


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
            return "one of " + ", ".join(str(v).lower() if isinstance(v, bool) else str(v) for v in spec.values)
        return f"fixed at {format_spec(spec)}"

    widths = ([("widths", space.widths)] if isinstance(space.widths, tuple) else
              [("width_1..N", space.layer_width)] if space.widths == "per-layer" else
              [("base_width", space.base_width), ("growth", space.growth)])
    rows = [("depth", space.depth), *widths, ("image_size", space.image_size),
            *((n, getattr(space, n)) for n in PLAIN_SETTINGS)]
    budget = (f"  networks of more than {space.max_params:,} parameters are pruned before training (--max-params)"
              if space.max_params is not None else "  no parameter budget (--max-params off)")
    return "\n".join(["search space (Optuna parameter: values):",
                      *(f"  {n:<{2 + max(len(name) for name, _ in rows)}}{text(spec)}" for n, spec in rows), budget])


# ---------------------------------------------------------------- helpers


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
    if name in WORDS:
        return _words(name, word)
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


def _words(name: str, word: Any) -> Any:
    """A word setting's spec: one value (fixed), several (a Choice), ``on`` (all), ``off`` (None)."""
    allowed = WORDS[name]
    if word in ("off", None):
        return None
    items = list(allowed) if word == "on" else word if isinstance(word, (list, tuple)) else str(word).split(",")
    values = []
    for item in items:
        text = str(item).strip().lower()
        value = {"true": True, "false": False}.get(text, text) if bool in map(type, allowed) else text
        if value not in allowed:
            raise ConfigError(f"use {', '.join(str(v).lower() for v in allowed)}, a comma list of them, or on")
        values.append(value)
    return values[0] if len(values) == 1 else Choice(tuple(dict.fromkeys(values)))


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


def _check(space: SearchSpace) -> None:
    """The checks that do not need the input size (``resolve`` checks depth against it)."""
    if space.max_params is not None and not isinstance(space.max_params, int):
        raise ConfigError(f"{_source(space, 'max_params')}: give one number of parameters, e.g. 2000000, or off")
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
        if name in WORDS:
            continue
        allowed, text = LIMITS[name]
        bad = [v for v in spec_values(spec if name != "widths" or isinstance(spec, tuple) else None) if not allowed(v)]
        if bad:
            raise ConfigError(f"{source}: {name} must be {text} (got {format_spec(bad[0])})")
