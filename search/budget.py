"""A study's time budget (``--timeout``): parsing it, its deadline, and what a stop by it leaves.

The budget belongs to one ``convscope search`` invocation: its deadline is an absolute
wall-clock time (``time.time()``) fixed when the command starts and handed, inside
``StudySettings``, to every worker process, so all of them stop at the same moment. A
rerun gets a fresh budget, as Optuna's own ``optimize(timeout=...)`` does; ``--trials``
stays a total over the whole study.

At the deadline no new trial starts, and a running trial stops at the end of the epoch
in which the budget ran out (the last epoch of a trial is always finished): its MLflow
run ends KILLED as on Ctrl-C, its Optuna trial FAIL with the user attribute
``STOPPED_ATTR``. Such a trial is neither a failure (it counts in no failure streak and
is listed as stopped, not failed) nor a pruner's verdict (a PRUNED trial would count
towards ``--trials`` and the sampler would read its partial curve as a weak network).
The next run of the study enqueues it again, with the same parameters, before anything
else (``retry_stopped``), as it does a trial that Ctrl-C or SIGTERM stopped (``is_interrupted``).
"""

from __future__ import annotations

import datetime
import logging
import threading
import time

import optuna
from optuna.trial import FrozenTrial, TrialState

from convscope.train.durations import format_duration

STOPPED_ATTR = "stopped_by_budget"
"""User attribute of a trial the time budget stopped: why, in words."""
RETRY_ATTR = "retry_of"
"""User attribute of a trial enqueued to redo a stopped one: the stopped trial's number."""
INTERRUPTED_ATTR = "interrupted"
"""User attribute of a trial that Ctrl-C or SIGTERM stopped (FAIL in Optuna, KILLED in MLflow): no failure."""
_OPTUNA_TRIAL_LOGGER = "optuna.study._optimize"  # where Optuna logs "Trial N failed …" with a traceback


class TimeBudgetSpent(KeyboardInterrupt):
    """Raised inside a trial when the study's deadline passed: the trial's run ends KILLED as on
    Ctrl-C (``tracking.lifecycle``), Optuna records the trial FAIL and lets it through, and the
    worker that catches it stops. A ``KeyboardInterrupt`` so that no ``except Exception`` on the
    way mistakes it for a failure of the training."""


def spent(deadline: float | None, now: float | None = None) -> bool:
    """True once ``deadline`` (``time.time()`` seconds; None: no budget) has passed."""
    return deadline is not None and (time.time() if now is None else now) >= deadline


def budget_line(timeout: float, deadline: float, final_share: float = 0.0) -> str:
    """The line a study starts with when it has a budget (``final_share`` of it kept for the final training)."""
    at = datetime.datetime.fromtimestamp(deadline).strftime("%H:%M:%S")
    line = (f"time budget {format_duration(timeout)}: no trial starts after {at}; a running trial stops "
            "at the end of that epoch (KILLED; the next run of the study retries it)")
    if final_share:
        line += (f"; the last {format_duration(timeout * final_share)} (--final-share {final_share:g}) train the "
                 "best trial's network again on train+validation")
    return line


def is_stopped(trial: FrozenTrial) -> bool:
    """Whether the time budget stopped ``trial`` (FAIL with ``STOPPED_ATTR``)."""
    return trial.state == TrialState.FAIL and STOPPED_ATTR in trial.user_attrs


def is_interrupted(trial: FrozenTrial) -> bool:
    """Whether Ctrl-C or SIGTERM stopped ``trial`` (FAIL with ``INTERRUPTED_ATTR``)."""
    return trial.state == TrialState.FAIL and INTERRUPTED_ATTR in trial.user_attrs


def counts(trials: list[FrozenTrial]) -> dict[str, int]:
    """``done`` (COMPLETE), ``pruned``, ``failed`` (FAIL, neither by the budget nor by an interrupt),
    ``stopped`` (by the budget) and ``interrupted`` (by Ctrl-C or SIGTERM)."""
    stopped = sum(1 for t in trials if is_stopped(t))
    interrupted = sum(1 for t in trials if is_interrupted(t))
    return {
        "done": sum(1 for t in trials if t.state == TrialState.COMPLETE),
        "pruned": sum(1 for t in trials if t.state == TrialState.PRUNED),
        "failed": sum(1 for t in trials if t.state == TrialState.FAIL) - stopped - interrupted,
        "stopped": stopped,
        "interrupted": interrupted,
    }


def run_line(trials: list[FrozenTrial], seconds: float, timeout: float | None) -> str:
    """The end-of-run line: wall time (and budget) and how the ``trials`` that ended in it ended."""
    tally = counts(trials)
    budget = f" of a {format_duration(timeout)} budget" if timeout is not None else ""
    stopped = f", {tally['stopped']} stopped by the time budget" if timeout is not None or tally["stopped"] else ""
    interrupted = f", {tally['interrupted']} interrupted" if tally["interrupted"] else ""
    return (f"this run: wall time {format_duration(seconds)}{budget}; {len(trials)} trial{'s' * (len(trials) != 1)} ended: "
            f"{tally['done']} done, {tally['pruned']} pruned, {tally['failed']} failed{stopped}{interrupted}")


def retry_stopped(study: optuna.Study) -> list[int]:
    """Enqueue, once each, the trials an earlier run's budget or an interrupt (Ctrl-C, SIGTERM) stopped,
    with their parameters (they run before any newly sampled trial); the numbers of the trials enqueued."""
    trials = study.get_trials(deepcopy=False)
    redone = {t.user_attrs.get(RETRY_ATTR) for t in trials}
    again = [t for t in trials if (is_stopped(t) or is_interrupted(t)) and t.number not in redone]
    for trial in again:
        study.enqueue_trial(dict(trial.params), user_attrs={RETRY_ATTR: trial.number})
    return [t.number for t in again]


class _HideBudgetStops(logging.Filter):
    """Drops Optuna's two records about a trial the budget stopped: "Trial N failed … Traceback"
    and the "Trial N failed with value None." that follows it."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden: str | None = None  # "Trial N" whose first record was dropped

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):  # the budget, Ctrl-C, SIGTERM
            self.hidden = " ".join(message.split()[:2])
            return False
        if self.hidden is not None and message.startswith(f"{self.hidden} failed with value"):
            self.hidden = None
            return False
        return True


def hide_budget_tracebacks() -> None:
    """A stop by the budget, Ctrl-C or SIGTERM is no failure of the trial (its run ends KILLED and says so):
    keep Optuna from logging it with a traceback (idempotent)."""
    logger = logging.getLogger(_OPTUNA_TRIAL_LOGGER)
    if not any(isinstance(f, _HideBudgetStops) for f in logger.filters):
        logger.addFilter(_HideBudgetStops())


def stopped_ahead(study: optuna.Study, best: FrozenTrial | None, study_name: str) -> list[str]:
    """One line per trial the budget stopped that was ahead of ``best`` at the epoch it reached (and
    that no later run has trained again), with how to finish it."""
    if best is None:
        return []
    retried = {t.user_attrs.get(RETRY_ATTR) for t in study.get_trials(deepcopy=False) if t.state.is_finished()
               and t.state != TrialState.FAIL}
    sign = 1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
    lines = []
    for trial in study.get_trials(deepcopy=False):
        if not is_stopped(trial) or not trial.intermediate_values or trial.number in retried:
            continue
        epoch = max(trial.intermediate_values)
        value, theirs = trial.intermediate_values[epoch], best.intermediate_values.get(epoch)
        if theirs is not None and sign * (value - theirs) > 0:
            lines.append(f"trial #{trial.number}, stopped by the time budget at epoch {epoch}, was ahead of the best "
                         f"trial #{best.number} at that epoch ({value:.4f} against {theirs:.4f}): run the same "
                         f"convscope search --study-name {study_name} … again to train it to the end (stopped "
                         "trials go first)")
    return lines


_stop_event: list[object] = []  # the event a worker process's parent sets when the study is stopped, its pid


def watch_stop(event: object) -> None:
    """Let ``stop_requested`` answer from ``event`` (a ``multiprocessing.Event``) and this worker
    process's parent."""
    import os

    _stop_event[:] = [event, os.getppid()]


_threads_stop = threading.Event()  # set when the workers running as threads of this process must stop


def stop_threads() -> None:
    """Stop the workers that run as threads of this process (``search.workers``): Ctrl-C reaches
    only the main thread, so they see it here."""
    _threads_stop.set()


def clear_thread_stop() -> None:
    _threads_stop.clear()


def stop_requested() -> bool:
    """Whether the study was stopped (Ctrl-C, SIGTERM) for this worker: in its process when it is a
    thread (``stop_threads``), or by the ``convscope search`` process that started this worker
    process, or that process is gone. Checked at every epoch's end, so a worker whose interrupt was
    lost (Python drops one that lands in a finaliser) still stops."""
    import os

    if _threads_stop.is_set():
        return True
    if not _stop_event:
        return False
    event, parent = _stop_event
    return bool(event.is_set()) or os.getppid() != parent  # type: ignore[attr-defined]
