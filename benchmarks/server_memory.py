"""Processes and memory of the local UIs at idle: ``convscope ui`` against the same three servers
started with their own defaults (``mlflow ui``: 4 web workers and MLflow's server-side job execution;
``tensorboard``; ``optuna-dashboard``), on the same runs folder, in the same run.

Every process is found by an environment token (``servers.process_table``), so helpers that left
their parent's group are counted too. RSS counts shared pages once per process; PSS splits them.

    python benchmarks/server_memory.py [--settle 20]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_description  # noqa: E402

from convscope.servers.process_table import processes_with  # noqa: E402
from convscope.servers.servers import (  # noqa: E402
    SERVER_DEFAULTS,
    free_port,
    optuna_dashboard_command,
    tensorboard_command,
    wait_for_http,
)

TOKEN = "CONVSCOPE_BENCH_TOKEN"


def _runs(root: Path) -> Path:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    runs = root / "runs"
    (runs / "tensorboard").mkdir(parents=True)
    (runs / "optuna").mkdir()
    optuna.create_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(runs / "optuna" / "journal.log"))))
    return runs


def _measure(token: str, settle: float) -> tuple[int, float, float]:
    time.sleep(settle)
    found = processes_with(TOKEN, token)
    if os.environ.get("SERVER_MEMORY_LIST"):
        for process in sorted(found, key=lambda p: -p.rss_kib):
            print(f"  {process.rss_kib / 1024:7.0f} MiB  {process.command[:110]}")
    return len(found), sum(p.rss_kib for p in found) / 1024 ** 2, sum(p.pss_kib for p in found) / 1024 ** 2


def _gone(token: str, within: float = 30) -> int:
    deadline = time.monotonic() + within
    while (left := processes_with(TOKEN, token)) and time.monotonic() < deadline:
        time.sleep(0.25)
    for process in left:
        os.kill(process.pid, signal.SIGKILL)
    return len(left)


def defaults(runs: Path, settle: float) -> tuple[int, float, float, int]:
    """The three servers as their own commands start them, each in a session of its own."""
    token = uuid.uuid4().hex
    env = {name: value for name, value in os.environ.items() if name not in SERVER_DEFAULTS} | {TOKEN: token}
    ports = free_port(), free_port(), free_port()
    commands = [
        [str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", f"sqlite:///{runs / 'mlflow.db'}",
         "--host", "127.0.0.1", "--port", str(ports[0])],
        tensorboard_command(runs / "tensorboard", "127.0.0.1", ports[1]),
        optuna_dashboard_command(runs / "optuna" / "journal.log", "127.0.0.1", ports[2]),
    ]
    servers = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True) for c in commands]
    for port, path in zip(ports, ("/health", "/", "/api/studies")):
        wait_for_http(f"http://127.0.0.1:{port}{path}", timeout=120)
    figures = _measure(token, settle)
    for server in servers:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    return (*figures, _gone(token))


def convscope_ui(runs: Path, settle: float) -> tuple[int, float, float, int]:
    token = uuid.uuid4().hex
    argv = [sys.executable, "-u", "-m", "convscope", "ui", "--runs-dir", str(runs), "--mlflow-port", str(free_port()),
            "--tensorboard-port", str(free_port()), "--dashboard-port", str(free_port())]
    ui = subprocess.Popen(argv, cwd=REPO, env={**os.environ, TOKEN: token}, stdout=subprocess.PIPE, text=True,
                          start_new_session=True)
    assert ui.stdout is not None
    for line in ui.stdout:
        if line.startswith("Ctrl-C stops"):
            break
    figures = _measure(token, settle)
    ui.send_signal(signal.SIGTERM)
    ui.wait(timeout=60)
    return (*figures, _gone(token))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settle", type=float, default=20.0, help="seconds idle before measuring")
    args = parser.parse_args()
    print(f"machine: {device_description()}")
    with tempfile.TemporaryDirectory() as tmp:
        runs = _runs(Path(tmp))
        for name, start in (("mlflow ui + tensorboard + optuna-dashboard, their defaults", defaults),
                            ("convscope ui", convscope_ui)):
            count, rss, pss, left = start(runs, args.settle)
            print(f"{name:<58} {count:3d} processes  RSS {rss:5.2f} GiB  PSS {pss:5.2f} GiB  "
                  f"left after stopping: {left}")


if __name__ == "__main__":
    main()
