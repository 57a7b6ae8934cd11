"""Run a tracker's calls on a worker thread, off the training hot path.

Contract:
- Every ``Tracker`` call, and every job given to ``submit``, is put on one bounded
  FIFO queue and executed by a single daemon worker thread, in submission order.
  ``put`` blocks while the queue is full (back-pressure instead of unbounded memory).
- Arguments are handed over, not copied: mappings are snapshotted with ``dict(...)``,
  but images and figures must not be mutated by the caller after the call.
- A call or job that raises is logged (``logging`` warning naming the call) and
  counted in ``errors``; the worker goes on with the next item and nothing is
  raised to the caller.
- A call made from the worker thread itself (e.g. a job that logs to this tracker)
  runs inline, so jobs cannot deadlock on a full queue.
- ``flush`` returns when everything submitted so far has run. ``close(status)``
  flushes, closes the inner tracker, stops the worker and is idempotent; it may be
  called from the main thread after a ``KeyboardInterrupt``. Calls after ``close``
  raise ``RuntimeError``.
- ``links`` is answered directly by the inner tracker.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracking.base import RunStatus, Tracker

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

_STOP = object()


class BackgroundTracker:
    """Wraps ``inner`` so that its calls run on one worker thread (contract: module docstring).

    Args:
        inner: the tracker that does the work (a sink or a ``FanOut``).
        maxsize: queue capacity; a call blocks while this many items are waiting.
    """

    def __init__(self, inner: Tracker, maxsize: int = 16) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1 (got {maxsize}); it bounds the pending calls")
        self.inner = inner
        self.errors = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
        self._closed = False
        self._close_lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._work, name=f"BackgroundTracker({type(inner).__name__})", daemon=True
        )
        self._thread.start()

    # -- worker -------------------------------------------------------------------------

    def _work(self) -> None:
        _yield_to_training()
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
            log.warning("background tracker call %s failed: %r", name, error, exc_info=True)

    def _enqueue(self, name: str, job: Callable[[], None]) -> None:
        if self._closed:
            raise RuntimeError(f"{name} called on a closed BackgroundTracker")
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

    def flush(self) -> None:
        """Block until every call and job submitted so far has run."""
        if threading.current_thread() is self._thread:
            return  # the worker waiting for itself would never return
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
        """Run everything pending, close ``inner`` with ``status``, stop the worker."""
        with self._close_lock:
            if self._closed:
                return
            if threading.current_thread() is self._thread:
                raise RuntimeError("BackgroundTracker.close cannot be called from one of its jobs")
            self._queue.put((f"close({RunStatus(status).value})", lambda: self.inner.close(status)))
            self._queue.put(_STOP)
            self._closed = True
        self._thread.join()


def _yield_to_training() -> None:
    """Make this worker thread cheap for the training threads beside it.

    - one intra-op thread for torch work done here (rendering, statistics):
      a second OpenMP thread team competes with the training team, and on
      a 2-core CPU that made every later epoch ~30% slower (measured:
      benchmarks/visual_overhead.py); the training thread keeps its own setting.

    (A lower OS priority for this thread was tried and made it worse: the
    thread then gets descheduled while holding the GIL the training needs.)
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
