"""Whether the runs behind a verdict learned, and whether differences are ties.

A verdict ("depth 2 is enough", "conv5 adds little") rests on runs that

- **learned**: their validation accuracy beats chance (the majority class's share) by at
  least ``MIN_ABOVE_CHANCE`` and significantly — a one-sided binomial test on the pooled
  validation images, p below ``SIGNIFICANCE``;
- **stopped improving**: over the last ``window(epochs)`` epochs (a quarter of them, at least
  one) validation accuracy rose by no more than the noise — ``max(MIN_GAIN, 2 × the binomial
  standard deviation of a difference of two accuracies on those images)`` — or it ends with
  every validation image right, where there is nothing left to improve. A curve of fewer than
  ``MIN_CURVE_EPOCHS`` points is too short to tell flat from rising, so it never counts as
  converged.

Binomial standard errors use the Agresti–Coull estimate (two successes and two failures
added), so an accuracy of exactly 0 or 1 still has an uncertainty.

:class:`Training` holds what these checks need from one run, or from the folds of one
variant pooled (:func:`pooled`). :func:`problems` says in plain words what is missing and
what to run; an empty list means a verdict may be drawn.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scipy.stats import binomtest

#: Accuracy must beat chance by at least this much to count as learned.
MIN_ABOVE_CHANCE = 0.05
#: One-sided binomial p-value below which accuracy is significantly above chance.
SIGNIFICANCE = 0.01
#: A rise in validation accuracy smaller than this is flat, however many images there are.
MIN_GAIN = 0.01
#: The fewest epochs whose curve can be judged flat or rising.
MIN_CURVE_EPOCHS = 4
#: The smallest difference in accuracy any answer acts on, however small its standard error: a layer's
#: probe gain (``explain``, ``compare``) and the gap between two depths or ablations (``depth``) alike.
MIN_DIFFERENCE = 0.02


@dataclass(frozen=True)
class Training:
    """One run's (or one variant's pooled) validation record.

    ``curve``: validation accuracy after every epoch (mean over folds when pooled);
    ``images``: validation images behind each point (summed over folds when pooled)."""

    label: str
    curve: tuple[float, ...]
    images: int
    chance: float

    @property
    def accuracy(self) -> float:
        return self.curve[-1] if self.curve else math.nan

    @property
    def epochs(self) -> int:
        return len(self.curve)


def pooled(label: str, curves: Sequence[Sequence[float]], images: Sequence[int], chance: float) -> Training:
    """The folds of one variant as one record: the mean curve over the folds' common epochs."""
    length = min((len(curve) for curve in curves), default=0)
    mean = tuple(sum(curve[e] for curve in curves) / len(curves) for e in range(length))
    return Training(label, mean, int(sum(images)), chance)


def window(epochs: int) -> int:
    """Epochs at the end of a curve over which it must be flat: a quarter, at least one."""
    return max(1, round(epochs / 4))


def learned(run: Training) -> bool:
    """Above chance by ``MIN_ABOVE_CHANCE`` and significantly (one-sided binomial test)."""
    if not run.curve or run.images < 1 or not math.isfinite(run.accuracy):
        return False
    if run.accuracy - run.chance < MIN_ABOVE_CHANCE:
        return False
    correct = round(run.accuracy * run.images)
    return binomtest(correct, run.images, run.chance, alternative="greater").pvalue < SIGNIFICANCE


def standard_error(values: Sequence[float]) -> float:
    """Sample standard deviation / √n of ``values``; 0 for fewer than two."""
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def binomial_standard_error(accuracy: float, images: int) -> float:
    """Standard error of an accuracy measured on ``images`` images (Agresti–Coull: never 0)."""
    p = min(max(accuracy, 0.0), 1.0) if math.isfinite(accuracy) else 0.5
    n = max(images, 0) + 4
    adjusted = (p * max(images, 0) + 2) / n
    return math.sqrt(adjusted * (1.0 - adjusted) / n)


def noise_of_gain(run: Training) -> float:
    """The rise in accuracy that still counts as flat for this run (see the module docstring)."""
    return max(MIN_GAIN, 2.0 * math.sqrt(2.0) * binomial_standard_error(run.accuracy, run.images))


def late_gain(run: Training) -> float:
    """Accuracy at the last epoch minus the best accuracy before the final window."""
    if run.epochs < MIN_CURVE_EPOCHS:
        return math.nan
    return run.accuracy - max(run.curve[: run.epochs - window(run.epochs)])


def still_improving(run: Training) -> bool:
    """True when the curve is too short to judge or still rose beyond the noise at the end
    (a curve that ends with every validation image right has nowhere left to rise)."""
    at_ceiling = run.epochs >= 2 and run.images > 0 and run.accuracy >= 1.0 - 0.5 / run.images
    gain = late_gain(run)
    if math.isnan(gain):
        return not at_ceiling
    return gain > noise_of_gain(run) and not at_ceiling


def describe(run: Training) -> str:
    """"learned, flat", "at chance, flat", "learned, still rising (+0.052)", "…, too few epochs to judge"."""
    state = "learned" if learned(run) else "at chance"
    gain = late_gain(run)
    if math.isnan(gain):
        return f"{state}, too few epochs to judge"
    return f"{state}, " + (f"still rising ({gain:+.3f})" if still_improving(run) else "flat")


def more_epochs(epochs: int) -> int:
    """The ``--epochs`` to suggest when a curve was still rising after ``epochs``."""
    return max(2 * epochs, 12)


def rerun_with_epochs(epochs: int) -> str:
    """The advice for curves that needed more than ``epochs`` epochs, as a flag."""
    return f"rerun with --epochs {more_epochs(epochs)}"


def problems(runs: Sequence[Training], *, needs_learning: Sequence[Training] = (),
             rerun: Callable[[int], str] = rerun_with_epochs) -> list[str]:
    """Plain reasons no verdict should be drawn from ``runs``; empty when one may.

    Every run in ``runs`` must have stopped improving; every run in ``needs_learning``
    (some of ``runs``, typically the best one or the reference network) must also have
    learned. ``rerun`` says what to run when a curve needs more than its epochs (given them).
    A run that sits at chance with a flat curve is a legitimate result (a network
    too shallow for the task), so learning is only demanded where the verdict needs it.
    """
    found: list[str] = []
    rising = [run for run in runs if still_improving(run)]
    short = [run for run in rising if run.epochs < MIN_CURVE_EPOCHS]
    if short:
        found.append(f"{_names(short)} trained for {_epochs(short[0].epochs)}: a learning curve needs at least "
                     f"{MIN_CURVE_EPOCHS} epochs to tell flat from rising — {rerun(short[0].epochs)}")
    rising = [run for run in rising if run.epochs >= MIN_CURVE_EPOCHS]
    if rising:
        epochs = max(run.epochs for run in rising)
        gains = ", ".join((f"{run.label} " if len(rising) > 1 else "") + f"{late_gain(run):+.3f}" for run in rising)
        verb = "was" if len(rising) == 1 else "were"
        found.append(f"{_names(rising)} {verb} still improving at epoch {epochs} ({gains} over the last "
                     f"{_epochs(window(epochs))}) — {rerun(epochs)}")
    failed = [run for run in needs_learning if not learned(run)]
    if failed:
        scores = "; ".join((f"{run.label} " if len(failed) > 1 else "") + f"{run.accuracy:.3f} on {run.images} "
                           f"validation images, chance {run.chance:.3f}" for run in failed)
        found.append(f"{_names(failed)} did not learn ({scores}) — try more epochs, more data or another --lr")
    return found


def _names(runs: Sequence[Training]) -> str:
    labels = [run.label for run in runs]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def _epochs(count: int) -> str:
    return f"{count} epoch" + ("" if count == 1 else "s")
