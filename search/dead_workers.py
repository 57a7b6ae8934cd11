"""A worker process that died mid-trial on a storage without heartbeats (the default journal file).

A database storage notices a dead worker by its heartbeat and retries its trial; a journal file has
no heartbeat, so the ``convscope search`` process that started the worker is the one that sees it
die (its exit code is a signal's, or an error's). ``requeue_dead_worker_trials`` ends the trial it
was running FAIL (the reason in the user attribute ``error``), marks its MLflow run KILLED, and
enqueues the same parameters again, as Optuna's ``RetryFailedTrialCallback`` does for database
storages; the caller starts another worker in its place.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from convscope.search.budget import RETRY_ATTR

WORKER_PID_ATTR = "worker_pid"
"""User attribute of a trial: the process id of the worker running it."""


def requeue_dead_worker_trials(study: optuna.Study, pid: int, why: str,
                               mark_run_killed: Callable[[optuna.Study, FrozenTrial], None]) -> list[int]:
    """The RUNNING trials of worker process ``pid`` (dead: ``why``) failed and enqueued again; their numbers."""
    numbers = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get(WORKER_PID_ATTR) != pid:
            continue
        storage = study._storage
        storage.set_trial_user_attr(trial._trial_id, "error", f"its worker process {pid} died ({why})")
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        try:
            mark_run_killed(study, trial)
        except Exception:  # noqa: BLE001 - the trial is what matters; the run is closed by the next command
            pass
        study.enqueue_trial(dict(trial.params), user_attrs={RETRY_ATTR: trial.number})
        numbers.append(trial.number)
    return numbers


def death(exitcode: int | None) -> str | None:
    """Why a worker that exited with ``exitcode`` died, or None when it ended by itself (0), was
    interrupted (130) or stopped by SIGTERM (143, -15)."""
    import signal

    if exitcode in (None, 0, 130, 143, -signal.SIGTERM, -signal.SIGINT):
        return None
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"
