"""SIGTERM handled like Ctrl-C, so ``docker stop``, ``kill`` and schedulers end runs cleanly.

Inside ``sigterm_as_interrupt()`` a SIGTERM raises ``Terminated`` (a ``KeyboardInterrupt``):
every ``except KeyboardInterrupt`` that closes a run KILLED, flushes its queues and
closes its writers handles it. A process that runs workers of its own tells them
apart from a terminal's Ctrl-C (which reaches the whole process group) because only
SIGTERM needs forwarding.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: stop as on Ctrl-C."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
