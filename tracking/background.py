"""Run a tracker's calls on a worker thread, off the training hot path.

Contract:
- Every ``Tracker`` call, and every job given to ``submit``, is put on one bounded
  FIFO queue and executed by a single daemon worker thread, in submission order.
  ``put`` blocks while the queue is full (back-pressure instead of unbounded memory).
- Arguments are handed over, not copied: mappings are snapshotted with ``dict(...)``,
  but images and figures must not be mutated by the caller after the call.
- A call or job that raises is counted in ``errors`` and logged as a one-line
  ``logging`` warning naming the call (no traceback; the same error again is logged
  at debug level only); ``first_error`` keeps the first one. The worker goes on with
  the next item and nothing is raised to the caller — except a storage fault
  (``tracking.faults``: no space left, read-only): every later call would fail the
  same way and the run's record is broken, so it is logged at debug level only and
  the caller's next call raises it (``store_error``): the run ends instead of
  training on unrecorded, and whoever ends it reports the fault once.
- A call made from the worker thread itself (e.g. a job that logs to this tracker)
  runs inline, so jobs cannot deadlock on a full queue.
- ``flush`` returns when everything submitted so far has run. ``close(status)``
  flushes, closes the inner tracker, stops the worker and is idempotent; it may be
  called from the main thread after a ``KeyboardInterrupt``. It never raises for
  the inner tracker and never waits longer than ``close_timeout`` seconds: what went
  wrong (the inner close's error or its ``close_error``, or a ``TimeoutError``) is
  kept in ``close_error``. Calls after ``close`` raise ``RuntimeError``.
- ``offer(job)`` runs a job on a second worker thread that never makes the caller wait
  (``tracking.latest_lane``: a job not yet begun is dropped when a newer one is offered, unless
  kept); errors are handled as above. ``flush`` and ``close`` wait for that thread too, first.
- ``links`` is answered directly by the inner tracker.
- Device work done on the worker threads (copying a capture or a checkpoint's weights to the
  CPU) goes on the CUDA stream that was current where the tracker was made, so it queues behind
  the training work submitted before it, as on the device's default stream; a run on a stream
  of its own (``--workers-in threads``) gets the same order.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convscope.tracking.base import RunStatus, Tracker
from convscope.tracking.faults import describe_error, store_fault
from convscope.tracking.latest_lane import LatestLane

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

_STOP = object()
CLOSE_TIMEOUT_SECONDS = 300.0
"""The longest ``close`` waits for the pending calls and the inner close (a store that does not
answer must not hang the process; MLflow's HTTP client retries a dead server for minutes)."""


def in_order(tracker: Tracker, job: Callable[[], None], name: str) -> None:
    """``job()`` on ``tracker``'s worker thread after the calls made before it when ``tracker`` has one
    (a ``BackgroundTracker``), else now: per-epoch work (rendering, checkpoints) off the training thread."""
    submit = getattr(tracker, "submit", None)
    if submit is None:
        job()
    else:
        submit(job, name)


def latest_only(tracker: Tracker, job: Callable[[], None], name: str, *, keep: bool = False) -> None:
    """``job()`` on ``tracker``'s side thread when it has one (a ``BackgroundTracker``: dropped if a newer
    job comes before it begins, unless ``keep``), else now."""
    offer = getattr(tracker, "offer", None)
    if offer is None:
        job()
    else:
        offer(job, name, keep=keep)


class BackgroundTracker:
    """Wraps ``inner`` so that its calls run on one worker thread (contract: module docstring).

    Args:
        inner: the tracker that does the work (a sink or a ``FanOut``).
        maxsize: queue capacity; a call blocks while this many items are waiting.
        close_timeout: the longest ``close`` waits, in seconds.
    """

    def __init__(self, inner: Tracker, maxsize: int = 16, close_timeout: float = CLOSE_TIMEOUT_SECONDS) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1 (got {maxsize}); it bounds the pending calls")
        self.inner = inner
        self.errors = 0
        self.first_error: BaseException | None = None
        self.store_error: BaseException | None = None
        self.close_error: BaseException | None = None
        self.close_timeout = close_timeout
        self._reported: set[tuple[str, str]] = set()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
        self._closed = False
        self._close_lock = threading.Lock()
        self._thread_setup = _beside_this_thread()
        self._thread = threading.Thread(
            target=self._work, name=f"BackgroundTracker({type(inner).__name__})", daemon=True
        )
        self._thread.start()
        self._lane: LatestLane | None = None  # started by the first ``offer``

    # -- worker -------------------------------------------------------------------------

    def _work(self) -> None:
        self._thread_setup()
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                self._run(*item)
            finally:
                self._queue.task_done()

    def _run(self, name: str, job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as error:  # noqa: BLE001 - a sink must never stop the worker
            self.errors += 1
            self.first_error = self.first_error or error
            fault = store_fault(error)
            if fault and self.store_error is None:
                self.store_error = error  # raised to the caller at its next call: no warning
            key = ("store", fault) if fault else (type(error).__name__, str(error))
            level = logging.DEBUG if fault or key in self._reported else logging.WARNING
            self._reported.add(key)
            log.log(level, "background tracker call %s failed: %s", name, describe_error(error))

    def _close_inner(self, status: RunStatus) -> None:
        try:
            self.inner.close(status)
        except BaseException as error:  # noqa: BLE001 - kept for the caller of close
            self.close_error = error
            log.warning("background tracker call close(%s) failed: %s", RunStatus(status).value, describe_error(error))
        else:
            self.close_error = getattr(self.inner, "close_error", None)

    def _enqueue(self, name: str, job: Callable[[], None]) -> None:
        if self._closed:
            raise RuntimeError(f"{name} called on a closed BackgroundTracker")
        if self.store_error is not None and threading.current_thread() is not self._thread:
            raise self.store_error
        if threading.current_thread() is self._thread:
            self._run(name, job)  # re-entrant call from a job: run now, never wait on the queue
        else:
            self._queue.put((name, job))

    # -- public -------------------------------------------------------------------------

    def submit(self, job: Callable[[], None], name: str | None = None) -> None:
        """Run ``job()`` on the worker after everything submitted before it.

        ``name`` (default: the job's qualified name) identifies it in warnings.
        """
        self._enqueue(name or getattr(job, "__qualname__", repr(job)), job)

    def offer(self, job: Callable[[], None], name: str, *, keep: bool = False) -> None:
        """Run ``job()`` on the side thread as soon as it is free; a job not begun when a newer one is
        offered is dropped unless ``keep`` (``tracking.latest_lane``). The caller never waits."""
        if self._closed:
            raise RuntimeError(f"{name} offered to a closed BackgroundTracker")
        if self.store_error is not None:
            raise self.store_error
        if self._lane is None:
            self._lane = LatestLane(self._run, name=f"BackgroundTracker({type(self.inner).__name__}).latest",
                                    on_start=self._thread_setup)
        self._lane.offer(job, name, keep=keep)

    @property
    def dropped(self) -> list[str]:
        """The names of the offered jobs that a newer one replaced before they began."""
        return list(self._lane.dropped) if self._lane is not None else []

    def flush(self) -> None:
        """Block until every call and job submitted or offered so far has run (or was dropped)."""
        if threading.current_thread() is self._thread:
            return  # the worker waiting for itself would never return
        if self._lane is not None and not self._lane.runs_here():
            self._lane.drain()
        self._queue.join()

    def log_params(self, params: Mapping[str, Any]) -> None:
        params = dict(params)
        self._enqueue("log_params", lambda: self.inner.log_params(params))

    def log_config(self, config: Mapping[str, Any]) -> None:
        config = dict(config)
        self._enqueue("log_config", lambda: self.inner.log_config(config))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        tags = dict(tags)
        self._enqueue("set_tags", lambda: self.inner.set_tags(tags))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        metrics = dict(metrics)
        self._enqueue(f"log_metrics(step={step})", lambda: self.inner.log_metrics(metrics, step))

    def log_image(self, key: str, image: np.ndarray, step: int) -> None:
        self._enqueue(
            f"log_image({key!r}, step={step})", lambda: self.inner.log_image(key, image, step)
        )

    def log_figure(self, key: str, figure: Figure, step: int | None = None) -> None:
        self._enqueue(
            f"log_figure({key!r}, step={step})", lambda: self.inner.log_figure(key, figure, step)
        )

    def log_file(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._enqueue(
            f"log_file({str(path)!r})", lambda: self.inner.log_file(path, artifact_path)
        )

    def links(self) -> dict[str, str]:
        return self.inner.links()

    def close(self, status: RunStatus = RunStatus.FINISHED) -> None:
        """Run everything pending, close ``inner`` with ``status``, stop the worker; at most
        ``close_timeout`` seconds (see the module docstring for ``close_error``)."""
        deadline = time.monotonic() + self.close_timeout
        with self._close_lock:
            if self._closed:
                return
            if threading.current_thread() is self._thread:
                raise RuntimeError("BackgroundTracker.close cannot be called from one of its jobs")
            if self._lane is not None and not self._lane.stop(max(0.0, deadline - time.monotonic())):
                self._closed = True
                self.close_error = self._timed_out()
                return
            try:  # pending jobs may still log to this tracker: it is marked closed once they are queued
                for item in ((f"close({RunStatus(status).value})", lambda: self._close_inner(status)), _STOP):
                    self._queue.put(item, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                self.close_error = self._timed_out()
                return
            finally:
                self._closed = True
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            self.close_error = self._timed_out()

    def _timed_out(self) -> TimeoutError:
        return TimeoutError(f"the tracking store took more than {self.close_timeout:g} s to take the run's "
                            "last calls; the run may still show as running")


def _beside_this_thread() -> Callable[[], None]:
    """What a worker thread made here runs first, to be cheap for the training thread beside it and
    to queue its device work behind that thread's.

    - one intra-op thread for torch work done there (rendering, statistics):
      a second OpenMP thread team competes with the training team, and on
      a 2-core CPU that made every later epoch ~30% slower (measured:
      benchmarks/visual_overhead.py); the training thread keeps its own setting.
    - the CUDA stream current here (when CUDA is in use), made current there.

    (A lower OS priority for the worker thread was tried and made it worse: the
    thread then gets descheduled while holding the GIL the training needs.)
    """
    torch = sys.modules.get("torch")
    stream = torch.cuda.current_stream() if torch is not None and torch.cuda.is_initialized() else None

    def setup() -> None:
        if torch is not None:
            torch.set_num_threads(1)
        if stream is not None:
            torch.cuda.set_stream(stream)

    return setup
