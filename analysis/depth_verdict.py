"""What a depth study or an ablation concludes — or why it concludes nothing.

Contract:
- ``Outcome`` holds one variant's per-fold results (fold order): final validation accuracy,
  the validation-accuracy curve, the validation images and the chance level. ``mean`` and
  ``standard_error`` are over the folds that ran: the sample standard deviation / √folds, but
  never below the binomial standard error of the mean on all the folds' validation images
  (Agresti–Coull) — folds that all score 1.000 are not certain to 0. A pruned variant ran
  fewer folds and is never recommended.
- ``one_standard_error`` is the rule: the best is the highest mean; the recommendation is the
  variant with the fewest blocks whose mean is at least the best mean minus the best's
  standard error (Breiman et al. 1984; Hastie et al., ESL §7.10), the band never narrower than
  ``MIN_DIFFERENCE`` (0.02, the gap below which ``explain`` and ``compare`` call a layer's gain a
  tie): with thousands of validation images the standard error shrinks to a few tenths of a point,
  and two depths a point apart would then win in turn from one seed to the next. Every variant
  within that band is *tied* with the best, and a recommendation out of a tie says so.
- ``recommend`` first checks the training behind the verdict (:mod:`analysis.verdicts`): the best
  variant (the full network, in an ablation) must have learned, and the answer must survive more
  training. When some variant is still improving at the end (its rise over the last quarter of its
  epochs beyond the noise), every variant is *projected*: its mean plus its own rise over the last
  quarter once more (a fall counts as none), as if all trained another quarter at their recent
  rates. Projecting every variant, not only those whose rise cleared the noise, keeps a rise just
  under the noise threshold from counting as none against one just over it (a one-cycle schedule
  lifts every curve in its last epochs). When the one-standard-error rule on the projected means
  picks the same variant, the rising curves do not change the answer and the verdict stands, saying
  which were still rising; otherwise it recommends nothing and says what to run (``rerun``). A
  curve shorter than ``MIN_CURVE_EPOCHS`` cannot be projected and always blocks.
- ``drop`` is the paired per-fold accuracy lost by a variant against the full network:
  mean ± standard error over the folds both ran (paired by fold number).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

from convscope.analysis.verdicts import (
    Training,
    binomial_standard_error,
    MIN_CURVE_EPOCHS,
    MIN_DIFFERENCE,
    late_gain,
    pooled,
    problems,
    rerun_with_epochs,
    standard_error,
    still_improving,
)
from convscope.train.config_sections import RunConfig
from convscope.train.model import build_model, count_parameters

TOLERANCE = 1e-9  # accuracies are ratios of counts: equal means must compare equal


def tie_band(standard_error: float) -> float:
    """How far below the best mean a variant is still tied with it."""
    return max(standard_error, MIN_DIFFERENCE)


@dataclass(frozen=True)
class Variant:
    label: str  # "depth 3", "all 5 blocks", "without conv2", "without conv4–conv5"
    slug: str  # in run names: d3, full, without-conv2, without-conv4-5
    config: RunConfig

    @property
    def blocks(self) -> int:
        """Conv blocks that compute something (bypassed ones don't count)."""
        return self.config.model.depth - len(self.config.model.bypass)

    @property
    def widths(self) -> tuple[int, ...]:
        return self.config.model.channel_widths()

    @property
    def widths_text(self) -> str:
        """Per-block widths, a bypassed block as ``-``."""
        return ",".join("-" if i in self.config.model.bypass else str(w) for i, w in enumerate(self.widths, 1))

    @cached_property
    def parameters(self) -> int:
        return count_parameters(build_model(self.config.model))


@dataclass
class Outcome:
    variant: Variant
    accuracies: list[float] = field(default_factory=list)  # final validation accuracy per fold, in fold order
    run_ids: list[str] = field(default_factory=list)
    pruned: bool = False
    curves: list[list[float]] = field(default_factory=list)  # validation accuracy per epoch, per fold
    images: list[int] = field(default_factory=list)  # validation images per fold
    chance: float = 0.5  # the majority class's share of the validation images
    folds: list[int] = field(default_factory=list)  # the fold of each accuracy (default: 0, 1, 2, …)
    left_out: list[str] = field(default_factory=list)  # folds that did not learn and were left out, in words

    @property
    def fold_numbers(self) -> list[int]:
        return self.folds if len(self.folds) == len(self.accuracies) else list(range(len(self.accuracies)))

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies) if self.accuracies else math.nan

    @property
    def standard_error(self) -> float:
        spread = standard_error(self.accuracies)
        if not self.images or not self.accuracies:
            return spread
        return max(spread, binomial_standard_error(self.mean, sum(self.images)))

    @property
    def training(self) -> Training:
        """The folds pooled, for the checks of :mod:`analysis.verdicts`."""
        curves = self.curves or [[a] for a in self.accuracies]
        images = self.images or [0] * len(curves)
        return pooled(self.variant.label, curves, images, self.chance)


@dataclass
class Verdict:
    recommended: Outcome | None  # None: the evidence does not support a recommendation
    best: Outcome | None
    sentence: str
    problems: list[str] = field(default_factory=list)  # why nothing is recommended
    tied: list[Outcome] = field(default_factory=list)  # within one standard error of the best
    rising: list[Outcome] = field(default_factory=list)  # still improving, but not enough to change the answer


def drop(full: Outcome, variant: Outcome) -> tuple[float, float]:
    """(mean, standard error) of ``full − variant`` accuracy, paired by fold; NaN without common folds."""
    return paired_difference(full.fold_numbers, full.accuracies, variant.fold_numbers, variant.accuracies)


def paired_difference(folds: Sequence[int], accuracies: Sequence[float], other_folds: Sequence[int],
                      other_accuracies: Sequence[float]) -> tuple[float, float]:
    """(mean, standard error) of ``accuracies − other_accuracies`` over the folds both have; NaN without any."""
    theirs = dict(zip(other_folds, other_accuracies))
    pairs = [a - theirs[fold] for fold, a in zip(folds, accuracies) if fold in theirs]
    return (statistics.fmean(pairs), standard_error(pairs)) if pairs else (math.nan, math.nan)


def one_standard_error(means: Sequence[float], errors: Sequence[float], blocks: Sequence[int]) -> tuple[int, int]:
    """(recommended, best) indices: the fewest blocks within one standard error of the best mean.

    Ties for the best go to fewer blocks, then to the earlier index; among equally small
    candidates the higher mean wins. Raises ValueError for no candidates.
    """
    if not means:
        raise ValueError("the one-standard-error rule needs at least one result")
    order = range(len(means))
    best = max(order, key=lambda i: (means[i], -blocks[i], -i))
    recommended = min(tied_with(means, errors, blocks, best), key=lambda i: (blocks[i], -means[i], i))
    return recommended, best


def tied_with(means: Sequence[float], errors: Sequence[float], blocks: Sequence[int], best: int) -> list[int]:
    """Indices whose mean is within ``tie_band`` of ``means[best]`` (``best`` among them)."""
    threshold = means[best] - tie_band(errors[best]) - TOLERANCE
    return [i for i in range(len(means)) if means[i] >= threshold]


def _pick(done: Sequence[Outcome], means: Sequence[float]) -> tuple[Outcome, Outcome, list[Outcome]]:
    """(recommended, best, tied) by the one-standard-error rule on ``means`` (one per outcome)."""
    blocks = [o.variant.blocks for o in done]
    best_index = max(range(len(done)), key=lambda i: (means[i], -blocks[i]))
    inside = tied_with(means, [o.standard_error for o in done], blocks, best_index)
    tied = sorted((done[i] for i in inside), key=lambda o: (o.variant.blocks, o.variant.parameters))
    return tied[0], done[best_index], tied


def harmless_rises(done: Sequence[Outcome]) -> list[Outcome]:
    """The variants still improving when every variant's rise, continued for another quarter of the
    epochs, leaves the recommendation as it is (empty when it would change it, or a curve is too
    short to project)."""
    rising = [o for o in done if still_improving(o.training)]
    if not rising or any(o.training.epochs < MIN_CURVE_EPOCHS for o in done):
        return []
    projected = [o.mean + max(late_gain(o.training), 0.0) for o in done]
    now, _, _ = _pick(done, [o.mean for o in done])
    later, _, _ = _pick(done, projected)
    return rising if later is now else []


def recommend(outcomes: Sequence[Outcome], mode: str, rerun: Callable[[int], str] = rerun_with_epochs) -> Verdict:
    """The verdict among the outcomes that were not pruned (``outcomes[0]`` is the full network in
    ``ablate`` mode); see the module docstring. ``rerun`` says what to run for more epochs."""
    done = [o for o in outcomes if not o.pruned and o.accuracies]
    if not done:
        return Verdict(None, None, "no recommendation: no variant finished a fold")
    best = max(done, key=lambda o: (o.mean, -o.variant.blocks))
    anchor = outcomes[0].training if mode == "ablate" else replace(best.training, label=f"the best variant, {best.variant.label},")
    harmless = harmless_rises(done)
    missing = problems([o.training for o in done if o not in harmless], needs_learning=[anchor], rerun=rerun)
    if missing:
        return Verdict(None, best, "no recommendation: " + "; ".join(missing), missing)
    rec, best, tied = _pick(done, [o.mean for o in done])
    verdict = _recommended(outcomes, done, mode, rec, best, tied)
    if harmless:
        one = len(harmless) == 1
        gains = _and([f"{late_gain(o.training):+.3f}" for o in harmless])
        verdict.sentence += (f" ({_and([o.variant.label for o in harmless])} {'was' if one else 'were'} still "
                             f"improving: {gains} over the last quarter of {'its' if one else 'their'} epochs; "
                             "continuing every variant's rise for another quarter would not change the answer)")
        verdict.rising = harmless
    return verdict


def _recommended(outcomes: Sequence[Outcome], done: Sequence[Outcome], mode: str, rec: Outcome, best: Outcome,
                 tied: list[Outcome]) -> Verdict:
    """The verdict's sentence for a recommendation."""
    score = f"{best.mean:.3f} ± {best.standard_error:.3f}"
    floored = best.standard_error < MIN_DIFFERENCE
    band = f"{MIN_DIFFERENCE:.3f}" if floored else "one standard error"
    floor = f"; a difference under {MIN_DIFFERENCE:.3f} is a tie, however small the standard error" if floored else ""
    if mode == "depth":
        text = f"recommended depth: {rec.variant.blocks} — "
        if len(tied) > 1:
            text += (f"a tie: depths {_and([str(o.variant.blocks) for o in tied])} are within {band} of "
                     f"the best (depth {best.variant.blocks}, {score}{floor}); the one-standard-error rule picks "
                     "the shallowest")
        else:
            text += f"the best ({score}); no shallower depth is within {band}"
        return Verdict(rec, best, text, tied=tied)
    full = outcomes[0]
    if rec is full:
        drops = ", ".join(f"{o.variant.label} {m:+.3f} ± {se:.3f}" for o in done[1:] for m, se in [drop(full, o)])
        text = (f"recommended: keep all {full.variant.blocks} blocks — removing any block costs more than {band} "
                f"(accuracy lost, paired over folds: {drops})")
        return Verdict(rec, best, text, tied=tied)
    text = f"recommended: {rec.variant.label} ({rec.variant.blocks} blocks, {rec.variant.parameters:,} parameters) — "
    if len(tied) > 1:
        text += (f"a tie: {_and([o.variant.label for o in tied])} are within {band} of the best "
                 f"({best.variant.label}, {score}{floor}); the one-standard-error rule picks the simplest (fewest "
                 "blocks, then fewest parameters)")
    else:
        text += f"the best ({score})"
    lost, error = drop(full, rec)
    text += f"; removing it costs {lost:+.3f} ± {error:.3f} accuracy (paired over folds)"
    return Verdict(rec, best, text, tied=tied)


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
