"""Runs whose process died without closing them (SIGKILL, a crash, a power cut) stay RUNNING in
MLflow forever; this module recognises and ends them. ``close_orphans`` is what every command that
works on a runs folder (train, search, ui, explain) calls first, for every experiment in it.

Every run is tagged with the process that owns it (``process_tags``): host name, pid,
the pid namespace and the process's start (boot id and start time on Linux). A RUNNING run is
*provably orphaned* (``orphan_reason``) only when it was started on this host in this pid
namespace and its process is no longer there: the pid is unused, a zombie, or used by a process
that started at another time. A run from another host, another container's pid namespace or
without these tags is never touched. ``close_orphaned_runs`` ends the orphans KILLED with the
reason in the tag ``convscope.killed``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path

from convscope.tracking.base import RunStatus

HOST_TAG = "convscope.host"
PID_TAG = "convscope.pid"
PID_NAMESPACE_TAG = "convscope.pid_namespace"
PROCESS_START_TAG = "convscope.process_start"
KILLED_TAG = "convscope.killed"
"""Why a run ended KILLED (an orphan: its process is gone)."""


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first); None if unreadable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def process_start(pid: int) -> str:
    """When process ``pid`` started, as ``<boot id>:<clock ticks since boot>`` (Linux); "" when unknown.
    Equal values mean the same process; a reused pid has another value."""
    fields = _stat_fields(pid)
    boot = _boot_id()
    if fields is None or len(fields) < 20 or not boot:
        return ""
    return f"{boot}:{fields[19]}"  # field 22 of stat, counted from the state (field 3)


def pid_namespace() -> str:
    """This process's pid namespace (``pid:[4026531836]``), "" when unknown: pids of two
    containers on one host name different processes."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def process_tags() -> dict[str, str]:
    """The tags that name this process as the owner of a run (see the module docstring)."""
    pid = os.getpid()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), PID_NAMESPACE_TAG: pid_namespace(),
            PROCESS_START_TAG: process_start(pid)}


def orphan_reason(tags: Mapping[str, str]) -> str | None:
    """Why the process named by ``tags`` (``process_tags`` of some run) is provably gone, or None
    when it may still be running or this host cannot tell (another host or pid namespace, no tags)."""
    host, pid_text = tags.get(HOST_TAG, ""), tags.get(PID_TAG, "")
    if not host or host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) <= 0:
        return None
    namespace = tags.get(PID_NAMESPACE_TAG, "")
    if namespace and pid_namespace() and namespace != pid_namespace():
        return None
    pid, started = int(pid_text), tags.get(PROCESS_START_TAG, "")
    where = f"process {pid} on {host}"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"{where} is gone"
    except PermissionError:
        pass  # someone else's process: it exists
    except OSError:
        return None
    fields = _stat_fields(pid)
    if fields and fields[0] in ("Z", "X"):
        return f"{where} is gone (a zombie)"
    now = process_start(pid)
    if started and now and now != started:
        return f"{where} is gone (the pid now belongs to another process)"
    return None


def close_orphaned_runs(tracking_uri: str, experiment: str, match: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """End KILLED every RUNNING run of ``experiment`` whose tags include ``match`` and whose process is
    provably gone (``orphan_reason``); the reason goes into ``KILLED_TAG``.

    Returns (run id, run name, reason) of each run it ended; nothing when the experiment does not
    exist. Raises what the MLflow client raises (the caller decides whether that matters).
    """
    from mlflow import MlflowClient

    from convscope.tracking.mlflow_sink import end_run

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    ended = []
    token = None
    while True:
        page = client.search_runs([found.experiment_id], "attributes.status = 'RUNNING'", max_results=500,
                                  page_token=token)
        for run in page:
            tags = run.data.tags
            if any(tags.get(key) != value for key, value in match.items()):
                continue
            reason = orphan_reason(tags)
            if reason is None:
                continue
            end_run(client, run.info.run_id, RunStatus.KILLED, {KILLED_TAG: reason})
            ended.append((run.info.run_id, run.info.run_name or run.info.run_id, reason))
        token = page.token
        if not token:
            return ended


def close_orphans(tracking_uri: str) -> list[tuple[str, str, str]]:
    """``close_orphaned_runs`` for every experiment of the store at ``tracking_uri``; best effort:
    nothing when the store cannot be read."""
    from mlflow import MlflowClient

    try:
        experiments = MlflowClient(tracking_uri).search_experiments()
        ended = []
        for experiment in experiments:
            ended += close_orphaned_runs(tracking_uri, experiment.name, {})
        return ended
    except Exception:  # noqa: BLE001 - the command's own work matters more than this clean-up
        return []
