"""The run configuration's sections: frozen dataclasses, one comment per default.

The CLI is generated from these classes (see ``cli.setting_flags``): every field is a
flag, its comment is the help text. ``train.config.build_config`` makes a ``RunConfig`` from a
preset and overrides; ``train.setting_values`` knows what values each setting takes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

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
