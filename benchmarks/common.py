"""Shared bits of the benchmarks: which machine ran them, and timing epochs through the public API."""

from __future__ import annotations

import platform
import time
from pathlib import Path

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
