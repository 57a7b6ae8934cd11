"""``convscope ui``: both UIs start on 127.0.0.1, print their URLs and stop with their helpers."""

from __future__ import annotations

import json
import os
import signal
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
    while not any(line.startswith("Optuna:") for line in lines):
        line = proc.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
        assert time.monotonic() < deadline
    output = "".join(lines)
    assert f"http://127.0.0.1:{mlflow_port}/#/experiments?workflowType=machine_learning" in output
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


def test_ui_without_runs_folder_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "convscope", "ui", "--runs-dir", str(tmp_path / "none")],
        capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
    )
    assert done.returncode == 2 and "no such folder" in done.stderr
