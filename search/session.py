"""One ``convscope search`` invocation: parent run, workers, progress, end-of-study report.

It starts with a line saying from which epoch trials may be pruned (``search.pruning``)
and, with ``--timeout``, until when trials start (``search.budget``); trials an earlier
run's budget stopped are enqueued again first. It ends with this run's wall time and how
its trials ended, then the study's totals; the parent run gets the study's figures,
a best-value-over-time figure among them, also after Ctrl-C.

The parent run is opened with ``tracking.lifecycle.open_parent_run`` (tagged with this
process) and closed through ``tracked_run``. When the study starts and when it ends, parent
runs of the same study whose process was killed (SIGKILL, a crash) are ended KILLED
(``tracking.orphans``).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import optuna

from convscope.search.budget import (
    budget_line, format_duration, is_interrupted, is_stopped, retry_stopped, run_line, stopped_ahead,
)
from convscope.search.objective import StudySettings
from convscope.search.pruning import pruning_start
from convscope.search.report import best_over_time_figure, best_trials_table, close_figures, study_figures
from convscope.search.space import describe, params_text, suggest
from convscope.search.study import (
    ProgressMonitor,
    StudyStopped,
    best_trial,
    create,
    failure_streak,
    finished_count,
    summary_line,
)
from convscope.search.workers import run_workers
from convscope.tracking.faults import check_writable, describe_error, store_errors
from convscope.tracking.hparams import write_experiment_config
from convscope.tracking.lifecycle import open_parent_run, tracked_run
from convscope.tracking.mlflow_sink import MlflowTracker
from convscope.tracking.orphans import close_orphaned_runs
from convscope.tracking.stores import Stores, first_open_lock
from convscope.tracking.secrets import mask_secrets
from convscope.search.final_training import (
    FinalPlan, best_completed, epoch_times, final_train_images, plan_final, register_final, speedup_over_trials,
    train_final)
from convscope.search.held_out import score_run
from convscope.search.registry import CHAMPION, register_study_models


def run_study(
    settings: StudySettings,
    *,
    echo: Callable[[str], None] = print,
    quiet: bool = False,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """Create/load the study, run workers until ``settings.trials`` trials are finished or the
    deadline has passed, report.

    Raises StudyStopped when the same error failed the last trials in a row;
    KeyboardInterrupt ends the parent run KILLED and leaves the study continuable.
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    echo = _without_secrets(echo)
    started = settings.started if settings.started is not None else time.time()
    settings = dataclasses.replace(settings, started=started)
    check_writable(settings.base.tracking.runs_dir, "--runs-dir")  # before the journal or any run is written
    study = create(settings)
    say = echo if not quiet else (lambda line: None)
    echo(f"study {settings.study_name!r} in {settings.storage.display}")
    say(describe(settings.space))
    optim = settings.base.optim
    say(pruning_start(optim.epochs, optim.schedule).describe(settings.pruner))
    if settings.timeout is not None and settings.deadline is not None:
        say(budget_line(settings.timeout, settings.deadline, settings.final_share))
    if settings.base.data.test_fraction:
        say(f"test split: {settings.base.data.test_fraction:.0%} of every class set aside (--test-fraction), never "
            "trained on or used to pick; the best network is scored on it once, at the end")
    before = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    interrupted_before = {t.number for t in study.get_trials(deepcopy=False) if is_interrupted(t)}
    for number in retry_stopped(study):
        how = "Ctrl-C or SIGTERM" if number in interrupted_before else "an earlier run's time budget"
        say(f"trial {number} was stopped by {how}: it runs again first, same parameters")
    stores = settings.stores()
    server = "" if stores.embedded else stores.mlflow_uri
    parent: MlflowTracker | None = None
    name = f"{settings.study_name}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    try:
        with store_errors(settings.base.tracking.runs_dir, "--runs-dir", server=server, keep=(StudyStopped,)):
            _close_orphaned_parents(settings, stores, echo)  # parents of this study's workers that were killed
            parent = _open_parent(settings, stores, name)
            settings = dataclasses.replace(settings, parent_run_id=parent.run_id if parent else None)
            with tracked_run(parent, name) if parent is not None else nullcontext():
                if parent is not None:
                    _log_parent_params(settings, parent)
                _run(study, settings, echo, say, quiet, pruner, parent, before)
    finally:
        _close_orphaned_parents(settings, stores, echo)
        ended = _ended_since(study, before)
        echo(run_line(ended, time.time() - started, settings.timeout))
        if len(study.get_trials(deepcopy=False)) > len(ended):  # earlier runs' or other workers' trials too
            echo(f"the whole study: {summary_line(study)}")
        best = best_trial(study)
        if best is not None:
            echo(f"best trial #{best.number}: {settings.metric} {best.value:.4f}  {params_text(best.params)}")
        for line in stopped_ahead(study, best, settings.study_name):
            echo(line)
        interrupted = [t.number for t in ended if is_interrupted(t)]
        if interrupted:
            echo(f"interrupted: the same command goes on with the study (trial{'s' * (len(interrupted) > 1)} "
                 f"{', '.join(map(str, interrupted))} first, same parameters)")
        echo(f"study {settings.study_name!r} in {settings.storage.display}")
        if parent is not None and parent.run_url:
            echo(f"parent run: {parent.run_url}")
    return study


def _ended_since(study: optuna.Study, before: set[int]) -> list[optuna.trial.FrozenTrial]:
    """The trials of ``study`` that ended since only the trials ``before`` had."""
    return [t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and t.number not in before]


def _run(study: optuna.Study, settings: StudySettings, echo: Callable[[str], None], say: Callable[[str], None],
         quiet: bool, pruner: optuna.pruners.BasePruner | None, parent: MlflowTracker | None,
         before: set[int]) -> None:
    """The workers until the study holds ``settings.trials`` finished trials or the deadline passed,
    then (also after an error or an interrupt) the report into ``parent``. Raises StudyStopped
    after a failure streak."""
    write_experiment_config(settings.study_tensorboard_dir(), _hparam_domains(settings), [settings.metric])
    remaining = None if settings.trials is None else max(0, settings.trials - finished_count(study))
    if remaining == 0:
        say(f"the study already holds {settings.trials} finished trials (--trials is a total): nothing to run")
    final: list[tuple[FinalPlan, str]] = []  # the final training's plan and run, once it ran
    try:
        with ProgressMonitor(study, echo, quiet, settings.trials):
            if remaining is None or remaining > 0:
                run_workers(settings, remaining, pruner=pruner)
        streak = failure_streak(study)
        if streak is not None:
            raise StudyStopped(f"stopped: the last trials all failed with the same error: {streak}")
        if settings.final_share and parent is not None:
            final.extend(_final_training(study, settings, parent, echo))
    finally:
        if parent is not None:
            _report(study, parent, settings, before, echo, final[0] if final else None)


def _final_training(study: optuna.Study, settings: StudySettings, parent: MlflowTracker,
                    echo: Callable[[str], None]) -> list[tuple[FinalPlan, str]]:
    """The best trial's network trained again in the time left (``search.final_training``), or one
    line saying why not."""
    best = best_completed(study)
    if best is None:
        echo("no final training: no trial completed")
        return []
    run_id = best.user_attrs["mlflow_run_id"]
    data = best.user_attrs.get("config", {}).get("data", {})
    epochs = int(best.user_attrs.get("config", {}).get("optim", {}).get("epochs", settings.base.optim.epochs))
    tags = parent.client.get_run(run_id).data.tags
    train, val = (int(tags.get(f"data.{part}_images", "0") or 0) for part in ("train", "val"))
    final_images = final_train_images(train, val, float(data.get("val_fraction", settings.base.data.val_fraction)),
                                      bool(data.get("train_limit", 0)))
    left = (settings.budget_end or time.time()) - time.time()
    plan, why_not = plan_final(best.number, run_id, epochs, epoch_times(parent.tracking_uri, run_id),
                               (train, final_images), left, speedup_over_trials(settings.jobs, settings.device))
    if plan is None:
        echo(why_not)
        return []
    echo(plan.line(left))
    return [(plan, train_final(plan, settings.base, settings.study_name, parent.run_id, parent.tracking_uri, echo,
                               keep_checkpoint=settings.keep_all))]


def _close_orphaned_parents(settings: StudySettings, stores: Stores, echo: Callable[[str], None]) -> None:
    """End KILLED the parent runs of this study whose ``convscope search`` process is provably gone
    (``tracking.orphans``); one line each. A failure to look is one line on stderr, never an error."""
    if not settings.base.tracking.mlflow:
        return
    try:
        with first_open_lock(stores):  # a fresh embedded store is created once, the other workers wait for it
            ended = close_orphaned_runs(stores.mlflow_uri, settings.base.tracking.experiment,
                                        {"convscope.kind": "study", "optuna.study": settings.study_name})
    except Exception as error:  # the study's own work matters more than this clean-up
        print(f"could not look for stale parent runs of study {settings.study_name!r}: {describe_error(error)}",
              file=sys.stderr)
        return
    for run_id, name, reason in ended:
        echo(f"parent run {name} ({run_id}) of study {settings.study_name!r} ended killed: {reason}")


def _without_secrets(echo: Callable[[str], None]) -> Callable[[str], None]:
    """``echo`` that prints every line with its URLs' passwords masked (``mask_secrets``)."""

    def masked(line: str) -> None:
        echo(mask_secrets(line))

    return masked


def _open_parent(settings: StudySettings, stores: Stores, name: str) -> MlflowTracker | None:
    """The study's parent run named ``name`` (None without MLflow), tagged with the study and its process."""
    if not settings.base.tracking.mlflow:
        return None
    return open_parent_run(
        stores, settings.base.tracking.experiment, name,
        tags={"convscope.kind": "study", "optuna.study": settings.study_name,
              "optuna.storage": settings.storage.display},
    )


def _log_parent_params(settings: StudySettings, parent: MlflowTracker) -> None:
    parent.log_params({
        "study.name": settings.study_name, "study.metric": settings.metric, "study.direction": settings.direction,
        "study.pruner": settings.pruner, "study.jobs": settings.jobs, "study.workers_in": settings.workers_in,
        "study.trials": settings.trials if settings.trials is not None else "until the time budget",
        "study.timeout": format_duration(settings.timeout) if settings.timeout is not None else "none",
        "study.seed": settings.seed, "study.space": describe(settings.space).replace("\n", "; "),
    })


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


def _report(study: optuna.Study, parent: MlflowTracker, settings: StudySettings, before: set[int],
            echo: Callable[[str], None] = print, final: tuple[FinalPlan, str] | None = None) -> None:
    """Plots (``best_over_time`` among them), this run's wall time and budget stops, the
    best-trials table and the best trial's model, into the parent run."""
    try:
        figures = study_figures(study)
        over_time = best_over_time_figure(study, settings.metric, _time_marks(settings, bool(before)))
        if over_time is not None:
            figures["best_over_time"] = over_time
        for key, figure in figures.items():
            parent.log_figure(key, figure)
        close_figures(figures)
        ended = _ended_since(study, before)
        wall = time.time() - (settings.started or time.time())
        trial_hours = min(wall, (settings.deadline or time.time()) - (settings.started or time.time())) / 3600
        done = sum(1 for t in ended if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
        parent.log_metrics({"study/wall_seconds": wall,
                            "study/stopped_by_budget": float(sum(1 for t in ended if is_stopped(t))),
                            "study/trials_per_hour": done / trial_hours if trial_hours > 0 else 0.0}, step=0)
        csv_text, markdown = best_trials_table(study)
        with tempfile.TemporaryDirectory() as tmp:
            for name, text in (("best_trials.csv", csv_text), ("best_trials.md", markdown)):
                path = Path(tmp) / name
                path.write_text(mask_secrets(text))
                parent.log_file(path, "study")
            best = best_trial(study)
            if best is not None and "mlflow_run_id" in best.user_attrs:
                name = settings.model_name or settings.study_name
                version = register_study_models(parent.client, name, study, settings.metric, settings.direction)
                champion_run = best.user_attrs["mlflow_run_id"]
                what = f"best trial #{best.number}"
                if final is not None:
                    plan, champion_run = final
                    version = register_final(parent.client, name, champion_run, plan, settings.study_name)
                    what = f"best trial #{best.number} trained again on train+validation for {plan.epochs} epochs"
                    parent.set_tags({"final_run_id": champion_run})
                parent.set_tags({"best_trial": str(best.number), "best_run_id": best.user_attrs["mlflow_run_id"],
                                 "registered_model": f"models:/{name}@{CHAMPION} (version {version})",
                                 "champion": what})
                parent.log_metrics({f"best/{settings.metric}": float(best.value or 0.0)}, step=0)
                echo(f"best network: models:/{name}@{CHAMPION} (registered model {name!r}, version {version}: {what})")
                tested = _score_on_test(best, champion_run, what, settings, parent, name, version, echo)
                path = Path(tmp) / "champion.md"
                path.write_text(mask_secrets(_champion_page(best, f"models:/{name}@{CHAMPION}", what, tested,
                                                            done / trial_hours if trial_hours > 0 else 0.0)))
                parent.log_file(path, "study")
    except Exception as error:  # the study's results stay in Optuna and the child runs
        print(f"could not write the study report: {error}", file=sys.stderr)


def _champion_page(best: optuna.trial.FrozenTrial, uri: str, what: str, tested: str, per_hour: float) -> str:
    """``study/champion.md``: the network the study hands over, its test and validation figures, the
    trials per hour, and every setting it trained with."""
    import yaml

    settings = yaml.safe_dump(best.user_attrs.get("config", {}), sort_keys=False).strip()
    parts = [f"# The study's champion: {uri}", what, tested,
             f"Trials finished or pruned per hour of the trials' time: {per_hour:.1f}",
             f"Settings of trial #{best.number}:", f"```yaml\n{settings}\n```"]
    return "\n\n".join(parts) + "\n"


def _score_on_test(best: optuna.trial.FrozenTrial, run_id: str, what: str, settings: StudySettings,
                   parent: MlflowTracker, model_name: str, version: str | None, echo: Callable[[str], None]) -> str:
    """The champion (run ``run_id``, described by ``what``) scored once on the held-out test split,
    beside the validation score that picked the best trial; the line printed."""
    evaluation = score_run(run_id, settings.base, parent.tracking_uri)
    if evaluation is None:
        line = ("no held-out test split (--test-fraction, or a test/ folder): the best figure above is the "
                "validation split's, the one that picked it")
        echo(line)
        return line
    low, high = evaluation.interval()
    parent.log_metrics({"test/accuracy": evaluation.accuracy, "test/accuracy_low": low, "test/accuracy_high": high,
                        "test/images": float(len(evaluation.labels))}, step=0)
    if version is not None:
        parent.client.set_model_version_tag(model_name, version, "test/accuracy", f"{evaluation.accuracy:.6g}")
    line = (f"held-out test: the champion ({what}) scores {evaluation.accuracy:.4f} (95% interval {low:.4f}–"
            f"{high:.4f}) on {len(evaluation.labels):,} photos no trial saw; {settings.metric} {best.value:.4f} of "
            f"trial #{best.number} on the validation split that picked it")
    echo(line)
    return line


def _time_marks(settings: StudySettings, resumed: bool) -> dict[str, datetime.datetime]:
    """Vertical lines of the best-over-time figure: this run's start (when the study had trials
    before it) and its deadline (once passed)."""
    marks = {}
    if resumed and settings.started is not None:
        marks["this run started"] = datetime.datetime.fromtimestamp(settings.started)
    if settings.deadline is not None and time.time() >= settings.deadline:
        label = "trials' time spent (then the final training)" if settings.final_share else "time budget spent"
        marks[label] = datetime.datetime.fromtimestamp(settings.deadline)
    return marks
