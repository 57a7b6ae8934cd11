"""Run configuration: frozen dataclasses, one comment per default.

The CLI is generated from these classes (see ``cli.setting_flags``): every field is a
flag, its comment is the help text. The fully resolved ``RunConfig`` is logged
with every run (``config.yaml``, which ``--config`` reads back), so a run can
always be reproduced.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from convscope.train.errors import ConfigError


@dataclass(frozen=True)
class ModelConfig:
    depth: int = 5  # number of conv blocks (conv1 … convN)
    widths: tuple[int, ...] = ()  # per-block output channels; empty = base_width * growth**i
    base_width: int = 16  # channels of conv1 when --widths is not given
    growth: float = 2.0  # channel multiplier from one block to the next
    dropout: float = 0.1  # Dropout2d probability after every block
    kernel_size: int = 3  # conv kernel size
    stride: int = 2  # conv stride
    padding: int = 0  # conv zero padding
    batch_norm: bool = True  # BatchNorm2d after every conv (convs then have no bias)
    pool: str = "none"  # after every block: none | max (2x2 max-pool)
    head: str = "flatten"  # classifier head: flatten (the last map flattened, sized by --image-size) | gap (global average pool to one value per channel: any input size)
    head_hidden: int = 64  # width of the hidden linear layer of the head; 0 drops it
    head_activation: bool = False  # a ReLU between the head's two linear layers (none when --head-hidden is 0)
    bypass: tuple[int, ...] = ()  # blocks (1-based) replaced by a linear shape adapter (ablation): average pooling to the block's output size, then a 1x1 conv to its width
    image_size: int = 64  # input height and width in pixels
    in_channels: int = field(default=3, metadata={"cli": False})  # input colour channels (set from the data)
    num_classes: int = field(default=2, metadata={"cli": False})  # output classes (set from the data)

    def channel_widths(self) -> tuple[int, ...]:
        """The per-block widths this config resolves to."""
        if self.widths:
            return tuple(self.widths)
        return tuple(max(1, round(self.base_width * self.growth**i)) for i in range(self.depth))


SYNTHETIC_DEPTH = re.compile(r"synthetic-depth(\d+)")  # --data synthetic-depthK: a task that needs K blocks
NAMED_DATA = ("synthetic", "cifar10", "oxford-pets")  # --data values that name no folder


@dataclass(frozen=True)
class DataConfig:
    data: str = "synthetic"  # synthetic | synthetic-depthK (needs K blocks) | cifar10 | oxford-pets | an image folder (one sub-folder per class, or train/ and val/)
    val_fraction: float = 0.2  # share of every class held out for validation (class-folder layout)
    test_fraction: float = 0.0  # share of every class set aside as a test split before train and validation are drawn (the same photos whatever --seed; convscope search scores its best network on it once, at the end); 0 = none; a folder's own test/ split is used instead when it has one
    folds: int = 0  # k-fold cross-validation: split into this many folds (0 = use --val-fraction)
    train_limit: int = 0  # train on at most this many of the training split's images, a stratified sample drawn with the data seed (0 = all); convscope depth --timeout sets it when the budget cannot fit every photo
    fold: int = 0  # which fold is the validation set when --folds is set
    classes: str = "default"  # cifar10 classes: default (cat,dog) | all | a comma list such as cat,dog,horse
    download: bool = False  # allow downloading cifar10 / oxford-pets into --dataset-dir
    dataset_dir: str = ""  # where torchvision data sets live; empty = <runs-dir>/datasets
    cache_dir: str = ""  # decode cache for image folders; empty = <runs-dir>/cache
    memory_fraction: float = 0.5  # stream from the files instead when decoded images need more of the free RAM
    synthetic_size: int = 6000  # images generated for the synthetic data set
    probes_per_class: int = 4  # validation images per class drawn every epoch
    probe: tuple[str, ...] = ()  # extra probe image files (repeatable)
    analysis_size: int = 256  # validation images whose pooled activations are stored at the end
    data_seed: int = -1  # seed of the data set, the split/folds, probes and analysis set; -1 = the same as --seed

    def effective_seed(self, seed: int) -> int:
        """The seed the data, split/folds, probes and analysis set use, given ``--seed``:
        ``--data-seed`` unless it is -1, else ``seed``. ConfigError for a value below -1."""
        if self.data_seed < -1:
            raise ConfigError(f"--data-seed must be -1 (the same as --seed) or at least 0 (got {self.data_seed})")
        return seed if self.data_seed == -1 else self.data_seed


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = 10  # training epochs
    batch_size: int = 128  # images per step
    lr: float = 1e-2  # peak learning rate (AdamW)
    weight_decay: float = 5e-4  # AdamW weight decay
    schedule: str = "onecycle"  # learning-rate schedule: onecycle | cosine | constant
    patience: int = 0  # stop after this many epochs without a better validation loss; 0 = never
    flip: bool = True  # random horizontal flips while training
    crop_padding: int = 4  # random crops: pad by N pixels (reflect) and crop back; 0 = off
    label_smoothing: float = 0.0  # label smoothing of the training loss only (train/loss); val/loss stays plain cross-entropy, comparable across runs
    tta: bool = False  # also evaluate with flip test-time augmentation (mean softmax of image and mirror): logs val/accuracy_tta and val/loss_tta beside the plain val/accuracy
    seed: int = 0  # seed of initialisation and shuffling (and of the data when --data-seed is -1)
    device: str = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto (bf16 autocast on CUDA and on CPUs with bf16 matrix units) | bf16 | fp32
    cuda_graph: str = "auto"  # auto (on CUDA each training and evaluation step replays one captured CUDA graph; every training batch full) | off
    compile: bool = False  # torch.compile the model's training forward first (the first step's time, compile included, is logged as first_step_seconds)


@dataclass(frozen=True)
class TrackingConfig:
    runs_dir: str = "runs"  # where the embedded stores live (MLflow db, TensorBoard, checkpoints)
    experiment: str = "convscope"  # MLflow experiment and TensorBoard folder
    run_name: str = ""  # run name; empty = generated from time and preset
    mlflow: bool = True  # log to MLflow
    tensorboard: bool = True  # log to TensorBoard
    mlflow_uri: str = ""  # MLflow tracking URI; empty = $MLFLOW_TRACKING_URI or the embedded sqlite store
    visuals: bool = True  # per-epoch feature maps, saliency, statistics and activation artifacts
    visual_epochs: str = "auto"  # which epochs get pictures: auto (latest on CUDA, all elsewhere) | all (every epoch; training waits for drawing when it outpaces it) | latest (epoch 1, the last, and between them the latest epoch whenever drawing is free; training never waits) | ends (epoch 1 and the last; probe activations of the latest only): statistics every epoch; convscope search's trials use ends


MACHINE_SETTINGS: dict[str, tuple[str, ...]] = {
    "optim": ("device", "precision", "cuda_graph", "compile"),
    "data": ("download", "dataset_dir", "cache_dir", "memory_fraction"),
}
"""Settings about the machine a run happens to use, not the network or data it trains: a run that
rebuilds another run's network (``depth --study``) keeps its own."""


@dataclass(frozen=True)
class RunConfig:
    preset: str = "seed"  # named starting point: seed | tiny
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "tracking": TrackingConfig,
}

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


# ---------------------------------------------------------------- value checks
#
# The one place that knows every setting's type and range. ``coerce_value`` types one value
# (a config file's, a flag's, a checkpoint's), ``value_problem`` says what is wrong with a typed
# one, and ``check_values`` checks a whole RunConfig (every field, then the settings that depend
# on each other). The config file reader, the flag parser, ``--fix`` and the environment flags
# call them with the name the user wrote; ``build_config`` calls ``check_values`` on every config.

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
