"""One ``convscope search`` invocation: parent run, workers, progress, end-of-study report."""

from __future__ import annotations

import dataclasses
import datetime
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import optuna

from search.objective import StudySettings
from search.report import best_trials_table, close_figures, study_figures
from search.space import describe, suggest
from search.study import (
    ProgressMonitor,
    StudyStopped,
    best_trial,
    create,
    failure_streak,
    finished_count,
    run_workers,
    summary_line,
)
from tracking.base import RunStatus
from tracking.hparams import write_experiment_config
from tracking.mlflow_sink import MlflowTracker
from tracking.stores import Stores, first_open_lock, mask_secrets


def run_study(
    settings: StudySettings,
    *,
    echo: Callable[[str], None] = print,
    quiet: bool = False,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """Create/load the study, run workers until ``settings.trials`` trials are finished, report.

    Raises StudyStopped when the same error failed the last trials in a row;
    KeyboardInterrupt ends the parent run KILLED and leaves the study continuable.
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    echo = _without_secrets(echo)
    study = create(settings)
    say = echo if not quiet else (lambda line: None)
    echo(f"study {settings.study_name!r} in {settings.storage.display}")
    say(describe(settings.space))
    stores = settings.stores()
    parent = _open_parent(settings, stores)
    settings = dataclasses.replace(settings, parent_run_id=parent.run_id if parent else None)
    write_experiment_config(settings.study_tensorboard_dir(), _hparam_domains(settings), [settings.metric])
    remaining = max(0, settings.trials - finished_count(study))
    if remaining == 0:
        say(f"the study already holds {settings.trials} finished trials (--trials is a total): nothing to run")
    status = RunStatus.FAILED
    try:
        with ProgressMonitor(study, echo, quiet, settings.trials):
            if remaining:
                run_workers(settings, remaining, pruner=pruner)
        streak = failure_streak(study)
        if streak is not None:
            raise StudyStopped(f"stopped: the last trials all failed with the same error: {streak}")
        status = RunStatus.FINISHED
    except KeyboardInterrupt:
        status = RunStatus.KILLED
        raise
    finally:
        if parent is not None:
            _report(study, parent, settings)
            parent.close(status)
        echo(summary_line(study))
        best = best_trial(study)
        if best is not None:
            echo(f"best trial #{best.number}: {settings.metric} {best.value:.4f}  params {best.params}")
        echo(f"study {settings.study_name!r} in {settings.storage.display}")
        if parent is not None and parent.run_url:
            echo(f"parent run: {parent.run_url}")
    return study


def _without_secrets(echo: Callable[[str], None]) -> Callable[[str], None]:
    """``echo`` that prints every line with its URLs' passwords masked (``mask_secrets``)."""

    def masked(line: str) -> None:
        echo(mask_secrets(line))

    return masked


def _open_parent(settings: StudySettings, stores: Stores) -> MlflowTracker | None:
    if not settings.base.tracking.mlflow:
        return None
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    with first_open_lock(stores):
        parent = MlflowTracker(
            stores.mlflow_uri, settings.base.tracking.experiment, f"{settings.study_name}-{stamp}",
            artifact_location=stores.artifact_location, ui_url=stores.ui_url,
            tags={"convscope.kind": "study", "optuna.study": settings.study_name,
                  "optuna.storage": settings.storage.display},
        )
    parent.log_params({
        "study.name": settings.study_name, "study.metric": settings.metric, "study.direction": settings.direction,
        "study.pruner": settings.pruner, "study.trials": settings.trials, "study.jobs": settings.jobs,
        "study.seed": settings.seed, "study.space": describe(settings.space).replace("\n", "; "),
    })
    return parent


class _NameRecorder:
    """Stands in for a trial: records every parameter ``suggest`` asks for, at its largest value
    (so the deepest network, and with it every per-layer width, is named)."""

    def __init__(self) -> None:
        self.domains: dict[str, list | None] = {}

    def suggest_int(self, name: str, low: int, high: int, **kwargs: object) -> int:
        self.domains[name] = None
        return high

    def suggest_float(self, name: str, low: float, high: float, **kwargs: object) -> float:
        self.domains[name] = None
        return high

    def suggest_categorical(self, name: str, choices: tuple) -> object:
        self.domains[name] = list(choices)
        return choices[-1]


def _hparam_domains(settings: StudySettings) -> dict[str, list | None]:
    recorder = _NameRecorder()
    suggest(recorder, settings.space, settings.base)  # type: ignore[arg-type]
    return recorder.domains | {"trial": None}


def _report(study: optuna.Study, parent: MlflowTracker, settings: StudySettings) -> None:
    """Plots, the best-trials table and the best trial's model, into the parent run."""
    try:
        figures = study_figures(study)
        for key, figure in figures.items():
            parent.log_figure(key, figure)
        close_figures(figures)
        csv_text, markdown = best_trials_table(study)
        with tempfile.TemporaryDirectory() as tmp:
            for name, text in (("best_trials.csv", csv_text), ("best_trials.md", markdown)):
                path = Path(tmp) / name
                path.write_text(mask_secrets(text))
                parent.log_file(path, "study")
            best = best_trial(study)
            if best is not None and "mlflow_run_id" in best.user_attrs:
                model_dir = parent.client.download_artifacts(best.user_attrs["mlflow_run_id"], "model", tmp)
                for path in sorted(Path(model_dir).iterdir()):
                    parent.log_file(path, "best_model")
                parent.set_tags({"best_trial": str(best.number), "best_run_id": best.user_attrs["mlflow_run_id"]})
                parent.log_metrics({f"best/{settings.metric}": float(best.value or 0.0)}, step=0)
    except Exception as error:  # the study's results stay in Optuna and the child runs
        print(f"could not write the study report: {error}", file=sys.stderr)
