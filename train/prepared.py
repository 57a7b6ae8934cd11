"""A run made ready to train: everything ``prepare`` checked and built before any tracker opens."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from convscope.pictures.epoch_visuals import Probes
from convscope.tracking.stores import Stores
from convscope.train.batches import Normalizer
from convscope.train.checkpoint import Checkpoint
from convscope.train.config import RunConfig
from convscope.train.image_sets import Splits
from convscope.train.model import ConvNet


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
