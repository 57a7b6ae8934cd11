"""``convscope search`` on a real PostgreSQL: parallel workers and a worker killed mid-trial.

The server and the fresh database per test come from ``postgres_db`` (skipped
without ``CONVSCOPE_TEST_POSTGRES_URL``). MLflow is the embedded sqlite store of one runs dir that
all workers of a test share.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from postgres_db import connect, needs_postgres

pytestmark = [pytest.mark.slow, needs_postgres]
REPO = Path(__file__).resolve().parent.parent
FAST = ["--preset", "tiny", "--image-size", "32", "--fix", "synthetic_size=400", "--fix", "probes_per_class=2",
        "--fix", "analysis_size=32", "--pruner", "none", "--no-tensorboard"]


class Worker:
    """One ``convscope search`` process, its output going to files (read back for messages)."""

    def __init__(self, tmp: Path, name: str, *argv: str) -> None:
        self.out, self.err = tmp / f"{name}.out", tmp / f"{name}.err"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        env.pop("MLFLOW_TRACKING_URI", None)  # the embedded store of --runs-dir
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.process = subprocess.Popen([sys.executable, "-m", "convscope", "search", *argv],
                                            stdout=out, stderr=err, env=env, cwd=REPO)

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return f"--- {self.out.name}\n{self.out.read_text()}\n--- {self.err.name}\n{self.err.read_text()[-6000:]}"

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"convscope search did not finish in {timeout:.0f} s\n{self.output()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


def load(url: str, name: str) -> tuple[optuna.Study, optuna.storages.RDBStorage]:
    storage = optuna.storages.RDBStorage(url)  # no heartbeat: reading must never fail anyone's trial
    return optuna.load_study(study_name=name, storage=storage), storage


def close(storage: optuna.storages.RDBStorage) -> None:
    storage.remove_session()
    storage.engine.dispose()


def retried_from(trial: FrozenTrial) -> int | None:
    callback = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or \
        optuna.storages.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental / deprecated across Optuna versions
        return callback.retried_trial_number(trial)


def mlflow_store(runs: Path) -> MlflowClient:
    """The runs dir's embedded MLflow store, created now, before any worker starts.

    MLflow builds a new sqlite store with alembic migrations that are not safe to run
    from two processes at once (``Online migration expected to match one row``); in
    multi-machine use an MLflow server owns its database, so the workers here get a
    store that already exists, as they would there.
    """
    runs.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    client.search_experiments()
    return client


def test_two_workers_share_one_study(fresh_db: str, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    client = mlflow_store(runs)
    argv = ["--storage", fresh_db, "--study-name", "shared", "--trials", "6", "--runs-dir", str(runs),
            "--fix", "epochs=2", *FAST]
    workers = [Worker(tmp_path, f"worker{i}", *argv) for i in range(2)]
    try:
        for worker in workers:
            assert worker.wait(timeout=150) == 0, worker.output()
    finally:
        for worker in workers:
            worker.kill()
    logs = "\n".join(worker.output() for worker in workers)
    study, storage = load(fresh_db, "shared")
    try:
        trials = study.get_trials()
    finally:
        close(storage)
    summary = [(t.number, t.state.name) for t in trials]
    assert sorted(t.number for t in trials) == list(range(6)), f"{summary}\n{logs}"
    assert all(t.state == TrialState.COMPLETE for t in trials), f"{summary}\n{logs}"
    run_ids = [t.user_attrs.get("mlflow_run_id") for t in trials]
    assert None not in run_ids and len(set(run_ids)) == 6, run_ids
    parents = set()
    for trial, run_id in zip(trials, run_ids):
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED", (trial.number, run.info.status)
        assert run.data.tags["optuna.trial"] == str(trial.number)
        parents.add(run.data.tags["mlflow.parentRunId"])
    assert len(parents) == 2, parents  # one parent run per worker invocation
    for parent_id in parents:
        parent = client.get_run(parent_id)
        assert parent.data.tags["optuna.study"] == "shared" and parent.info.status == "FINISHED"


def test_three_workers_start_together_on_a_fresh_runs_folder(fresh_db: str, tmp_path: Path) -> None:
    """No store exists yet, neither the MLflow one under the runs folder nor the study's tables:
    one worker creates each, the others wait for it, and every worker finishes."""
    runs = tmp_path / "runs"
    argv = ["--storage", fresh_db, "--study-name", "together", "--trials", "3", "--runs-dir", str(runs),
            "--fix", "epochs=1", *FAST]
    workers = [Worker(tmp_path, f"worker{i}", *argv) for i in range(3)]
    try:
        codes = [worker.wait(timeout=240) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    logs = "\n".join(worker.output() for worker in workers)
    assert codes == [0, 0, 0], logs
    assert "Traceback" not in logs, logs
    study, storage = load(fresh_db, "together")
    try:
        trials = study.get_trials()
    finally:
        close(storage)
    assert sorted(t.number for t in trials) == [0, 1, 2] and all(t.state == TrialState.COMPLETE for t in trials), logs
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    runs_of_trials = {t.user_attrs["mlflow_run_id"] for t in trials}
    assert all(client.get_run(run_id).info.status == "FINISHED" for run_id in runs_of_trials)


def test_a_study_rides_out_a_twenty_second_database_outage(fresh_db: str, tmp_path: Path) -> None:
    """The study's PostgreSQL goes away mid-trial for 20 s (every connection dropped, new ones
    turned away): the worker waits, says so twice, and the study finishes every trial."""
    from sqlalchemy.engine import make_url

    from tcp_proxy import TcpProxy

    server = make_url(fresh_db)
    proxy = TcpProxy(server.host or "127.0.0.1", server.port or 5432)
    through_proxy = server.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    runs = tmp_path / "runs"
    worker = Worker(tmp_path, "worker", "--storage", through_proxy, "--study-name", "outage", "--trials", "3",
                    "--runs-dir", str(runs), "--fix", "epochs=6", *FAST)
    try:
        _wait_for_running_trial(fresh_db, "outage", worker, timeout=120)
        proxy.cut()
        time.sleep(20)
        refused = proxy.refused
        proxy.restore()
        code = worker.wait(timeout=240)
    finally:
        worker.kill()
        proxy.close()
    out = worker.output()
    assert refused > 0, out  # the worker did try to reach the database during the outage
    assert code == 0, out
    assert "cannot be reached: waiting up to 2m00s for it to come back" in out, out
    assert re.search(r"study storage \S+ is back after \d+\.\ds: the study goes on", out), out
    assert "Traceback" not in out, out
    study, storage = load(fresh_db, "outage")
    try:
        states = [t.state for t in study.get_trials()]
    finally:
        close(storage)
    assert states == [TrialState.COMPLETE] * 3, out


def test_killed_worker_trial_is_retried_by_another(fresh_db: str, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    common = ["--storage", fresh_db, "--study-name", "killed", "--heartbeat", "1", "--trials", "1",
              "--runs-dir", str(runs), *FAST]
    slow = Worker(tmp_path, "slow", *common, "--fix", "epochs=30", "--fix", "synthetic_size=2000")
    fast: Worker | None = None
    try:
        running = _wait_for_running_trial(fresh_db, "killed", slow, timeout=60)
        os.kill(slow.pid, signal.SIGKILL)
        slow.process.wait(timeout=30)
        # The trial is stale after 3 missed heartbeats (--heartbeat 1); the next worker's
        # trial start fails it, marks its MLflow run KILLED and enqueues a retry.
        time.sleep(4)
        fast = Worker(tmp_path, "fast", *common, "--fix", "epochs=1")
        assert fast.wait(timeout=120) == 0, fast.output()
    finally:
        slow.kill()
        if fast is not None:
            fast.kill()
    study, storage = load(fresh_db, "killed")
    try:
        trials = study.get_trials()
    finally:
        close(storage)
    summary = [(t.number, t.state.name, retried_from(t)) for t in trials]
    killed = trials[0]
    assert killed.number == running.number == 0 and killed.state == TrialState.FAIL, f"{summary}\n{fast.output()}"
    retries = [t for t in trials[1:] if retried_from(t) == 0]
    assert len(retries) == 1, summary
    (retry,) = retries
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params, summary
    assert not any(t.state == TrialState.RUNNING for t in trials), summary
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    killed_run = client.get_run(killed.user_attrs["mlflow_run_id"])
    assert killed_run.info.status == "KILLED" and killed_run.data.tags.get("convscope.status") == "killed"
    retry_run = client.get_run(retry.user_attrs["mlflow_run_id"])
    assert retry_run.info.run_id != killed_run.info.run_id and retry_run.info.status == "FINISHED"
    assert int(retry_run.data.params["epochs"]) == 1  # --fix applies to the run, the params are kept


def _wait_for_running_trial(url: str, name: str, worker: Worker, timeout: float) -> FrozenTrial:
    """Poll until a trial is RUNNING and has opened its MLflow run.

    Plain SQL until the worker has created the schema and the study: opening an
    ``RDBStorage`` on an empty database creates the tables, racing the worker doing the same.
    """
    from sqlalchemy.engine import make_url

    deadline = time.monotonic() + timeout
    connection = connect(make_url(url).database)
    connection.autocommit = True
    try:
        while time.monotonic() < deadline:
            if worker.process.poll() is not None:
                pytest.fail(f"the worker exited ({worker.process.returncode}) before its trial ran\n{worker.output()}")
            with connection.cursor() as cursor:
                cursor.execute("SELECT to_regclass('trial_user_attributes') IS NOT NULL")
                ready = cursor.fetchone()[0]
                if ready:
                    cursor.execute(
                        "SELECT count(*) FROM trials JOIN studies USING (study_id) "
                        "JOIN trial_user_attributes USING (trial_id) "
                        "WHERE studies.study_name = %s AND trials.state = 'RUNNING' AND key = 'mlflow_run_id'",
                        (name,),
                    )
                    ready = cursor.fetchone()[0] > 0
            if ready:
                study, storage = load(url, name)
                try:
                    (trial,) = study.get_trials(states=(TrialState.RUNNING,))
                    return trial
                finally:
                    close(storage)
            time.sleep(0.2)
    finally:
        connection.close()
    pytest.fail(f"no trial was RUNNING with an MLflow run within {timeout:.0f} s\n{worker.output()}")
