"""A depth study inside a time budget (``convscope depth --timeout``): how many epochs every fold
run gets, and whether the next run still fits.

Contract:
- ``calibrate`` times a few training steps of every variant on random images of the run's size and
  batch (on the run's device): seconds per training image, by variant slug; ``epoch_seconds`` scales
  them to an epoch of the fold's training images plus an evaluation pass (a third of a training
  step per validation image).
- ``plan_epochs`` gives every fold run the most epochs (at most ``MAX_EPOCHS``) with which
  ``MIN_ROUNDS`` rounds — every variant once per round, on the same fold — fit in ``SHARE`` of the
  budget, counting ``RUN_OVERHEAD_S`` per run. When fewer than ``SUBSAMPLED_EPOCHS`` fit, every
  fold run trains ``SUBSAMPLED_EPOCHS`` epochs on as many of its training photos as fit (a
  stratified sample, the same for every variant of a fold): on a large folder a short budget
  compares the depths on fewer photos for long enough rather than on every photo too briefly.
  When not even ``MIN_TRAIN_IMAGES`` photos fit that way, all photos at ``MIN_EPOCHS`` or more;
  else a ``ConfigError`` naming the budget that would do.
- ``Budget`` keeps the deadline and learns from every finished run: the estimate of the next run
  is the calibrated one times the ratio of measured to estimated seconds so far. ``fits`` says
  whether a run would end before the deadline.
- ``needed_for`` is the budget for a study of the same plan with more epochs or more rounds, from
  what the runs so far took.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch

from convscope.analysis.depth_verdict import Variant
from convscope.train.durations import format_duration
from convscope.train.errors import ConfigError
from convscope.train.model import build_model
from convscope.train.step import make_optimizer, training_loss

#: Rounds of folds (every variant on one more fold) that the plan makes room for: the fewest that
#: give a standard error and a check that the answer is stable.
MIN_ROUNDS = 3
#: Epochs a learning curve needs to be judged flat or rising.
MIN_EPOCHS = 4
MAX_EPOCHS = 40
#: The part of the budget the planned rounds may take (the rest absorbs estimation error).
SHARE = 0.85
#: Seconds a fold run costs besides its epochs (preparing the fold, opening and closing its runs).
RUN_OVERHEAD_S = 3.0
#: When fewer epochs than this fit on every photo, fold runs train this many on a stratified sample
#: of their training photos (``--train-limit``) instead: a curve of 4 epochs of a one-cycle schedule
#: still rises in its last epoch, so that many more photos buy less certainty than twice the epochs …
SUBSAMPLED_EPOCHS = 8
#: … of at least this many photos (or all there are); below it the budget is refused.
MIN_TRAIN_IMAGES = 1000
_WARMUP_STEPS, _TIMED_STEPS = 2, 3


def calibrate(variants: Sequence[Variant], model_like: object, batch_size: int, device: torch.device) -> dict[str, float]:
    """Seconds per training image of every variant (``model_like``: a prepared model config, for the
    data's classes and channels), timed on random images."""
    torch.manual_seed(0)
    seconds: dict[str, float] = {}
    for variant in variants:
        config = replace(variant.config.model, num_classes=model_like.num_classes, in_channels=model_like.in_channels)
        model = build_model(config).to(device).train()
        optimizer = make_optimizer(model, variant.config.optim)
        loss_fn = training_loss()
        images = torch.randn(batch_size, config.in_channels, config.image_size, config.image_size, device=device)
        labels = torch.randint(0, config.num_classes, (batch_size,), device=device)
        started = 0.0
        for step in range(_WARMUP_STEPS + _TIMED_STEPS):
            if step == _WARMUP_STEPS:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                started = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(images), labels).backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds[variant.slug] = (time.perf_counter() - started) / (_TIMED_STEPS * batch_size)
    return seconds


def epoch_seconds(per_image: Mapping[str, float], train_images: int, val_images: int) -> dict[str, float]:
    """Seconds of one epoch by variant: a training pass, and an evaluation pass at about a third of
    a training step per image."""
    return {slug: seconds * (train_images + val_images / 3) for slug, seconds in per_image.items()}


def plan_epochs(budget_s: float, per_image: Mapping[str, float], train_images: int, val_images: int,
                overhead_s: float = RUN_OVERHEAD_S) -> tuple[int, int]:
    """(epochs, training images per fold run; 0 = all): see the module docstring."""
    runs = len(per_image)
    usable = SHARE * budget_s / MIN_ROUNDS - runs * overhead_s
    epoch_s = sum(epoch_seconds(per_image, train_images, val_images).values())
    epochs = min(MAX_EPOCHS, int(usable // epoch_s)) if epoch_s > 0 else MAX_EPOCHS
    if epochs >= SUBSAMPLED_EPOCHS:
        return epochs, 0
    eval_s = sum(epoch_seconds(per_image, 0, val_images).values())
    train_s_per_image = sum(per_image.values())
    limit = int((usable / SUBSAMPLED_EPOCHS - eval_s) / train_s_per_image) if train_s_per_image > 0 else 0
    if limit >= min(MIN_TRAIN_IMAGES, train_images):
        return SUBSAMPLED_EPOCHS, min(limit, train_images)
    if epochs >= MIN_EPOCHS:  # a small folder: all its photos at fewer epochs
        return epochs, 0
    needed = MIN_ROUNDS * (runs * overhead_s + SUBSAMPLED_EPOCHS * sum(
        epoch_seconds(per_image, min(MIN_TRAIN_IMAGES, train_images), val_images).values())) / SHARE
    raise ConfigError(f"--timeout {format_duration(budget_s)}: {MIN_ROUNDS} folds of {runs} networks at "
                      f"{SUBSAMPLED_EPOCHS} epochs on {min(MIN_TRAIN_IMAGES, train_images):,} photos need about "
                      f"{format_duration(needed)} here; give a longer --timeout, fewer depths (--max-depth) or a "
                      "smaller --image-size")


@dataclass
class Budget:
    """The deadline and the estimate of the next run."""

    seconds: float
    per_run: dict[str, float]  # calibrated seconds of one fold run, by variant slug
    started: float = field(default_factory=time.monotonic)
    measured: float = 0.0
    estimated: float = 0.0

    @property
    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.started)

    @property
    def correction(self) -> float:
        return self.measured / self.estimated if self.estimated > 0 else 1.0

    def estimate(self, slug: str) -> float:
        return self.per_run[slug] * self.correction

    def fits(self, slug: str) -> bool:
        return self.estimate(slug) <= self.left

    def record(self, slug: str, seconds: float) -> None:
        self.measured += seconds
        self.estimated += self.per_run[slug]

    def needed_for(self, rounds: int, epochs_factor: float = 1.0) -> float:
        """Seconds for ``rounds`` rounds of every variant at ``epochs_factor`` × the planned epochs."""
        one_round = sum(self.estimate(slug) for slug in self.per_run)
        return rounds * one_round * epochs_factor / SHARE


def suggested_timeout(run_seconds: float, variants: int) -> str:
    """A ``--timeout`` for a depth study of ``variants`` networks like a run that took ``run_seconds``:
    ``MIN_ROUNDS`` rounds of every variant at about the run's own length, in whole minutes (at least 5)."""
    seconds = MIN_ROUNDS * variants * max(run_seconds, 1.0) / SHARE
    return f"{max(5, -(-int(seconds) // 60))}m"
