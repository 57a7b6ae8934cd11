"""Servers leave nothing behind: ``convscope ui`` stopped every way a person or a machine stops it,
and servers a test run starts when that run is killed. Each check marks the environment of what it
starts with a unique token and walks the whole process table for it (``servers.process_table``):
a process that changed its session, its group or its parent is still found."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from convscope.servers.process_table import processes_with
from convscope.servers.servers import GUARD_GRACE_SECONDS, free_port

pytestmark = pytest.mark.slow

TOKEN = "CONVSCOPE_LEFTOVER_TOKEN"
REPO = Path(__file__).resolve().parents[1]
GONE_WITHIN = 60.0  # generous: a loaded machine (the suite in two workers) starts and stops servers slowly


def _wait_gone(token: str, within: float = GONE_WITHIN) -> list[str]:
    deadline = time.monotonic() + within
    while (left := processes_with(TOKEN, token)) and time.monotonic() < deadline:
        time.sleep(0.25)
    for process in left:  # not to leave them to the next test
        try:
            os.kill(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return [f"{p.pid}: {p.command[:160]}" for p in left]


def _runs_with_a_study(tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    (runs / "tensorboard").mkdir(parents=True)
    (runs / "optuna").mkdir()
    optuna.create_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(runs / "optuna" / "journal.log"))))
    return runs


def _ui_argv(runs: Path) -> list[str]:
    return [sys.executable, "-u", "-m", "convscope", "ui", "--runs-dir", str(runs), "--mlflow-port", str(free_port()),
            "--tensorboard-port", str(free_port()), "--dashboard-port", str(free_port())]


def _read_until_ready(stream: object, what: str = "Ctrl-C stops") -> str:
    lines: list[str] = []
    deadline = time.monotonic() + 180
    while not any(line.startswith(what) for line in lines):
        line = stream.readline()  # type: ignore[attr-defined]
        assert line, "".join(lines)
        lines.append(line)
        assert time.monotonic() < deadline, "".join(lines)
    return "".join(lines)


def _ctrl_c(ui: subprocess.Popen[str]) -> None:
    os.killpg(ui.pid, signal.SIGINT)  # a terminal sends it to the whole foreground group


def _sigterm(ui: subprocess.Popen[str]) -> None:
    ui.send_signal(signal.SIGTERM)


def _sighup(ui: subprocess.Popen[str]) -> None:
    ui.send_signal(signal.SIGHUP)


def _attached() -> None:
    """SIGHUP at its default in the child: a suite run under ``nohup`` (SIGHUP ignored, inherited)
    would otherwise start ``convscope ui`` detached, as ``nohup convscope ui &`` is meant to be."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _kill_all(token: str) -> None:
    for process in processes_with(TOKEN, token):
        try:
            os.kill(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _sigkill(ui: subprocess.Popen[str]) -> None:
    ui.send_signal(signal.SIGKILL)


@pytest.mark.parametrize("stop", [_ctrl_c, _sigterm, _sighup, _sigkill], ids=["ctrl-c", "sigterm", "sighup", "sigkill"])
def test_convscope_ui_leaves_no_process_when_stopped(tmp_path: Path, stop: Callable[[subprocess.Popen[str]], None]) -> None:
    token = uuid.uuid4().hex
    ui = subprocess.Popen(_ui_argv(_runs_with_a_study(tmp_path)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, start_new_session=True, cwd=REPO, env={**os.environ, TOKEN: token},
                          preexec_fn=_attached)
    try:
        _read_until_ready(ui.stdout)
        started = processes_with(TOKEN, token)
        commands = " ".join(p.command for p in started)
        assert "mlflow" in commands and "tensorboard" in commands and "optuna-dashboard" in commands, commands
        assert "huey" not in commands and "_job_runner" not in commands  # MLflow's job execution is off
        stop(ui)
        ui.wait(timeout=120)
        assert _wait_gone(token, GONE_WITHIN + (GUARD_GRACE_SECONDS if stop is _sigkill else 0)) == []
    finally:  # a failed test leaves no servers behind either
        _kill_all(token)


def test_convscope_ui_ends_when_its_parent_dies(tmp_path: Path) -> None:
    """The process that started ``convscope ui`` is SIGKILLed (a crashed script, a closed IDE)."""
    token = uuid.uuid4().hex
    parent_code = textwrap.dedent(f"""
        import subprocess, sys
        ui = subprocess.Popen({_ui_argv(_runs_with_a_study(tmp_path))!r}, stdout=subprocess.PIPE, text=True)
        for line in ui.stdout:
            if line.startswith("Ctrl-C stops"):
                print("ready", flush=True)
        """)
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True, cwd=REPO,
                              env={**os.environ, TOKEN: token}, start_new_session=True, preexec_fn=_attached)
    try:
        _read_until_ready(parent.stdout, "ready")
        assert len(processes_with(TOKEN, token)) >= 4  # the parent, convscope ui and its three servers
        parent.kill()
        parent.wait(timeout=10)
        assert _wait_gone(token) == []
    finally:  # a failed test leaves no servers behind either
        _kill_all(token)


def test_servers_start_without_mlflows_job_execution_unless_asked() -> None:
    from convscope.servers.servers import server_environment

    assert server_environment({})["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    asked = server_environment({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true", "X": "1"})
    assert asked == {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true", "X": "1"}


SERVER_TEST = '''
import time
from pathlib import Path

def test_uses_a_server(mlflow_server: str) -> None:
    Path({ready!r}).write_text(mlflow_server)
    time.sleep({sleep})
'''


@pytest.mark.parametrize("killed", [False, True], ids=["finished", "killed-by-a-timeout"])
def test_a_test_run_leaves_no_server(tmp_path: Path, killed: bool) -> None:
    """A pytest run using the suite's session MLflow server, ending normally or SIGKILLed mid-test
    (what a CI timeout does): afterwards no process it started is left."""
    token, ready = uuid.uuid4().hex, tmp_path / "ready.txt"
    test_file = tmp_path / "test_server_user.py"
    test_file.write_text(SERVER_TEST.format(ready=str(ready), sleep=120 if killed else 0))
    (tmp_path / "conftest.py").write_text((REPO / "tests" / "conftest.py").read_text())
    run = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env={**os.environ, TOKEN: token, "PYTHONPATH": str(REPO)}, start_new_session=True)
    deadline = time.monotonic() + 180
    while not ready.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ready.exists(), run.communicate()[0] if run.poll() is not None else "the server did not start"
    assert any("mlflow" in p.command for p in processes_with(TOKEN, token))
    if killed:
        os.killpg(run.pid, signal.SIGKILL)  # pytest and anything in its group; the servers have their own
    output, _ = run.communicate(timeout=120)
    if not killed:
        assert run.returncode == 0, output
    assert _wait_gone(token, GONE_WITHIN + GUARD_GRACE_SECONDS) == []
