"""A run made ready to train: ``prepare`` checks and builds everything (data, model, probes, stores)
before any tracker opens, and returns it as a ``Prepared``."""

from __future__ import annotations

import dataclasses
import datetime
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from convscope.pictures.epoch_visuals import Probes
from convscope.tracking.faults import check_writable
from convscope.tracking.stores import Stores, resolve_stores
from convscope.train.batches import Normalizer
from convscope.train.checkpoint import Checkpoint
from convscope.train.config_sections import RunConfig
from convscope.train.data import load_data
from convscope.train.errors import ConfigError
from convscope.train.image_sets import Splits
from convscope.train.images import decode_file
from convscope.train.loop import resolve_precision, select_device
from convscope.train.model import ConvNet, build_model, validate
from convscope.train.random_state import DEFAULT_GENERATORS
from convscope.train.threads import apply_cpu_threads


@dataclass
class Prepared:
    config: RunConfig  # with num_classes and in_channels set from the data
    run_name: str
    device: torch.device
    data: Splits
    model: ConvNet
    normalizer: Normalizer
    probes: Probes
    stores: Stores
    precision: str  # resolved: bf16 or fp32
    resume: Checkpoint | None = None
    skipped_csv: Path | None = None  # the list of files the validating decoder skipped


def prepare(config: RunConfig, *, resume: Checkpoint | None = None, echo: Callable[[str], None] = print,
            progress: bool = True) -> Prepared:
    """Load data, build the model, pick probes. Raises ConfigError for bad input, a runs folder
    that cannot be written (``tracking.faults.check_writable``) included.

    The data, split, normaliser sample and probes follow the data seed; the weights ``--seed``."""
    data_seed = config.data.effective_seed(config.optim.seed)
    device = select_device(config.optim.device)
    apply_cpu_threads(device, echo)  # CPU only: one core spare unless OMP_NUM_THREADS says otherwise
    resolve_precision(config.optim.precision, device)  # a bad --precision fails before any decoding
    validate(config.model)  # fail fast on a bad architecture, before decoding any image
    stores = resolve_stores(config.tracking.runs_dir, config.tracking.mlflow_uri)
    check_writable(config.tracking.runs_dir, "--runs-dir", files=(stores.layout.mlflow_db.name,) if stores.embedded else ())
    run_name = config.tracking.run_name or (resume.extra.get("run_name") if resume else None) or default_run_name(config)
    data = load_data(
        config.data, config.model.image_size, data_seed,
        cache_dir=Path(config.data.cache_dir) if config.data.cache_dir else stores.layout.cache,
        dataset_dir=Path(config.data.dataset_dir) if config.data.dataset_dir else stores.layout.datasets,
        progress=progress,
    )
    echo(data.description)
    skipped_csv = None
    if data.skipped:
        skipped_csv = data.write_skipped_csv(stores.checkpoint_dir(config.tracking.experiment, run_name) / "skipped_files.csv")
        print(data.skipped_summary(skipped_csv), file=sys.stderr)
    model_config = dataclasses.replace(config.model, num_classes=len(data.class_names), in_channels=3)
    config = dataclasses.replace(config, model=model_config)
    with DEFAULT_GENERATORS:  # the same weights for --seed whatever other threads draw
        torch.manual_seed(config.optim.seed)
        model = build_model(model_config)
    normalizer = Normalizer.fit(data.train.take_available(_sample(len(data.train), 2048, data_seed))[0])
    if resume is not None:
        model.load_state_dict(resume.model_state)
        normalizer = Normalizer(torch.tensor(resume.extra["normalizer"]["mean"]), torch.tensor(resume.extra["normalizer"]["std"]))
    model = model.to(device, memory_format=torch.channels_last)
    probes = select_probes(config, data, normalizer, device)
    precision = resolve_precision(config.optim.precision, device)
    return Prepared(config, run_name, device, data, model, normalizer, probes, stores, precision, resume, skipped_csv)


def _sample(count: int, limit: int, seed: int) -> torch.Tensor:
    if count <= limit:
        return torch.arange(count)
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:limit].sort().values


def default_run_name(config: RunConfig) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{config.preset}-d{config.model.depth}-{stamp}-{secrets.token_hex(2)}"


def select_probes(config: RunConfig, data: Splits, normalizer: Normalizer, device: torch.device) -> Probes:
    """``probes_per_class`` validation images per class chosen by the data seed, then the user's files."""
    gen = torch.Generator().manual_seed(config.data.effective_seed(config.optim.seed) + 1)
    labels = data.val.labels
    chosen: list[int] = []
    for cls in range(len(data.class_names)):
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        chosen += members[: config.data.probes_per_class].tolist()
    images: list[torch.Tensor] = []
    if chosen:  # a probe whose file was lost since validation is dropped, with its label
        taken, kept = data.val.take_available(torch.tensor(chosen, dtype=torch.long))
        images, chosen = list(taken), [chosen[i] for i in kept.tolist()]
    probe_labels = [int(labels[i]) for i in chosen]
    ids = [data.val.ids[i] for i in chosen]
    for path in config.data.probe:
        if not Path(path).is_file():
            raise ConfigError(f"--probe {path}: no such file; give an image file")
        decoded = decode_file(path, config.model.image_size)
        if decoded.array is None:
            raise ConfigError(f"--probe {path}: cannot use it as an image ({decoded.reason})")
        images.append(torch.from_numpy(decoded.array))
        probe_labels.append(-1)
        ids.append(str(path))
    if not images:
        if config.data.probes_per_class > 0:  # probes come from the validation split, and it had none
            raise ConfigError(f"--data {config.data.data}: its validation split holds no images (each class needs "
                              "at least 2 images, one to train on and one to validate); add images")
        raise ConfigError("no probe images: set --probes-per-class above 0 or give --probe files")
    stacked = torch.stack(images)
    inputs = normalizer(stacked.to(device)).contiguous(memory_format=torch.channels_last)
    return Probes(inputs, stacked.cpu(), torch.tensor(probe_labels, dtype=torch.long), tuple(ids))
