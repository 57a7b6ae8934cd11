"""Shared bits of the benchmarks: which machine ran them, and timing epochs through the public API."""

from __future__ import annotations

import platform
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch


def device_description(device: torch.device | None = None) -> str:
    if device is not None and device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"CPU {cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


class EpochClock:
    """An ``on_epoch_end`` callback that records the wall time of every epoch, all work included."""

    def __init__(self) -> None:
        self.marks: list[float] = [time.perf_counter()]

    def restart(self) -> None:
        self.marks = [time.perf_counter()]

    def __call__(self, epoch: int, metrics: object) -> None:
        self.marks.append(time.perf_counter())

    @property
    def epoch_seconds(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def naive_training_epochs(loader: Iterable[tuple[torch.Tensor, torch.Tensor]], epochs: int) -> list[float]:
    """Seconds per epoch of the seed network trained the way its author would:
    whatever ``loader`` yields, Adam, ``loss.item()`` every step, no channels_last."""
    from torch import nn

    from convscope.train.config import build_config
    from convscope.train.model import build_model

    model = build_model(build_config("seed").model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        running = 0.0
        for inputs, targets in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            optimizer.step()
            running += loss.item()
        seconds.append(time.perf_counter() - start)
    return seconds


def seed_visuals(root: Path, run_name: str) -> tuple[Any, Any, Any]:
    """The seed network, its per-epoch visuals for 8 random probes written inline to real MLflow
    (sqlite) and TensorBoard sinks under ``root``, and those sinks (the caller closes them); the
    epoch before training is logged already. Returns (model, visuals, sinks)."""
    from convscope.pictures.epoch_visuals import EpochVisuals, Probes
    from convscope.tracking.base import FanOut
    from convscope.tracking.mlflow_sink import MlflowTracker
    from convscope.tracking.tensorboard_sink import TensorBoardTracker
    from convscope.train.config import build_config
    from convscope.train.model import build_model

    model = build_model(build_config("seed").model).to(memory_format=torch.channels_last)
    inputs = torch.randn(8, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    images = (torch.rand(8, 3, 64, 64) * 255).to(torch.uint8)
    probes = Probes(inputs, images, torch.tensor([0] * 4 + [1] * 4), tuple(f"probe{i}" for i in range(8)))
    mlflow = MlflowTracker(f"sqlite:///{root / 'mlflow.db'}", "bench", run_name,
                           artifact_location=(root / "artifacts").as_uri())
    sinks = FanOut([mlflow, TensorBoardTracker(root / "tensorboard")])
    visuals = EpochVisuals(sinks, model.feature_layers(), probes, ["cat", "dog"], root / "activations",
                           first_conv=model.first_conv(), keep_files=False)
    visuals.log(model, step=0)
    return model, visuals, sinks
