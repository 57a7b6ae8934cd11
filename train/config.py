"""Run configuration: frozen dataclasses, one comment per default.

The CLI is generated from these classes (see ``train.cliargs``): every field is a
flag, its comment is the help text. The fully resolved ``RunConfig`` is logged
with every run (``config.yaml``, which ``--config`` reads back), so a run can
always be reproduced.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from train.errors import ConfigError


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
    head_hidden: int = 64  # width of the hidden linear layer of the head; 0 drops it
    bypass: tuple[int, ...] = ()  # blocks (1-based) replaced by a linear shape adapter (ablation): average pooling to the block's output size, then a 1x1 conv to its width
    image_size: int = 64  # input height and width in pixels
    in_channels: int = field(default=3, metadata={"cli": False})  # input colour channels (set from the data)
    num_classes: int = field(default=2, metadata={"cli": False})  # output classes (set from the data)

    def channel_widths(self) -> tuple[int, ...]:
        """The per-block widths this config resolves to."""
        if self.widths:
            return tuple(self.widths)
        return tuple(max(1, round(self.base_width * self.growth**i)) for i in range(self.depth))


@dataclass(frozen=True)
class DataConfig:
    data: str = "synthetic"  # synthetic | synthetic-depthK (needs K blocks) | cifar10 | oxford-pets | an image folder (one sub-folder per class, or train/ and val/)
    val_fraction: float = 0.2  # share of every class held out for validation (class-folder layout)
    folds: int = 0  # k-fold cross-validation: split into this many folds (0 = use --val-fraction)
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
    seed: int = 0  # seed of initialisation and shuffling (and of the data when --data-seed is -1)
    device: str = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto (bf16 autocast on CUDA and on CPUs with bf16 matrix units) | bf16 | fp32


@dataclass(frozen=True)
class TrackingConfig:
    runs_dir: str = "runs"  # where the embedded stores live (MLflow db, TensorBoard, checkpoints)
    experiment: str = "convscope"  # MLflow experiment and TensorBoard folder
    run_name: str = ""  # run name; empty = generated from time and preset
    mlflow: bool = True  # log to MLflow
    tensorboard: bool = True  # log to TensorBoard
    mlflow_uri: str = ""  # MLflow tracking URI; empty = $MLFLOW_TRACKING_URI or the embedded sqlite store
    visuals: bool = True  # per-epoch feature maps, saliency, statistics and activation artifacts


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

    Raises ConfigError for an unknown preset, section or field, naming it.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    merged: dict[str, dict[str, Any]] = {name: dict(values) for name, values in PRESETS[preset].items()}
    for section, values in (overrides or {}).items():
        if section not in SECTIONS:
            raise ConfigError(f"unknown config section {section!r}: use one of {', '.join(SECTIONS)}")
        merged.setdefault(section, {}).update(values)
    parts: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        known = {f.name for f in dataclasses.fields(cls)}
        values = merged.get(section, {})
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown {section} setting(s) {', '.join(unknown)}: known are {', '.join(sorted(known))}")
        parts[section] = cls(**_coerce(cls, values))
    return RunConfig(preset=preset, **parts)


def _coerce(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Turn lists from YAML/TOML into the tuples the frozen dataclasses hold."""
    return {key: tuple(value) if isinstance(value, list) else value for key, value in values.items()}


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
