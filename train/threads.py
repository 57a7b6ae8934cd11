"""How many intra-op threads CPU training uses.

torch's default is one thread per core with OpenMP's active waiting: an idle
thread spins at a barrier instead of sleeping. When anything else wants a core
(another run, a test suite), the team's threads wait on the one that is
descheduled and throughput collapses: on a 2-core Xeon the seed net trained at
3,650 img/s idle but 50-850 img/s with one busy-loop process beside it, against
2,050 img/s on one thread (benchmarks/cpu_threads.py, README "CPU threads").
So unless told otherwise, CPU training leaves one core spare. The OpenMP
runtime reads OMP_WAIT_POLICY only when torch loads it, so passive waiting
cannot be switched on from here; when the user set it, the default team is kept.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

STARTUP_THREADS = torch.get_num_threads()  # torch's own choice, before anything in this process changed it
_applied: int | None = None  # what apply_cpu_threads last set, so a later run does not take it for the program's


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str

    def line(self) -> str:
        override = "" if self.reason == "OMP_NUM_THREADS" else "; OMP_NUM_THREADS=N overrides"
        return f"cpu threads: {self.threads} ({self.reason}{override})"


def choose_cpu_threads(env: Mapping[str, str], cores: int, current: int | None = None,
                       startup: int | None = None) -> ThreadChoice:
    """The intra-op thread count for CPU training, from pure inputs.

    1. ``OMP_NUM_THREADS`` set to a positive integer: that many (torch read it already).
    2. The program set a count itself (``current`` differs from torch's ``startup`` default,
       e.g. a search worker splitting the cores): kept.
    3. ``OMP_WAIT_POLICY=passive``: idle threads sleep, so a busy core costs little: torch's
       default (one per core) is kept.
    4. Otherwise ``cores - 1`` (at least 1): one core spare, so one competing process does
       not stall the spinning team.
    """
    cores = max(1, cores)
    raw = env.get("OMP_NUM_THREADS", "").strip()
    if raw:
        try:
            requested = int(raw.split(",")[0])
        except ValueError:
            requested = 0
        if requested > 0:
            return ThreadChoice(requested, "OMP_NUM_THREADS")
    if current is not None and startup is not None and current != startup:
        return ThreadChoice(current, "set by the program")
    if env.get("OMP_WAIT_POLICY", "").strip().lower() == "passive":
        return ThreadChoice(startup or cores, "OMP_WAIT_POLICY=passive: one per core")
    return ThreadChoice(max(1, cores - 1), f"{cores} cores, one left spare")


def apply_cpu_threads(device: torch.device, echo: Callable[[str], None] = print) -> ThreadChoice | None:
    """Set the training thread's intra-op count for a CPU run and echo one line; CUDA/MPS untouched."""
    if device.type != "cpu":
        return None
    global _applied
    current = torch.get_num_threads()
    choice = choose_cpu_threads(os.environ, os.cpu_count() or 1, None if current == _applied else current,
                                STARTUP_THREADS)
    if choice.threads != current:
        torch.set_num_threads(choice.threads)
    _applied = choice.threads
    echo(choice.line())
    return choice


def idle_cores(seconds: float = 0.5) -> float | None:
    """How many cores sat idle over the next ``seconds`` (Linux ``/proc/stat``: idle and iowait time
    over all time), or None where that cannot be read. A measurement of now, not a load average,
    which trails the last minute."""
    import time

    def sample() -> tuple[int, int] | None:
        try:
            with open("/proc/stat", encoding="ascii") as stat:
                fields = [int(v) for v in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        return sum(fields), fields[3] + (fields[4] if len(fields) > 4 else 0)

    first = sample()
    time.sleep(seconds)
    second = sample()
    if first is None or second is None or second[0] <= first[0]:
        return None
    share = (second[1] - first[1]) / (second[0] - first[0])
    return share * (os.cpu_count() or 1)


def threads_for_idle(cores: int, idle: float | None) -> int:
    """Intra-op threads for a run that may take every core that is idle: the idle cores (rounded,
    at least 1); every core when the idle time cannot be read."""
    if idle is None:
        return max(1, cores)
    return max(1, min(cores, round(idle)))
