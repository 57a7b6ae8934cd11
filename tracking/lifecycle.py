"""One run lifecycle: open, run, end with the right status, and say in one line what went wrong.

Every place that opens a run (a training run, a trial, a fold, a study's parent run, a
compare report) wraps its work in ``tracked_run(tracker, name)``. On leaving the block:

- normally → the run is closed FINISHED;
- ``KeyboardInterrupt`` (Ctrl-C; SIGTERM arrives as one) → KILLED, and the interrupt goes on;
- an exception of a ``pruned`` type, or any exception class named ``TrialPruned`` (Optuna's,
  without importing Optuna) → PRUNED with its message in the tag ``convscope.pruned``,
  and the exception goes on;
- any other exception (a full disk, a read-only folder, a store error, a bug) → FAILED with
  ``Type: message`` (credentials masked) in the tag ``convscope.failure``, and the
  exception goes on.

A run that did not finish gets ONE line on stderr naming the run and the reason. Closing
never raises from inside and never waits longer than ``CLOSE_TIMEOUT_SECONDS``: when the
store cannot take the end of the run (full, read-only, gone, not answering) that is said in
the same line, with what to free or check; the sinks' own warnings about it are held back.
Only when the block itself succeeded and the end could not be written because of a storage
fault (``tracking.faults.store_fault``: full or read-only) is that fault raised after the
line: the work is done, but its record is not, and the caller must not report success.

``open_parent_run`` opens a parent run (a study, a depth study, a compare report) the way
``tracking.stores.open_tracker`` opens the MLflow sink, tagged with the process that owns it
(``tracking.orphans.process_tags``) so that a run whose process was killed can be ended later.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from convscope.tracking.background import CLOSE_TIMEOUT_SECONDS as BACKGROUND_CLOSE_TIMEOUT_SECONDS
from convscope.tracking.base import RunStatus, Tracker
from convscope.tracking.faults import advice, describe_error, store_fault, store_location
from convscope.tracking.orphans import KILLED_TAG, process_tags
from convscope.tracking.stores import Stores, first_open_lock
from convscope.tracking.secrets import mask_secrets

if TYPE_CHECKING:
    from convscope.tracking.mlflow_sink import MlflowTracker

FAILURE_TAG = "convscope.failure"
"""Why a run ended FAILED: ``Type: first line of the message``."""
PRUNED_TAG = "convscope.pruned"
"""Why a run ended PRUNED: the pruning exception's message."""
INTERRUPTED = "interrupted (Ctrl-C or SIGTERM)"
"""``KILLED_TAG`` of a run whose process was interrupted."""
CLOSE_TIMEOUT_SECONDS = BACKGROUND_CLOSE_TIMEOUT_SECONDS + 60
"""The longest ``tracked_run`` waits for a tracker's ``close`` (past the background worker's own limit)."""
TAG_LIMIT = 5000  # characters of a reason tag (MLflow allows 8000)
HELD_LOGGERS = ("convscope.tracking.background", "convscope.tracking.mlflow_sink")
"""Loggers whose warnings during ``close`` are held back: the one line says what they would."""

T = TypeVar("T", bound=Tracker)


def ending(error: BaseException | None, pruned: tuple[type[BaseException], ...] = ()) -> RunStatus:
    """The status a run ends with when its block raised ``error`` (None: it did not)."""
    if error is None:
        return RunStatus.FINISHED
    if isinstance(error, KeyboardInterrupt):
        return RunStatus.KILLED
    if isinstance(error, pruned) or any(cls.__name__ == "TrialPruned" for cls in type(error).__mro__):
        return RunStatus.PRUNED
    return RunStatus.FAILED


def reason_tags(status: RunStatus, error: BaseException | None) -> dict[str, str]:
    """The tags that record why a run ended ``status`` after ``error`` (none for FINISHED)."""
    if status is RunStatus.FAILED and error is not None:
        return {FAILURE_TAG: describe_error(error)[:TAG_LIMIT]}
    if status is RunStatus.PRUNED:
        return {PRUNED_TAG: mask_secrets(str(error) if error is not None and str(error) else "pruned")[:TAG_LIMIT]}
    if status is RunStatus.KILLED:
        return {KILLED_TAG: INTERRUPTED}
    return {}


@contextmanager
def tracked_run(
    tracker: T,
    name: str,
    *,
    pruned: tuple[type[BaseException], ...] = (),
    final_tags: Callable[[RunStatus], Mapping[str, str]] | None = None,
    note: str | Callable[[], str] = "",
    where: str | None = None,
    close_timeout: float = CLOSE_TIMEOUT_SECONDS,
) -> Iterator[T]:
    """Yield ``tracker`` (already open) and close it with the status its block earned (module docstring).

    Args:
        tracker: the run, owned from here on: nobody else closes it.
        name: the run's name as the user knows it, for the stderr line.
        pruned: exception types that mean PRUNED (besides any class named ``TrialPruned``).
        final_tags: tags to set just before closing, given the status (e.g. ``optuna.state``).
        note: appended to the line of a FAILED or KILLED run (e.g. "completed epochs stay browsable"),
            or a function that says it when the run ends (e.g. where its last checkpoint is).
        where: the folder or server the run is written to, for the advice when the store cannot
            be written; default: from ``tracker.links()`` (``tracking.faults.store_location``).
        close_timeout: the longest the close may take, in seconds.

    Raises:
        whatever the block raised, unchanged, after the run is closed; after a block that
        succeeded, the storage fault that kept the run's end from being written, if any.
    """
    error: BaseException | None = None
    try:
        yield tracker
    except BaseException as raised:
        error = raised
        raise
    finally:
        status = ending(error, pruned)
        tags = reason_tags(status, error)
        try:
            tags.update(final_tags(status) if final_tags is not None else {})
        except Exception as broken:  # the run is closed all the same
            tags["convscope.final_tags_error"] = describe_error(broken)
        problem = close_run(tracker, status, tags, close_timeout)
        line = end_line(name, status, error, problem, where or _where(tracker), _note_text(note, status))
        if line:
            print(line, file=sys.stderr, flush=True)
        if error is None and problem is not None and store_fault(problem) is not None:
            raise problem  # the work is done but its record is not: the caller must not report success


def close_run(tracker: Tracker, status: RunStatus, tags: Mapping[str, str] | None = None,
              timeout: float = CLOSE_TIMEOUT_SECONDS) -> BaseException | None:
    """Set ``tags`` and close ``tracker`` with ``status`` within ``timeout`` seconds; never raises.

    Returns what kept the run from ending cleanly (an error raised by ``set_tags`` or ``close``,
    the tracker's ``close_error``, or a ``TimeoutError``), None when it ended cleanly. The
    held-back sink warnings are logged after all when nothing went wrong with the close itself.
    """
    outcome: list[BaseException | None] = []

    def close() -> None:
        problem: BaseException | None = None
        try:
            if tags:
                tracker.set_tags(dict(tags))
        except Exception as error:  # the store refused the tags: still try to end the run
            problem = error
        try:
            tracker.close(status)
        except Exception as error:
            problem = problem or error
        outcome.append(problem or getattr(tracker, "close_error", None))

    with _held_warnings() as held:
        worker = threading.Thread(target=close, name="convscope-close-run", daemon=True)
        worker.start()
        worker.join(timeout)
    if not outcome:
        return TimeoutError(f"closing the run took more than {timeout:g} s")
    if outcome[0] is None:
        for record in held:
            logging.getLogger(record.name).handle(record)
    return outcome[0]


def _note_text(note: str | Callable[[], str], status: RunStatus) -> str:
    """``note`` as text for a run that ended ``status``: a function is asked only for a FAILED or KILLED
    run, and one that fails says nothing (the run's own line must still be printed)."""
    if isinstance(note, str):
        return note
    if status not in (RunStatus.FAILED, RunStatus.KILLED):
        return ""
    try:
        return note()
    except Exception:  # noqa: BLE001 - the note is a courtesy; the run's end is what matters
        return ""


def end_line(name: str, status: RunStatus, error: BaseException | None, problem: BaseException | None,
             where: str, note: str = "") -> str:
    """The one stderr line about a run that ended ``status`` (after ``error``) and whose close hit
    ``problem``; "" for a clean FINISHED or PRUNED run."""
    parts = []
    if status in (RunStatus.FAILED, RunStatus.KILLED):
        reason = f" ({describe_error(error)})" if status is RunStatus.FAILED and error is not None else ""
        parts.append(f"run {name} ended {status.value}{reason}")
    if problem is not None:
        fault = store_fault(problem)
        saved = f"its end ({status.value}) could not be saved" if parts else \
            f"run {name} ended {status.value} but that could not be saved"
        if fault is not None:
            parts.append(f"{saved}: {fault}; {advice(fault, where)}")
        else:
            parts.append(f"{saved}: {describe_error(problem)}; check {where}")
    if not parts:
        return ""
    if note and status in (RunStatus.FAILED, RunStatus.KILLED):
        parts.append(note)
    return mask_secrets("; ".join(parts))


def _where(tracker: Tracker) -> str:
    try:
        return store_location(tracker.links())
    except Exception:  # a tracker that cannot even say where it writes
        return "the tracking store"


class _Hold(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False


@contextmanager
def _held_warnings() -> Iterator[list[logging.LogRecord]]:
    """Hold back what ``HELD_LOGGERS`` log inside; yields the held records."""
    hold = _Hold()
    loggers = [logging.getLogger(name) for name in HELD_LOGGERS]
    for logger in loggers:
        logger.addFilter(hold)
    try:
        yield hold.records
    finally:
        for logger in loggers:
            logger.removeFilter(hold)


def open_parent_run(stores: Stores, experiment: str, run_name: str, tags: Mapping[str, str]) -> MlflowTracker:
    """Open a new MLflow parent run (a study, a depth study, a compare report) in ``experiment``.

    It is opened as ``tracking.stores.open_tracker`` opens its MLflow sink (under
    ``first_open_lock``, with the stores' artifact location and UI URL) and tagged with
    ``tags`` and the owning process (``tracking.orphans.process_tags``). The caller owns it:
    close it through ``tracked_run``. Raises what ``MlflowTracker`` raises.
    """
    from convscope.tracking.mlflow_sink import MlflowTracker

    with first_open_lock(stores):
        return MlflowTracker(
            stores.mlflow_uri, experiment, run_name,
            artifact_location=stores.artifact_location, ui_url=stores.ui_url,
            tags={**process_tags(), **tags},
        )
