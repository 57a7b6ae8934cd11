"""A worker thread that never makes its caller wait: a job offered while another runs waits for it,
and is dropped when a newer job is offered before it starts.

Contract:
- ``offer(job, name)`` returns at once. Jobs run one at a time on the lane's own daemon thread, in
  the order offered. A job that has not started when a newer one is offered is dropped (its
  ``name`` goes to ``dropped``) unless it was offered with ``keep=True``; the newest job offered is
  therefore always run.
- Each job runs through ``run(name, job)``, the owner's error handling; the lane never raises.
- ``drain(timeout)`` returns True once every job offered before the call has run or been dropped,
  False when ``timeout`` seconds passed first. ``stop()`` drains and ends the thread; later offers
  raise ``RuntimeError``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class LatestLane:
    def __init__(self, run: Callable[[str, Callable[[], None]], None], name: str = "LatestLane",
                 on_start: Callable[[], None] | None = None) -> None:
        """``run(name, job)`` runs each job; ``on_start()`` runs first on the lane's thread."""
        self._run = run
        self._on_start = on_start
        self._pending: list[tuple[str, Callable[[], None], bool]] = []
        self._busy = False
        self._stopped = False
        self._changed = threading.Condition()
        self.dropped: list[str] = []
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def offer(self, job: Callable[[], None], name: str, *, keep: bool = False) -> None:
        """Run ``job`` once the lane is free, unless a newer offer comes first and ``keep`` is False."""
        with self._changed:
            if self._stopped:
                raise RuntimeError(f"{name} offered to a stopped {self._thread.name}")
            self.dropped += [pending for pending, _, kept in self._pending if not kept]
            self._pending = [item for item in self._pending if item[2]]
            self._pending.append((name, job, keep))
            self._changed.notify_all()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until nothing offered so far is pending or running (see the module docstring)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while self._pending or self._busy:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def stop(self, timeout: float | None = None) -> bool:
        """Drain (at most ``timeout`` seconds), then end the thread; False when the drain timed out."""
        drained = self.drain(timeout)
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
        return drained

    def runs_here(self) -> bool:
        """Whether the calling thread is the lane's own (a job must not wait for the lane)."""
        return threading.current_thread() is self._thread

    def _work(self) -> None:
        if self._on_start is not None:
            self._on_start()
        while True:
            with self._changed:
                while not self._pending and not self._stopped:
                    self._changed.wait()
                if not self._pending:
                    return
                name, job, _ = self._pending.pop(0)
                self._busy = True
            try:
                self._run(name, job)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()
