"""The training step loop: one epoch of training, one pass of evaluation.

No host–device synchronisation inside the step loop: loss and correct counts
accumulate in device tensors and are read once per epoch. The only exception is
the progress bar, which reads them at most once per second while it is shown.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from convscope.train.config_sections import OptimConfig
from convscope.train.errors import ConfigError, NonFiniteLossError
from convscope.train.step import Scorer, Stepper

SCHEDULES = ("onecycle", "cosine", "constant")


def select_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; anything else must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(f"--device {name!r} is not a device name: use auto, cpu, cuda, cuda:N or mps") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device auto or cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {name}: MPS is not available on this machine; use --device auto or cpu")
    return device


PRECISIONS = ("auto", "bf16", "fp32")
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # CPU features that make bf16 convolutions faster than fp32


def cpu_has_fast_bf16() -> bool:
    """True when this CPU has bf16 matrix units (Linux /proc/cpuinfo; False when unknown)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f" {flag}" in flags for flag in CPU_BF16_FLAGS)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``bf16`` or ``fp32`` for this device: ``auto`` picks bf16 on CUDA and on bf16-capable CPUs
    (1.45x per step for the seed net on an AMX Xeon, see README), fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    if precision != "auto":
        return precision
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_fast_bf16()):
        return "bf16"
    return "fp32"


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: OptimConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step schedule over ``config.epochs`` epochs."""
    total = max(1, config.epochs * steps_per_epoch)
    if config.schedule == "onecycle" and total >= 3:
        # a quarter of the steps warming up; at least two, or OneCycleLR divides by zero on tiny runs
        warmup = min(0.5, max(0.25, 2 / total))
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total, pct_start=warmup)
    if config.schedule == "onecycle":  # one or two steps in all: nothing to schedule
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if config.schedule == "constant":
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)
    raise ConfigError(f"--schedule must be one of {', '.join(SCHEDULES)} (got {config.schedule!r})")


@dataclass(frozen=True)
class EpochStats:
    loss: float
    accuracy: float
    images: int
    seconds: float
    tta_loss: float | None = None  # with flip TTA (``evaluate(tta=True)``): NLL of the averaged softmax
    tta_accuracy: float | None = None

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def train_one_epoch(
    stepper: Stepper,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    description: str = "train",
    progress: bool = True,
) -> EpochStats:
    """One pass over ``batches`` with ``stepper`` (``train.step``; its loss is the one reported);
    raises NonFiniteLossError if the mean loss is NaN/inf."""
    stepper.model.train()
    totals = stepper.totals
    totals.reset()
    seen = 0
    start = time.perf_counter()
    bar = tqdm(batches, desc=description, leave=False, disable=not progress, unit="batch", dynamic_ncols=True)
    shown_at = start
    for inputs, labels in bar:
        stepper(inputs, labels)
        seen += len(labels)
        if progress and (now := time.perf_counter()) - shown_at >= 1.0:
            shown_at = now
            bar.set_postfix(_postfix(totals.loss_sum, totals.correct, seen, now - start), refresh=False)
    bar.close()
    mean_loss = (totals.loss_sum / max(seen, 1)).item()  # the epoch's one wait for the device
    seconds = time.perf_counter() - start
    if not math.isfinite(mean_loss):
        raise NonFiniteLossError(f"training loss became {mean_loss} in {description}; lower --lr or check the data")
    return EpochStats(mean_loss, totals.correct.item() / max(seen, 1), seen, seconds)


def _postfix(loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, seconds: float) -> dict[str, str]:
    return {
        "loss": f"{loss_sum.item() / seen:.3f}",
        "acc": f"{correct.item() / seen:.3f}",
        "img/s": f"{seen / seconds:.0f}",
    }


def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    *,
    return_predictions: bool = False,
    precision: str = "fp32",
    tta: bool = False,
    scorer: Scorer | None = None,
) -> tuple[EpochStats, torch.Tensor | None]:
    """Mean plain cross-entropy and accuracy over ``batches`` in eval mode; optionally all (plain)
    predictions (CPU). ``tta``: also the loss and accuracy of ``flip_tta_probabilities`` (one more
    forward pass per batch) in ``tta_loss`` / ``tta_accuracy``. ``scorer``: a (graphed) ``Scorer`` of
    ``model`` to reuse across epochs; predictions always come from an eager one."""
    if scorer is None or return_predictions:
        scorer = Scorer(model, device, precision=precision, tta=tta)
        scorer.predictions = [] if return_predictions else None
    model.eval()
    scorer.totals.reset()
    seen = 0
    start = time.perf_counter()
    for inputs, labels in batches:
        scorer(inputs, labels)
        seen += len(labels)
    count = max(seen, 1)
    totals = scorer.totals
    stats = EpochStats(totals.loss_sum.item() / count, totals.correct.item() / count, seen, time.perf_counter() - start,
                       tta_loss=totals.tta_loss_sum.item() / count if scorer.tta else None,
                       tta_accuracy=totals.tta_correct.item() / count if scorer.tta else None)
    predictions = torch.cat(scorer.predictions).cpu() if scorer.predictions is not None else None
    return stats, predictions
