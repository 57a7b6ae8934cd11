"""One fold run of a depth study: the fold prepared as an ordinary training run, trained quietly as
an MLflow child run of the study, and its results added to the variant's ``Outcome``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from convscope.analysis.depth_verdict import Outcome, Variant
from convscope.analysis.probes import chance_accuracy
from convscope.analysis.verdicts import Training, learned
from convscope.tracking.mlflow_sink import MlflowTracker
from convscope.train.memory import release_memory
from convscope.train.prepared import Prepared
from convscope.train.prepared import prepare
from convscope.train.run import RunTracking, train_tracked

#: Added to ``--seed`` when a fold that did not learn is trained again.
RETRY_SEED_OFFSET = 1000


@dataclass(frozen=True)
class FoldResult:
    fold: int
    accuracy: float  # final validation accuracy
    curve: list[float]  # validation accuracy per epoch
    images: int  # validation images
    chance: float  # the majority class's share of them
    run_id: str
    seconds: float

    @property
    def training(self) -> Training:
        return Training(f"fold {self.fold + 1}", tuple(self.curve), self.images, self.chance)


def prepare_fold(study: str, folds: int, variant: Variant, fold: int, retry: bool = False) -> Prepared:
    config = variant.config
    suffix = "-retry" if retry else ""
    config = replace(
        config,
        data=replace(config.data, folds=folds, fold=fold),
        optim=replace(config.optim, seed=config.optim.seed + RETRY_SEED_OFFSET) if retry else config.optim,
        tracking=replace(config.tracking, run_name=f"{study}-{variant.slug}-fold{fold}{suffix}"),
    )
    return prepare(config, echo=lambda line: None, progress=False)


def train_fold(study: str, folds: int, prepared: Prepared, variant: Variant, fold: int,
               parent: MlflowTracker | None, echo: Callable[[str], None]) -> FoldResult:
    """Train one fold quietly as a child run; its results (printed in one line)."""
    tracking = prepared.config.tracking
    started = time.perf_counter()
    try:
        result, tracker = train_tracked(prepared, RunTracking(
            parent_run_id=parent.run_id if parent else None,
            tensorboard_dir=prepared.stores.layout.tensorboard_run(tracking.experiment, study,
                                                                   f"{variant.slug}-fold{fold}"),
            tags={"convscope.kind": "depth-fold", "depth.study": study, "depth.variant": variant.label,
                  "depth.blocks": str(variant.blocks), "depth.fold": str(fold)},
        ), progress=False, echo=lambda line: None, compared=("folds", "fold"))
    finally:
        release_memory()
    labels = prepared.data.val.labels
    done = FoldResult(fold, float(result.final["val/accuracy"]), [float(e["val/accuracy"]) for e in result.history],
                      len(labels), chance_accuracy(labels), tracker.links().get("mlflow_run_id", ""),
                      time.perf_counter() - started)
    echo(f"{variant.label:<20} fold {fold + 1}/{folds}: val accuracy {done.accuracy:.4f} ({done.seconds:.1f} s)")
    return done


def add_result(outcome: Outcome, result: FoldResult) -> None:
    outcome.accuracies.append(result.accuracy)
    outcome.folds.append(result.fold)
    outcome.run_ids.append(result.run_id)
    outcome.curves.append(result.curve)
    outcome.images.append(result.images)
    outcome.chance = result.chance


def failed_fold(result: FoldResult, learned_elsewhere: bool) -> bool:
    """A fold that did not learn although the same variant, or a variant of no more blocks on the
    same fold, did: a failed training rather than a network too small for the task."""
    return learned_elsewhere and not learned(result.training)
