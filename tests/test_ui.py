"""``convscope ui``: both UIs start on 127.0.0.1, print their URLs and stop with their helpers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from convscope.servers.servers import free_port, group_members

pytestmark = pytest.mark.slow


def test_ui_serves_mlflow_and_tensorboard_and_stops_cleanly(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    (runs / "tensorboard").mkdir(parents=True)
    (runs / "optuna").mkdir()
    storage = JournalStorage(JournalFileBackend(str(runs / "optuna" / "journal.log")))
    optuna.create_study(study_name="ui-study", storage=storage)
    mlflow_port, tensorboard_port, dashboard_port = free_port(), free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "convscope", "ui", "--runs-dir", str(runs), "--mlflow-port", str(mlflow_port),
         "--tensorboard-port", str(tensorboard_port), "--dashboard-port", str(dashboard_port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 180
    while not any(line.startswith("Ctrl-C stops") for line in lines):
        line = proc.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
        assert time.monotonic() < deadline
    output = "".join(lines)
    assert f"http://127.0.0.1:{mlflow_port}/#/experiments?workflowType=machine_learning" in output
    assert f"Optuna:      http://127.0.0.1:{dashboard_port}\nCtrl-C stops all three.\n" in output
    assert urllib.request.urlopen(f"http://127.0.0.1:{mlflow_port}/health").status == 200
    assert urllib.request.urlopen(f"http://127.0.0.1:{tensorboard_port}/data/plugin/images/tags").status == 200
    studies = json.load(urllib.request.urlopen(f"http://127.0.0.1:{dashboard_port}/api/studies"))
    assert [s["study_name"] for s in studies["study_summaries"]] == ["ui-study"]
    servers = processes_mentioning(str(runs))
    assert len(servers) >= 3  # mlflow, tensorboard, optuna-dashboard (plus their own helpers)
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    deadline = time.monotonic() + 30
    while any(group_members(pid) for pid in servers) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_mentioning(str(runs)) == []
    assert all(group_members(pid) == [] for pid in servers)  # the servers' helper processes too


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if text in cmdline and state != "Z":
                found.append(int(entry.name))
    return found


def test_ui_with_a_study_needs_the_dashboards_port(tmp_path: Path) -> None:
    (tmp_path / "runs" / "optuna").mkdir(parents=True)
    (tmp_path / "runs" / "optuna" / "journal.log").touch()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        done = subprocess.run(
            [sys.executable, "-m", "convscope", "ui", "--runs-dir", str(tmp_path / "runs"), "--mlflow-port",
             str(free_port()), "--tensorboard-port", str(free_port()), "--dashboard-port", str(busy.getsockname()[1])],
            capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
        )
    assert done.returncode == 2 and "--dashboard-port" in done.stderr and "already in use" in done.stderr, done.stderr


def test_ui_without_runs_folder_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "convscope", "ui", "--runs-dir", str(tmp_path / "none")],
        capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
    )
    assert done.returncode == 2 and "no such folder" in done.stderr


def test_nohup_ui_outlives_the_shell_that_started_it(tmp_path: Path) -> None:
    """``nohup convscope ui &`` from a shell that then exits (and sends its jobs SIGHUP): the UI keeps
    serving (SIGHUP ignored, no death with the parent), runs trained meanwhile link to the port it
    serves on, and SIGTERM stops it and its servers."""
    runs = tmp_path / "runs"
    (runs / "tensorboard").mkdir(parents=True)
    port = free_port()
    log = tmp_path / "ui.log"
    busy = socket.socket()  # no study here: the dashboard's port is not needed, and being taken is no error
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    command = (f"nohup {sys.executable} -u -m convscope ui --runs-dir {runs} --mlflow-port {port} "
               f"--tensorboard-port {free_port()} --dashboard-port {busy.getsockname()[1]} > {log} 2>&1 & echo $!")
    shell = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30, start_new_session=True)
    pid = int(shell.stdout.strip())  # the shell has exited: the UI's parent is gone
    try:
        deadline = time.monotonic() + 180
        while "Ctrl-C stops both." not in (log.read_text() if log.exists() else ""):  # no study: two servers
            assert time.monotonic() < deadline, log.read_text() if log.exists() else "no log"
            time.sleep(0.5)
        os.kill(pid, signal.SIGHUP)  # what an interactive shell sends its jobs when it exits
        time.sleep(3)
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/health").status == 200
        assert pid in processes_mentioning(str(runs)), "the UI died with its shell"
        trained = subprocess.run([sys.executable, "-m", "convscope", "train", "--runs-dir", str(runs), "--preset", "tiny",
                                  "--image-size", "32", "--epochs", "1", "--synthetic-size", "200", "--quiet"],
                                 capture_output=True, text=True, timeout=300)
        assert trained.returncode == 0, trained.stderr
        assert f"http://127.0.0.1:{port}/#/experiments/" in trained.stdout, trained.stdout  # the port actually served
    finally:
        os.kill(pid, signal.SIGTERM)
        busy.close()
    deadline = time.monotonic() + 60
    while processes_mentioning(str(runs)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_mentioning(str(runs)) == []
