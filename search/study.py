"""Running a study: create or load it, run trials in workers (``search.workers``), report at the end.

``run_study`` is one invocation: it creates the study once (or loads it — trial
numbers continue), opens one MLflow parent run, runs ``--jobs`` workers until
the study holds ``--trials`` finished (complete + pruned) trials or the time budget
(``--timeout``, ``search.budget``) is spent, prints a line per finished trial, and
finally logs the optimisation plots, the best-trials table and the best model into
the parent run. The same worker function serves
``--jobs`` processes here and other machines running the same command against
one PostgreSQL storage.
"""

from __future__ import annotations

import os
from functools import partial
import threading
import warnings
import zlib
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from convscope.search.budget import (
    STOPPED_ATTR, TimeBudgetSpent, counts, hide_budget_tracebacks, is_interrupted, is_stopped, spent, stop_requested,
)
from convscope.search.objective import Objective, StudySettings
from convscope.search.pruning import make_pruner
from convscope.search.space import make_sampler, params_text
from convscope.search.storage import open_storage
from convscope.tracking.base import RunStatus
from convscope.train.memory import release_memory

STOP_GRACE_SECONDS = 60  # how long interrupted workers get to close their runs (compose allows 2 min)
FAILURE_STREAK = 3  # this many consecutive failures with the same error stop the study
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class StudyStopped(RuntimeError):
    """The study stopped itself: the same error failed FAILURE_STREAK trials in a row."""


def study_pruner(settings: StudySettings) -> optuna.pruners.BasePruner:
    """``--pruner`` for the trials' epochs and schedule (``search.pruning.make_pruner``)."""
    return make_pruner(settings.pruner, settings.base.optim.epochs, settings.base.optim.schedule, settings.metric)


def failure_streak(study: optuna.Study) -> str | None:
    """The error shared by the last FAILURE_STREAK finished trials, if they all failed with it."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and t.datetime_complete]
    done.sort(key=lambda t: t.datetime_complete)  # type: ignore[arg-type, return-value]
    last = done[-FAILURE_STREAK:]
    if len(last) < FAILURE_STREAK or any(t.state != TrialState.FAIL for t in last):
        return None
    errors = {t.user_attrs.get("error") for t in last}
    return errors.pop() if len(errors) == 1 and None not in errors else None


def finished_count(study: optuna.Study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False, states=FINISHED))


def load(settings: StudySettings, pruner: optuna.pruners.BasePruner | None = None, worker: int = 0) -> optuna.Study:
    storage = open_storage(settings.storage, on_dead_trial=partial(mark_run_killed, settings))
    study = optuna.load_study(study_name=settings.study_name, storage=storage,
                              pruner=pruner or study_pruner(settings))
    study.sampler = make_sampler(sampler_seed(settings, worker, len(study.get_trials(deepcopy=False))))
    return study


def sampler_seed(settings: StudySettings, worker: int, existing_trials: int) -> int:
    """A seed per worker: ``--seed`` alone would make every worker (and every rerun of a study)
    draw the same startup parameters. Reproducible for one process on the embedded storage;
    with a database, workers on other machines start together, so the process id is mixed in."""
    parts = [settings.seed, worker, existing_trials]
    if settings.storage.kind == "rdb":
        parts.append(os.getpid())
    return zlib.crc32(repr(parts).encode()) & 0x7FFFFFFF


def create(settings: StudySettings) -> optuna.Study:
    """Create the study once; a second call (another worker, a rerun) loads the same one."""
    storage = open_storage(settings.storage, on_dead_trial=partial(mark_run_killed, settings))
    return optuna.create_study(
        study_name=settings.study_name,
        storage=storage,
        sampler=make_sampler(settings.seed),
        pruner=study_pruner(settings),
        direction=settings.direction,
        load_if_exists=True,
    )


def worker(
    settings: StudySettings, worker_index: int = 0, threads: int | None = None,
    device: str | None = None, pruner: optuna.pruners.BasePruner | None = None, *, shares_process: bool = False,
) -> None:
    """Run trials, one at a time, until the study holds ``settings.trials`` finished trials
    (None: no limit) or ``settings.deadline`` has passed.

    Before each trial the worker counts the finished and running trials of the
    whole study (other workers and machines included), so workers stop together
    and overshoot only if two start a last trial in the same instant. A trial
    that fails does not count; FAILURE_STREAK identical failures stop the worker.
    After the deadline no trial starts, and a running one stops at the end of its
    epoch (``TimeBudgetSpent``, see ``search.budget``). ``threads``: torch's intra-op threads for
    this process; ``shares_process``: other workers run in this process as threads.
    """
    if threads:
        import torch

        torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    hide_budget_tracebacks()
    study = load(settings, pruner, worker_index)
    objective = Objective(settings, device)
    while not spent(settings.deadline) and not stop_requested():
        with warnings.catch_warnings():  # fail_stale_trials is marked experimental; it is what optimize() calls
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # a dead worker's trial: FAIL, then retried (RDB heartbeat)
        # finished, plus running elsewhere; an enqueued (WAITING) retry still needs a worker
        taken = len(study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING)))
        if settings.trials is not None and taken >= settings.trials:
            return
        if failure_streak(study) is not None:
            return
        try:
            study.optimize(objective, n_trials=1, catch=(Exception,))
        except TimeBudgetSpent:  # the trial is FAIL with its reason; this worker is done
            return
        # Here, not in the objective: while a pruned or failed trial's exception is in flight its
        # traceback holds the trial's network, optimizer, CUDA graphs and device batches, and
        # release_memory would freeze them for the rest of the worker's life. Threads beside it still
        # hold their trials' objects: nothing is frozen then.
        release_memory(freeze=not shares_process)


def mark_run_killed(settings: StudySettings, study: optuna.Study, trial: FrozenTrial) -> None:
    """A worker died mid-trial (its heartbeat stopped): mark the trial's MLflow run KILLED. The trial
    keeps its tracking URI without the password, so a masked one is replaced by this study's own."""
    from convscope.tracking.secrets import has_masked_secret

    run_id = trial.user_attrs.get("mlflow_run_id")
    uri = trial.user_attrs.get("mlflow_tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if uri and has_masked_secret(uri):
        uri = settings.stores().mlflow_uri
    if not run_id or not uri:
        return
    from mlflow import MlflowClient

    from convscope.tracking.mlflow_sink import end_run
    from convscope.tracking.orphans import KILLED_TAG

    end_run(MlflowClient(uri), run_id, RunStatus.KILLED,
            {KILLED_TAG: f"the worker of trial {trial.number} stopped sending heartbeats"})


class ProgressMonitor:
    """One line per finished trial (number, state, value, params, seconds) above an overall
    progress bar (finished of ``total``, None: open-ended; done / pruned / failed; best so far)."""

    def __init__(
        self, study: optuna.Study, echo: Callable[[str], None], quiet: bool, total: int | None,
        interval: float = 1.0,
    ) -> None:
        self.study, self.echo, self.quiet, self.interval = study, echo, quiet, interval
        self.seen: set[int] = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
        self.bar = tqdm(total=total, initial=finished_count(study), desc="trials", unit="trial",
                        disable=quiet, dynamic_ncols=True, leave=False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="convscope-progress")

    def __enter__(self) -> ProgressMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()
        self.bar.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception:  # a storage hiccup must not end the study
                pass

    def poll(self) -> None:
        for trial in self.study.get_trials(deepcopy=False):
            if trial.state.is_finished() and trial.number not in self.seen:
                self.seen.add(trial.number)
                if not self.quiet:
                    self.bar.clear()
                    self.echo(trial_line(trial))
                if trial.state in FINISHED:
                    self.bar.update(1)
                self.bar.set_postfix_str(summary_line(self.study), refresh=True)


def trial_line(trial: FrozenTrial) -> str:
    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    value = f"{trial.value:.4f}" if trial.value is not None else "-"
    params = params_text(trial.params)
    reason = (trial.user_attrs.get("error") or trial.user_attrs.get("pruned_reason")
              or trial.user_attrs.get(STOPPED_ATTR) or "")
    state = "STOPPED" if is_stopped(trial) else "INTERRUPTED" if is_interrupted(trial) else trial.state.name
    return f"trial {trial.number:>3} {state:<8} {value:>8}  {seconds:6.1f}s  {params}" + (
        f"  ({reason})" if reason and trial.state != TrialState.COMPLETE else ""
    )


def summary_line(study: optuna.Study) -> str:
    tally = counts(study.get_trials(deepcopy=False))
    best = best_trial(study)
    best_text = f"best #{best.number} = {best.value:.4f}" if best is not None and best.value is not None else "no best yet"
    stopped = f" | stopped {tally['stopped']}" if tally["stopped"] else ""
    stopped += f" | interrupted {tally['interrupted']}" if tally["interrupted"] else ""
    return f"[done {tally['done']} | pruned {tally['pruned']} | failed {tally['failed']}{stopped} | {best_text}]"


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:
        return None
