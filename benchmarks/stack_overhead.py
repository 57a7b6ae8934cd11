"""What the multi-machine stack costs per trial: embedded stores vs PostgreSQL + an MLflow server.

The same study — identical, fixed-shape trials of the seed network on the synthetic
set, everything logged (MLflow, TensorBoard, per-epoch visuals) — run by one
``convscope search`` process twice in one go:

- embedded: the journal file and the sqlite MLflow store under a runs folder;
- stack: the study in a fresh PostgreSQL database and an MLflow server started with
  ``convscope serve mlflow`` (its own fresh database, artifacts proxied over HTTP),
  as in docker-compose.yml.

Prints seconds per trial of each and their ratio, with the device. Needs a
PostgreSQL server you may create databases on:

    python benchmarks/stack_overhead.py [--trials 6] [--postgres postgresql+psycopg2://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_description  # noqa: E402

from convscope.servers.servers import free_port, start_process_group, stop_process_group, wait_for_http  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FIXED = ["--depth", "5", "--base-width", "16", "--growth", "2", "--dropout", "0.1", "--pruner", "none",
         "--fix", "epochs=3", "--fix", "synthetic_size=2500", "--quiet"]


def convscope(*argv: str) -> list[str]:
    script = Path(sys.executable).parent / "convscope"
    return [str(script), *argv] if script.exists() else [sys.executable, "-m", "convscope", *argv]


def clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVSCOPE_", "MLFLOW_"))}
    return {**env, **values}


def timed_search(trials: int, env: dict[str, str], *argv: str) -> float:
    start = time.perf_counter()
    subprocess.run(convscope("search", "--trials", str(trials), *FIXED, *argv), env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


class Databases:
    """Fresh databases on a PostgreSQL server, dropped on exit."""

    def __init__(self, admin_url: str) -> None:
        from sqlalchemy.engine import make_url

        self.admin = make_url(admin_url)
        self.names: list[str] = []

    def _execute(self, sql: str) -> None:
        import psycopg2

        url = self.admin
        connection = psycopg2.connect(host=url.host, port=url.port, user=url.username, password=url.password,
                                      dbname=url.database or "postgres")
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql)
        finally:
            connection.close()

    def new(self) -> str:
        name = f"convscope_bench_{uuid.uuid4().hex[:10]}"
        self._execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return self.admin.set(database=name).render_as_string(hide_password=False)

    def __enter__(self) -> Databases:
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.names:
            self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--postgres", default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
                        help="a PostgreSQL URL whose user may create databases")
    args = parser.parse_args()
    print(f"device: {device_description()}")
    with tempfile.TemporaryDirectory() as tmp, Databases(args.postgres) as databases:
        root = Path(tmp)
        embedded = timed_search(args.trials, clean_env(), "--runs-dir", str(root / "embedded"))
        port = free_port()
        server_env = clean_env(MLFLOW_BACKEND_STORE_URI=databases.new(),
                               MLFLOW_ARTIFACTS_DESTINATION=str(root / "artifacts"))
        server = start_process_group(convscope("serve", "mlflow", "--port", str(port)), root / "mlflow.log",
                                     env=server_env)
        try:
            wait_for_http(f"http://127.0.0.1:{port}/health", timeout=180, proc=server, log_path=root / "mlflow.log")
            stack_env = clean_env(CONVSCOPE_STORAGE=databases.new(), MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}")
            subprocess.run(convscope("search", "--init-only", *FIXED), env=stack_env, check=True,
                           stdout=subprocess.DEVNULL)
            stack = timed_search(args.trials, stack_env, "--runs-dir", str(root / "stack"))
        finally:
            stop_process_group(server)
    per_embedded, per_stack = embedded / args.trials, stack / args.trials
    print(f"{args.trials} trials, seed net x 3 epochs, everything logged, one worker process")
    print(f"embedded (journal + sqlite MLflow):          {per_embedded:6.2f} s/trial")
    print(f"stack (PostgreSQL + MLflow server, proxied): {per_stack:6.2f} s/trial")
    print(f"stack / embedded: {per_stack / per_embedded:.2f}x  (the MLflow server shares this machine's cores)")


if __name__ == "__main__":
    main()
