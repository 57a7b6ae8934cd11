"""SIGTERM handled like Ctrl-C, so ``docker stop``, ``kill`` and schedulers end runs cleanly.

``hangup=True`` treats SIGHUP (the terminal closed) the same way, and ``end_with_parent``
asks Linux to send SIGTERM when the parent process dies, so a long-running command
started by a process that is killed ends as if stopped.

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


_received: list[int] = []  # the signals ``sigterm_as_interrupt`` turned into ``Terminated`` in this process


def terminated() -> bool:
    """Whether this process was stopped by SIGTERM (or SIGHUP) rather than Ctrl-C: it then exits
    143 (128 + SIGTERM), as a process killed by the signal would."""
    return bool(_received)


@contextmanager
def sigterm_as_interrupt(*, hangup: bool = False) -> Iterator[None]:
    def interrupt(signum: int, frame: FrameType | None) -> None:
        _received.append(signum)
        raise Terminated(f"signal {signum}")

    signals = (signal.SIGTERM, signal.SIGHUP) if hangup else (signal.SIGTERM,)
    previous = {signum: signal.signal(signum, interrupt) for signum in signals}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


PR_SET_PDEATHSIG = 1


def end_with_parent() -> None:
    """SIGTERM this process when its parent dies (Linux ``prctl``; elsewhere nothing). Raises
    ``Terminated`` at once if the parent is already gone."""
    import ctypes
    import ctypes.util
    import os
    import sys

    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        raise Terminated("the parent process is gone")
