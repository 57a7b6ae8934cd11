"""Start and stop the MLflow and TensorBoard UIs as real processes.

Shared by the ``convscope ui`` command, the tests and docker-compose. Both servers
spawn worker processes of their own (uvicorn workers, TensorBoard's data server),
so each server is started as the leader of a new session / process group and
stopped by signalling the whole group: nothing it started may survive ``stop``.
Each group also gets a guard: a tiny process that ends the group when the process
that started it disappears, however it ends (a SIGKILL, a test run's timeout),
so no server outlives its starter. Servers run without MLflow's server-side job
execution (a job runner with several consumer processes of ~235 MB each, which
convscope never uses) unless the environment sets ``SERVER_DEFAULTS``' variables.
Servers bind to whatever ``host`` the caller passes; callers default to 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from convscope.tracking.http_probe import probe

TENSORBOARD_IMAGE_SAMPLES = 10000
"""Images kept per tag by TensorBoard. Never 0: TensorBoard 2.21 then serves no images."""

TENSORBOARD_RELOAD_INTERVAL_S = 5
"""How often TensorBoard rescans the log directory for new events."""

SERVER_DEFAULTS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
"""Environment every server starts with unless the caller's environment sets the variable."""

UI_MLFLOW_WORKERS = 1
"""Web workers of the MLflow UI that ``convscope ui`` and the tests start: one person browsing."""

GUARD_GRACE_SECONDS = 5.0

_GUARD = """# convscope: the guard of one server process group (servers.servers)
import os, select, signal, sys, time
pipe, group = int(sys.argv[1]), int(sys.argv[2])
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
select.select([pipe], [], [])  # readable only at EOF: the starter closed it or is gone
for sig, wait in ((signal.SIGTERM, float(sys.argv[3])), (signal.SIGKILL, 0.0)):
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        break
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            sys.exit(0)
        time.sleep(0.1)
"""
_guards: dict[int, int] = {}  # server pid -> write end of its guard's pipe


def server_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's environment) with ``SERVER_DEFAULTS`` for what it leaves unset."""
    environment = dict(os.environ if env is None else env)
    for name, value in SERVER_DEFAULTS.items():
        environment.setdefault(name, value)
    return environment


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _console_script(name: str) -> list[str]:
    """The ``name`` executable of this interpreter's environment, else ``python -m name``."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return [str(beside)]
    found = shutil.which(name)
    return [found] if found else [sys.executable, "-m", name]


def mlflow_server_command(
    backend_store_uri: str | None,
    host: str,
    port: int,
    *,
    artifacts_destination: str | None = None,
    serve_artifacts: bool = True,
    ui_only: bool = False,
    workers: int | None = None,
    app_name: str | None = None,
) -> list[str]:
    """Command line of an MLflow tracking server.

    Args:
        backend_store_uri: e.g. ``sqlite:///runs/mlflow.db`` or a PostgreSQL URL; None leaves it to
            ``MLFLOW_BACKEND_STORE_URI`` in the server's environment (keeps a password out of ``ps``).
        host, port: where to listen.
        artifacts_destination: where proxied artifacts are stored (``--artifacts-destination``,
            with ``--serve-artifacts``); clients then upload through the server.
        serve_artifacts: without ``artifacts_destination``, False passes ``--no-serve-artifacts``.
        ui_only: ``mlflow ui`` for browsing an embedded store whose runs carry their own
            ``file://`` artifact locations; no artifact flags are passed.
        workers: server worker processes (MLflow's default when None).
        app_name: an ``mlflow.app`` plugin, e.g. ``basic-auth`` (MLflow's login and permissions).

    Raises:
        ValueError: ``ui_only`` combined with ``artifacts_destination``.
    """
    if ui_only and artifacts_destination is not None:
        raise ValueError(
            "ui_only browses an existing store and takes no artifacts_destination; "
            "drop one of the two"
        )
    cmd = _console_script("mlflow") + ["ui" if ui_only else "server"]
    if backend_store_uri is not None:
        cmd += ["--backend-store-uri", backend_store_uri]
    cmd += ["--host", host, "--port", str(port)]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    if app_name is not None:
        cmd += ["--app-name", app_name]
    if ui_only:
        return cmd
    if artifacts_destination is not None:
        cmd += ["--artifacts-destination", artifacts_destination, "--serve-artifacts"]
    elif not serve_artifacts:
        cmd += ["--no-serve-artifacts"]
    return cmd


def tensorboard_command(logdir: str | Path, host: str, port: int) -> list[str]:
    """Command line of a TensorBoard server that keeps (up to ``TENSORBOARD_IMAGE_SAMPLES``)
    every logged image step and rescans ``logdir`` every few seconds."""
    return _console_script("tensorboard") + [
        "--logdir", str(logdir),
        "--host", host,
        "--port", str(port),
        "--samples_per_plugin", f"images={TENSORBOARD_IMAGE_SAMPLES}",
        "--reload_interval", str(TENSORBOARD_RELOAD_INTERVAL_S),
    ]


def optuna_dashboard_command(
    storage: str | Path | None, host: str, port: int, *, config_file: str | Path | None = None
) -> list[str]:
    """``optuna-dashboard`` on a study storage (a journal file path or a database URL), or on
    the storage named in a TOML ``config_file`` (keeps a database password out of the command line)."""
    cmd = _console_script("optuna-dashboard")
    if storage is not None:
        cmd.append(str(storage))
    if config_file is not None:
        cmd += ["--from-config", str(config_file)]
    return [*cmd, "--host", host, "--port", str(port)]


def start_process_group(
    cmd: Sequence[str], log_path: str | Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` as the leader of a new session, stdout and stderr appended to ``log_path``,
    in ``server_environment(env)``, with a guard that ends the session's group once this process is
    gone (or ``stop_process_group`` released it)."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=server_environment(env),
        )
    _guard(proc.pid)
    return proc


def _guard(pgid: int) -> None:
    """A guard process holding the read end of a pipe whose write end only this process has
    (non-inheritable): when this process exits, even by SIGKILL, the guard reads EOF and ends group
    ``pgid`` (SIGTERM, then SIGKILL after ``GUARD_GRACE_SECONDS``)."""
    read_end, write_end = os.pipe()
    try:
        subprocess.Popen(
            [sys.executable, "-S", "-c", _GUARD, str(read_end), str(pgid), str(GUARD_GRACE_SECONDS)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(read_end,), start_new_session=True,
        )
    except OSError:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    _guards[pgid] = write_end


def _release_guard(pgid: int) -> None:
    write_end = _guards.pop(pgid, None)
    if write_end is not None:
        os.close(write_end)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``; Linux reads ``/proc``,
    elsewhere ``[pgid]`` if signalling the group still succeeds."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # "pid (comm) state ppid pgrp ..." -- comm may contain spaces and parentheses
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _wait_group_gone(pgid: int, deadline: float) -> bool:
    while group_members(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def stop_process_group(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM the whole process group led by ``proc``, SIGKILL whatever is alive after
    ``timeout`` seconds, and reap ``proc`` (its guard then exits). Safe to call twice or on an exited leader."""
    pgid = proc.pid  # start_new_session=True: the leader's pid is the group id
    for sig, wait_s in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break  # nobody left in the group
        deadline = time.monotonic() + wait_s
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            continue
        if _wait_group_gone(pgid, deadline):
            break
    if proc.poll() is None:
        proc.wait(timeout=5)
    _release_guard(pgid)


def _tail(path: str | Path | None, lines: int = 40) -> str:
    if path is None:
        return ""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n--- last lines of " + str(path) + " ---\n" + "\n".join(text.splitlines()[-lines:])


def wait_for_http(
    url: str,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: str | Path | None = None,
) -> None:
    """Poll ``url`` until it answers 200.

    Raises:
        RuntimeError: ``proc`` exited, or ``timeout`` seconds passed; the message
            names the URL and ends with the tail of ``log_path`` if given.
    """
    deadline = time.monotonic() + timeout
    last_error: object = None
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"server for {url} exited with code {proc.returncode} before answering"
                + _tail(log_path)
            )
        status, error = probe(url, timeout=2)
        if status == 200:
            return
        last_error = f"HTTP {status}" if status is not None else error
        if time.monotonic() >= deadline:
            raise RuntimeError(
                f"{url} did not answer within {timeout:.0f} s (last error: {last_error})"
                + _tail(log_path)
            )
        time.sleep(0.2)
