"""A depth study within a time budget: folds in rounds, stopped when the answer is clear.

Contract (``convscope depth --timeout``):
- ``plan`` times every variant (``analysis.depth_plan.calibrate``) on the first prepared fold and
  gives every fold run the epochs that fit ``MIN_ROUNDS`` rounds in the budget (unless ``--epochs``
  was given).
- ``run_rounds`` trains round after round: round r trains every variant on fold r, so the variants
  are always compared on the same folds. After each complete round from the second on, the verdict
  of :func:`analysis.depth_verdict.recommend` is drawn on the complete rounds; the study stops once
  at least ``MIN_ROUNDS`` rounds ran and the verdict recommends the same variant as after the round
  before, when every fold ran, or before a run that would not end inside the budget.
- A fold run that did not learn while the same variant or a variant of no more blocks learned on
  that fold (``depth_folds.failed_fold``) is named and trained again once with another seed; failing
  again, it is left out of the variant's numbers and named in the verdict.
- The final verdict says what is missing when it has no answer: more epochs (``--timeout`` for the
  epochs the rising curves need) or more folds (``--timeout`` for ``MIN_ROUNDS`` rounds); an answer
  drawn from fewer than ``MIN_ROUNDS`` rounds is called provisional, and one that changed in the
  last round is called not yet stable, each with the ``--timeout`` that would settle it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from convscope.analysis.depth_folds import FoldResult, add_result, failed_fold, prepare_fold, train_fold
from convscope.analysis.depth_plan import MIN_ROUNDS, RUN_OVERHEAD_S, Budget, calibrate, epoch_seconds, plan_epochs
from convscope.analysis.depth_verdict import Outcome, Variant, Verdict, recommend
from convscope.analysis.verdicts import Training, learned, more_epochs
from convscope.tracking.mlflow_sink import MlflowTracker
from convscope.train.durations import format_duration
from convscope.train.prepared import Prepared


@dataclass
class Rounds:
    """What a timed study did: the folds that ran, why it stopped, and the verdict after each round."""

    epochs: int
    budget: Budget
    completed: int = 0  # complete rounds
    stop: str = ""  # why it stopped, in words
    after_round: list[str] = field(default_factory=list)  # the recommended variant's label after round 2, 3, …


def plan(name: str, folds: int, variants: Sequence[Variant], first: Prepared, timeout: float, epochs_given: bool,
         echo: Callable[[str], None]) -> tuple[tuple[Variant, ...], Prepared, Budget]:
    """The variants with the planned epochs, the first fold prepared for them, and the budget."""
    per_image = calibrate(variants, first.config.model, first.config.optim.batch_size, first.device)
    train_images, val_images = len(first.data.train), len(first.data.val)
    epochs, limit = (first.config.optim.epochs, 0) if epochs_given else \
        plan_epochs(timeout, per_image, train_images, val_images)
    variants = tuple(replace(v, config=replace(v.config, optim=replace(v.config.optim, epochs=epochs),
                                               data=replace(v.config.data, train_limit=limit or v.config.data.train_limit)))
                     for v in variants)
    if limit:  # the first fold again, on the sample of its photos
        first = prepare_fold(name, folds, variants[0], 0)
    else:
        first = replace(first, config=replace(first.config, optim=replace(first.config.optim, epochs=epochs)))
    per_epoch = epoch_seconds(per_image, limit or train_images, val_images)
    per_run = {slug: epochs * seconds + RUN_OVERHEAD_S for slug, seconds in per_epoch.items()}
    one_round = sum(per_run.values())
    photos = (f" on {limit:,} of the {train_images:,} training photos of each fold (a stratified sample: "
              "every photo does not fit)" if limit else "")
    echo(f"plan: {epochs} epochs a fold run{' (--epochs)' if epochs_given else ''}{photos}; one round of "
         f"{len(variants)} networks ≈ {format_duration(one_round)}; at least {MIN_ROUNDS} rounds, "
         f"then more until the answer holds, within {format_duration(timeout)}")
    return variants, first, Budget(timeout, per_run)


def trimmed(outcomes: Sequence[Outcome], rounds: int) -> list[Outcome]:
    """The outcomes restricted to folds 0 … rounds−1."""
    kept = []
    for o in outcomes:
        keep = [i for i, fold in enumerate(o.fold_numbers) if fold < rounds]
        def pick(values: list) -> list:
            return [values[i] for i in keep if i < len(values)]

        kept.append(replace(o, accuracies=pick(o.accuracies), folds=pick(o.fold_numbers), run_ids=pick(o.run_ids),
                            curves=pick(o.curves), images=pick(o.images), left_out=list(o.left_out)))
    return kept


def run_rounds(name: str, folds: int, variants: Sequence[Variant], mode: str, first: Prepared | None,
               budget: Budget, parent: MlflowTracker | None, echo: Callable[[str], None]) -> tuple[list[Outcome], Verdict, Rounds]:
    """Every round that the budget allows and the answer needs; the outcomes, the verdict and the rounds."""
    epochs = variants[0].config.optim.epochs
    rounds = Rounds(epochs, budget)
    outcomes = [Outcome(v) for v in variants]
    for fold in range(folds):
        learned_here: list[int] = []  # blocks of the variants that learned on this fold
        for variant, outcome in zip(variants, outcomes):
            if first is None and not budget.fits(variant.slug):
                rounds.stop = (f"the budget left {format_duration(max(budget.left, 0))}, less than the next run "
                               f"needs (≈ {format_duration(budget.estimate(variant.slug))})")
                break
            result = _train(name, folds, variant, fold, first, parent, echo, budget)
            first = None
            elsewhere = any(blocks <= variant.blocks for blocks in learned_here) or \
                any(learned(_training(outcome, i)) for i in range(len(outcome.accuracies)))
            if failed_fold(result, elsewhere):
                result = _retry(name, folds, variant, result, parent, echo, budget, outcome)
                if result is None:
                    continue
            add_result(outcome, result)
            if learned(result.training):
                learned_here.append(variant.blocks)
        if rounds.stop:
            break
        rounds.completed = fold + 1
        if rounds.completed >= 2:
            verdict = recommend(trimmed(outcomes, rounds.completed), mode)
            rounds.after_round.append(verdict.recommended.variant.label if verdict.recommended else "")
            if rounds.completed >= MIN_ROUNDS and len(rounds.after_round) >= 2 and \
                    rounds.after_round[-1] and rounds.after_round[-1] == rounds.after_round[-2]:
                rounds.stop = (f"the answer ({rounds.after_round[-1]}) was the same after {rounds.completed - 1} and "
                               f"{rounds.completed} folds")
                break
    else:
        rounds.stop = rounds.stop or f"every one of the {folds} folds ran"
    return outcomes, final_verdict(outcomes, mode, rounds), rounds


def final_verdict(outcomes: Sequence[Outcome], mode: str, rounds: Rounds) -> Verdict:
    """The verdict on every fold that ran, with what is missing said as the ``--timeout`` that gets it."""
    budget = rounds.budget

    def rerun(at_epochs: int) -> str:
        factor = more_epochs(at_epochs) / max(at_epochs, 1)
        return (f"more epochs needed: rerun with --timeout "
                f"{format_duration(budget.needed_for(max(rounds.completed, MIN_ROUNDS), factor))}")

    verdict = recommend(outcomes, mode, rerun=rerun)
    left_out = [f"{o.variant.label} {text}" for o in outcomes for text in o.left_out]
    if verdict.recommended is not None:
        if rounds.completed < MIN_ROUNDS:
            verdict.sentence = (f"provisional, from {rounds.completed} fold{'s' if rounds.completed != 1 else ''} of "
                                f"the {MIN_ROUNDS} a verdict needs (rerun with --timeout "
                                f"{format_duration(budget.needed_for(MIN_ROUNDS))}): " + verdict.sentence)
        elif len(rounds.after_round) >= 2 and rounds.after_round[-2] != verdict.recommended.variant.label:
            verdict.sentence += (f"; not yet stable: after {rounds.completed - 1} folds the rule picked "
                                 f"{rounds.after_round[-2] or 'nothing'} — more folds would settle it (rerun with "
                                 f"--timeout {format_duration(budget.needed_for(rounds.completed + 2))})")
    if left_out:
        verdict.sentence += "; left out, as they did not learn twice: " + ", ".join(left_out)
    return verdict


def _training(outcome: Outcome, index: int) -> Training:
    images = outcome.images[index] if index < len(outcome.images) else 0
    return Training(outcome.variant.label, tuple(outcome.curves[index]), images, outcome.chance)


def _train(name: str, folds: int, variant: Variant, fold: int, first: Prepared | None, parent: MlflowTracker | None,
           echo: Callable[[str], None], budget: Budget, retry: bool = False) -> FoldResult:
    started = time.monotonic()
    prepared = first if first is not None else prepare_fold(name, folds, variant, fold, retry=retry)
    result = train_fold(name, folds, prepared, variant, fold, parent, echo)
    budget.record(variant.slug, time.monotonic() - started)  # preparing the fold counts too
    return result


def _retry(name: str, folds: int, variant: Variant, failed: FoldResult, parent: MlflowTracker | None,
           echo: Callable[[str], None], budget: Budget, outcome: Outcome) -> FoldResult | None:
    """``failed`` trained again with another seed; None (and the fold named as left out) when it fails again
    or there is no time for it."""
    where = f"fold {failed.fold + 1}"
    first_try = f"{failed.accuracy:.3f}, chance {failed.chance:.3f}"
    if not budget.fits(variant.slug):
        echo(f"{variant.label} {where} did not learn ({first_try}) and there is no time to train it again: left out")
        outcome.left_out.append(f"{where} ({first_try}; no time to train it again)")
        return None
    echo(f"{variant.label} {where} did not learn ({first_try}) although it learned elsewhere: training it again "
         "with another seed")
    again = _train(name, folds, variant, failed.fold, None, parent, echo, budget, retry=True)
    if failed_fold(again, True):
        echo(f"{variant.label} {where} did not learn again ({again.accuracy:.3f}): left out")
        outcome.left_out.append(f"{where} ({failed.accuracy:.3f} and {again.accuracy:.3f})")
        return None
    return again
