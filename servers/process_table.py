"""The process table (Linux ``/proc``): which processes carry an environment variable, and their memory.

An environment variable is inherited by every descendant, whatever session or process group it
moves to and whoever its parent becomes when its own dies, so marking a command's environment
with a unique token finds everything it left running. Used by the tests and the benchmarks that
check servers leave nothing behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    command: str
    rss_kib: int  # resident set size
    pss_kib: int  # proportional set size: shared pages split between their users (0 when unreadable)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _memory_kib(pid: int) -> tuple[int, int]:
    rss = pss = 0
    for line in _read(PROC / str(pid) / "smaps_rollup").decode(errors="replace").splitlines():
        name, _, rest = line.partition(":")
        if name in ("Rss", "Pss"):
            value = int(rest.split()[0])
            rss, pss = (value, pss) if name == "Rss" else (rss, value)
    if rss == 0:
        for line in _read(PROC / str(pid) / "status").decode(errors="replace").splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss, pss


def _alive(pid: int) -> bool:
    stat = _read(PROC / str(pid) / "stat").decode(errors="replace")
    return bool(stat) and stat[stat.rindex(")") + 2 :].split()[0] != "Z"


def processes_with(name: str, value: str) -> list[ProcessInfo]:
    """Live processes (zombies excluded) whose environment has ``name=value``, this one excluded."""
    wanted = f"{name}={value}".encode()
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        if wanted not in _read(entry / "environ").split(b"\0") or not _alive(int(entry.name)):
            continue
        command = _read(entry / "cmdline").replace(b"\0", b" ").decode(errors="replace").strip()
        rss, pss = _memory_kib(int(entry.name))
        found.append(ProcessInfo(int(entry.name), command, rss, pss))
    return found
