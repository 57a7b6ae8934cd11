"""When a study may prune: never while the learning-rate schedule is still warming up.

Trials report ``--metric`` once per epoch (``trial.report(value, epoch)``, epochs counted
from 1), so a pruner's steps are epochs. With the default one-cycle schedule
(``train.loop.make_scheduler``) the learning rate is still small for the first quarter
of the run: an epoch-1 accuracy says how fast a network climbs at a tiny learning rate,
not how good the architecture is, and a median pruner judging it would stop nearly
every trial on epoch 1. ``pruning_start`` says from which epoch on a trial may be
judged; ``make_pruner`` builds the study's pruner around it.

A median pruner on an accuracy also accounts for noise (``NoiseAwarePruner``): it cuts a trial only
when it trails the median of the completed trials at that epoch by more than the standard error of
a difference of two accuracies measured on the trial's validation split (binomial, Agresti–Coull);
a gap inside that noise is a tie, and a tie is not a reason to stop.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import optuna

ONECYCLE_PCT_START = 0.25
"""The share of the steps ``make_scheduler`` gives the one-cycle warm-up (more only for runs of < 8 steps)."""
MIN_WARMUP_EPOCHS = 2
"""Other schedules (cosine, constant) have no warm-up, but the first epochs are never judged either …"""
MIN_WARMUP_FRACTION = 0.25
"""… nor the first quarter of the epochs, whichever is more."""
STARTUP_TRIALS = 3
"""The median pruner prunes nothing until this many trials have completed."""
HYPERBAND_REDUCTION = 3
"""Hyperband keeps the best third of the trials at each rung."""
VAL_IMAGES_ATTR = "val_images"
"""User attribute of a trial: the images of its validation split (the noise of its accuracy)."""


def warmup_epochs(epochs: int, schedule: str = "onecycle", steps_per_epoch: int | None = None) -> int:
    """The epochs at the start of a run that no pruner may judge (0 ≤ result ≤ ``epochs``).

    - ``onecycle``: the epochs the learning rate takes to reach its peak, rounded up:
      ``ceil(pct_start × epochs)`` with ``make_scheduler``'s ``pct_start =
      min(0.5, max(0.25, 2 / total steps))``; with ``steps_per_epoch`` unknown (a study
      decides it per trial: the batch size may be searched) it is 0.25, its value for
      every run of 8 steps or more. 6 epochs → 2 (the warm-up ends 1.5 epochs in).
    - ``cosine``, ``constant`` and anything else: ``max(2, ceil(0.25 × epochs))`` — no
      warm-up, but the first epochs of any network say little about it.
    """
    if epochs <= 0:
        return 0
    if schedule == "onecycle":
        pct_start = ONECYCLE_PCT_START
        if steps_per_epoch is not None:
            pct_start = min(0.5, max(ONECYCLE_PCT_START, 2 / max(1, epochs * steps_per_epoch)))
        # the epsilon: a product a hair above a whole number (float rounding) adds no epoch
        warmup = math.ceil(pct_start * epochs - 1e-9)
    else:
        warmup = max(MIN_WARMUP_EPOCHS, math.ceil(MIN_WARMUP_FRACTION * epochs - 1e-9))
    return min(epochs, max(0, warmup))


@dataclass(frozen=True)
class PruningStart:
    """From which epoch (``first_epoch``, counted from 1) a trial of ``epochs`` epochs may be pruned."""

    epochs: int
    schedule: str
    warmup: int  # epochs never judged (warmup_epochs)

    @property
    def first_epoch(self) -> int:
        return self.warmup + 1

    @property
    def possible(self) -> bool:
        """False when no epoch is left to judge: the warm-up takes every epoch but the last, and a
        trial that has trained its last epoch is never pruned (that would save nothing)."""
        return self.first_epoch < self.epochs

    def describe(self, pruner: str = "median") -> str:
        """One line for the start of a study, such as
        "pruning (median) from epoch 3 of 6: the one-cycle warm-up ends at epoch 2"."""
        if pruner == "none":
            return "no pruning (--pruner none)"
        if self.schedule == "onecycle":
            why = f"the one-cycle warm-up ends at epoch {self.warmup}"
        else:
            verb = "is" if self.warmup == 1 else "are"
            why = f"the first {_epochs(self.warmup)} of a {self.schedule} schedule {verb} never judged"
        if not self.possible:
            return (f"no pruning with {_epochs(self.epochs)}: {why} and a trial's last epoch is never judged; "
                    "raise --epochs to prune")
        return f"pruning ({pruner}) from epoch {self.first_epoch} of {self.epochs}: {why}"


def _epochs(count: int) -> str:
    return f"{count} epoch" if count == 1 else f"{count} epochs"


def pruning_start(epochs: int, schedule: str = "onecycle", steps_per_epoch: int | None = None) -> PruningStart:
    """``PruningStart`` of a run of ``epochs`` epochs under ``schedule`` (see ``warmup_epochs``)."""
    return PruningStart(epochs, schedule, warmup_epochs(epochs, schedule, steps_per_epoch))


class NoiseAwarePruner(optuna.pruners.BasePruner):
    """``inner``'s verdict, kept only when the trial's accuracy at this epoch trails the median of the
    completed trials' by more than the noise (see the module docstring). A trial that does not say
    how many validation images it has is judged by ``inner`` alone."""

    def __init__(self, inner: optuna.pruners.BasePruner) -> None:
        self.inner = inner

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if not self.inner.prune(study, trial):
            return False
        images = trial.user_attrs.get(VAL_IMAGES_ATTR)
        step = trial.last_step
        if not images or step is None:
            return True
        others = [t.intermediate_values[step] for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                  if step in t.intermediate_values]
        if not others:
            return True
        median = statistics.median(others)
        return median - trial.intermediate_values[step] > gap_noise(median, int(images))


def gap_noise(accuracy: float, images: int) -> float:
    """Standard error of the difference of two accuracies near ``accuracy`` on ``images`` images each."""
    n = max(images, 0) + 4
    adjusted = (min(max(accuracy, 0.0), 1.0) * max(images, 0) + 2) / n
    return math.sqrt(2.0 * adjusted * (1.0 - adjusted) / n)


def make_pruner(name: str, epochs: int = 10, schedule: str = "onecycle",
                metric: str = "val/accuracy") -> optuna.pruners.BasePruner:
    """The study's pruner for trials of ``epochs`` epochs under ``schedule``.

    - ``median``: ``MedianPruner`` that judges nothing before ``pruning_start(...).first_epoch``
      (``n_warmup_steps``: Optuna prunes from ``step == n_warmup_steps`` on) and nothing
      until STARTUP_TRIALS trials have completed; on an accuracy ``metric``, inside a
      ``NoiseAwarePruner``;
    - ``hyperband``: ``HyperbandPruner`` with its first rung at that epoch
      (``min_resource``) and ``max_resource`` = ``epochs``;
    - ``none``, or a run too short to leave an epoch to judge (``PruningStart.possible``): ``NopPruner``.

    Raises:
        ValueError: an unknown ``name``.
    """
    if name not in ("median", "hyperband", "none"):
        raise ValueError(f"unknown pruner {name!r}")
    start = pruning_start(epochs, schedule)
    if name == "none" or not start.possible:
        return optuna.pruners.NopPruner()
    if name == "median":
        median = optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS, n_warmup_steps=start.first_epoch)
        return NoiseAwarePruner(median) if "accuracy" in metric else median
    return optuna.pruners.HyperbandPruner(min_resource=start.first_epoch, max_resource=epochs,
                                          reduction_factor=HYPERBAND_REDUCTION)
