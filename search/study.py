"""Running a study: create or load it, fan trials out to worker processes, report at the end.

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

import multiprocessing
import os
from functools import partial
import signal
import sys
import threading
import warnings
import zlib
from typing import Any
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from convscope.search.budget import (
    STOPPED_ATTR, TimeBudgetSpent, counts, hide_budget_tracebacks, is_interrupted, is_stopped, spent,
)
from convscope.search.objective import Objective, StudySettings
from convscope.search.pruning import make_pruner
from convscope.search.space import make_sampler, params_text
from convscope.search.storage import open_storage
from convscope.tracking.base import RunStatus
from convscope.train.interrupts import Terminated
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
    storage = open_storage(settings.storage, on_dead_trial=partial(_mark_run_killed, settings))
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
    storage = open_storage(settings.storage, on_dead_trial=partial(_mark_run_killed, settings))
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
    device: str | None = None, pruner: optuna.pruners.BasePruner | None = None,
) -> None:
    """Run trials, one at a time, until the study holds ``settings.trials`` finished trials
    (None: no limit) or ``settings.deadline`` has passed.

    Before each trial the worker counts the finished and running trials of the
    whole study (other workers and machines included), so workers stop together
    and overshoot only if two start a last trial in the same instant. A trial
    that fails does not count; FAILURE_STREAK identical failures stop the worker.
    After the deadline no trial starts, and a running one stops at the end of its
    epoch (``TimeBudgetSpent``, see ``search.budget``).
    """
    if threads:
        import torch

        torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    hide_budget_tracebacks()
    study = load(settings, pruner, worker_index)
    objective = Objective(settings, device)
    while not spent(settings.deadline):
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
        # release_memory would freeze them for the rest of the worker's life.
        release_memory()


def _mark_run_killed(settings: StudySettings, study: optuna.Study, trial: FrozenTrial) -> None:
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


def run_workers(
    settings: StudySettings, remaining: int | None, *, pruner: optuna.pruners.BasePruner | None = None
) -> None:
    """``settings.jobs`` workers share ``remaining`` trials (None: until the deadline): in this process
    for one job, else processes. Each worker process gets the same absolute deadline in ``settings``.

    On a CPU, workers split the cores instead of oversubscribing them; on a GPU
    (``--trials-per-gpu K`` sets the jobs) they share the device.
    """
    jobs = max(1, settings.jobs if remaining is None else min(settings.jobs, remaining))
    cores = os.cpu_count() or 1
    threads = max(1, cores // jobs)
    devices = worker_devices(settings.device, jobs, visible_gpus())
    if jobs == 1:
        worker(settings, 0, None, devices[0], pruner)
        return
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    processes = [
        context.Process(target=_worker_process, args=(stop, settings, index, threads, devices[index]),
                        name=f"convscope-worker-{index}")
        for index in range(jobs)
    ]
    # the workers start with Ctrl-C ignored (inherited), so one that is still importing when it comes
    # prints no traceback; each takes Ctrl-C again once it runs, and leaves at once if it was stopped
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for process in processes:
            process.start()
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        _supervise(processes, context, stop, settings, threads, devices)
    except Terminated:
        # SIGTERM reached this process only (a terminal's Ctrl-C reaches the whole group):
        # pass it on as Ctrl-C so each worker ends its trial KILLED and flushes its run.
        stop.set()
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGINT)
        for process in processes:
            process.join(timeout=STOP_GRACE_SECONDS)
        raise
    except KeyboardInterrupt:
        stop.set()
        for process in processes:
            process.join(timeout=STOP_GRACE_SECONDS)
        raise
    finally:
        stop.set()
        for process in processes:
            if process.is_alive():
                process.terminate()


def _supervise(processes: list[Any], context: Any, stop: Any, settings: StudySettings, threads: int,
               devices: list[str | None]) -> None:
    """Wait for the workers; one that dies mid-trial (``search.dead_workers``) has its trial failed and
    queued again, and another worker takes its place."""
    from multiprocessing.connection import wait

    from convscope.search.dead_workers import death, requeue_dead_worker_trials

    running = list(enumerate(processes))
    while running:
        wait([process.sentinel for _, process in running])
        for index, process in [item for item in running if not item[1].is_alive()]:
            running.remove((index, process))
            why = death(process.exitcode)
            if why is None or stop.is_set():
                continue
            study = load(settings, None, index)
            numbers = requeue_dead_worker_trials(study, process.pid, why, partial(_mark_run_killed, settings))
            print(f"worker {index} (process {process.pid}) died, {why}"
                  + (f": trial {', '.join(map(str, numbers))} failed and queued again" if numbers else "")
                  + "; another worker takes its place", flush=True)
            replacement = context.Process(target=_worker_process, args=(stop, settings, index, threads, devices[index]),
                                          name=f"convscope-worker-{index}")
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                replacement.start()
            finally:
                signal.signal(signal.SIGINT, previous)
            processes.append(replacement)
            running.append((index, replacement))


def _worker_process(stop: Any, settings: StudySettings, *args: Any) -> None:
    """A worker process's entry: Ctrl-C handled from here on; nothing to do once the study was stopped.

    The worker dies with the ``convscope search`` process that started it: Linux sends it SIGTERM
    when that process dies (even by SIGKILL), its trial's run ends KILLED as on Ctrl-C, and it
    closes the study's parent run that no process holds any more."""
    from convscope.train.interrupts import end_with_parent, sigterm_as_interrupt

    from convscope.search.budget import watch_stop

    signal.signal(signal.SIGINT, signal.default_int_handler)
    watch_stop(stop)
    sys.unraisablehook = _quiet_lost_interrupts
    parent = os.getppid()
    try:
        with sigterm_as_interrupt():
            end_with_parent()
            if stop.is_set():
                return
            worker(settings, *args)
    except KeyboardInterrupt:  # its trial's run is closed KILLED already; the parent says "interrupted"
        if os.getppid() != parent:
            _close_orphaned_parent(settings)
        raise SystemExit(130) from None


def _quiet_lost_interrupts(unraisable: Any) -> None:
    """An interrupt that landed in a finaliser is dropped by Python with a traceback; the worker sees
    the stop at the next epoch's end (``stop_requested``), so only other such errors are shown."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)


def _close_orphaned_parent(settings: StudySettings) -> None:
    """The study's parent run and every trial run under it still RUNNING, KILLED with the reason, once
    the parent's process is gone: no process holds them any more (a trial whose worker was stopped
    between opening its run and training closes nothing itself). Best effort: the next convscope
    search of the study closes the parent otherwise."""
    from mlflow import MlflowClient

    from convscope.tracking.base import RunStatus
    from convscope.tracking.mlflow_sink import end_run
    from convscope.tracking.orphans import KILLED_TAG, close_orphaned_runs

    try:
        uri = settings.stores().mlflow_uri
        close_orphaned_runs(uri, settings.base.tracking.experiment,
                            {"convscope.kind": "study", "optuna.study": settings.study_name})
        if settings.parent_run_id:
            client = MlflowClient(uri)
            parent = client.get_run(settings.parent_run_id)
            for run in client.search_runs([parent.info.experiment_id],
                                          f"tags.`mlflow.parentRunId` = '{settings.parent_run_id}' "
                                          "and attributes.status = 'RUNNING'"):
                end_run(client, run.info.run_id, RunStatus.KILLED,
                        {KILLED_TAG: "its convscope search process died"})
    except Exception:  # noqa: BLE001 - another worker or the next command does it
        pass


def visible_gpus() -> int:
    """CUDA devices this process may use (CUDA_VISIBLE_DEVICES / a container's reservation)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def worker_devices(device: str, jobs: int, gpus: int) -> list[str | None]:
    """The device of each worker: with several GPUs and ``--device auto`` or ``cuda``, workers
    go round-robin over them (``cuda:0``, ``cuda:1``, …); otherwise every worker uses ``device``
    (None: the run's own setting)."""
    if gpus > 1 and device in ("auto", "cuda"):
        return [f"cuda:{index % gpus}" for index in range(jobs)]
    return [None] * jobs


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
