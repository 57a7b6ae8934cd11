"""The docker-compose stack without Docker: its services' own commands, run as processes on 127.0.0.1.

Each service runs the ``command`` and ``healthcheck`` written in docker-compose.yml,
with the environment written there; only the values that name another container or
a container path (``compose_file.host_specific``) and the listen address are adapted:
fresh PostgreSQL databases, temporary folders and free loopback ports. PostgreSQL is
the test server (``postgres_db``), so these tests skip without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from base64 import b64encode
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState
from safetensors.torch import load as load_safetensors

import compose_file
from compose_file import REPO
from postgres_db import needs_postgres
from convscope.servers.servers import free_port, start_process_group, stop_process_group

pytestmark = [pytest.mark.slow, needs_postgres]
SERVICES = set(compose_file.load()["services"])
LISTEN = {"CONVSCOPE_HOST", "CONVSCOPE_PORT"}
STUDY = "convscope"  # the compose file's default study name
TINY_STUDY = {  # the study definition (docker/search.yaml's role), small enough for a test
    "preset": "tiny",
    "model": {"image_size": 32},
    "data": {"data": "synthetic", "synthetic_size": 400, "probes_per_class": 2, "analysis_size": 32},
    "optim": {"epochs": 1},
    "tracking": {"experiment": "convscope"},
    "search": {"depth": "1..2", "dropout": "0.0..0.3"},
}


def executable(argv: list[str]) -> list[str]:
    """``convscope …`` as installed beside this interpreter (what the image has on PATH)."""
    assert argv[0] == "convscope", argv
    script = Path(sys.executable).parent / "convscope"
    return [str(script), *argv[1:]] if script.exists() else [sys.executable, "-m", "convscope", *argv[1:]]


class Stack:
    """The compose services as processes: same commands, same environment, local wiring."""

    def __init__(self, tmp: Path, new_database: Callable[[], str], **variables: str) -> None:
        self.tmp = tmp
        self.variables = {**compose_file.example_env(), "POSTGRES_PASSWORD": "not-used-by-the-test-server",
                          "MLFLOW_ADMIN_PASSWORD": f"Stack-{uuid.uuid4().hex}",
                          "MLFLOW_SECRET_KEY": uuid.uuid4().hex, **variables}
        self.ports = {name: free_port() for name in ("mlflow", "tensorboard", "optuna-dashboard")}
        config = tmp / "search.yaml"
        config.write_text(yaml.safe_dump(TINY_STUDY))
        self.local = {
            "MLFLOW_BACKEND_STORE_URI": new_database(),
            "CONVSCOPE_AUTH_DATABASE_URI": new_database(),
            "CONVSCOPE_STORAGE": new_database(),
            "MLFLOW_ARTIFACTS_DESTINATION": str(tmp / "mlflow-artifacts"),
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            "CONVSCOPE_CONFIG": str(config),
            "CONVSCOPE_RUNS_DIR": str(tmp / "runs"),
            "CONVSCOPE_LOGDIR": str(tmp / "runs" / "tensorboard"),
        }
        self.servers: list[subprocess.Popen[bytes]] = []

    @property
    def mlflow_uri(self) -> str:
        return f"http://127.0.0.1:{self.ports['mlflow']}"

    @property
    def admin(self) -> tuple[str, str]:
        return self.variables["MLFLOW_ADMIN_USERNAME"], self.variables["MLFLOW_ADMIN_PASSWORD"]

    def env(self, service: str) -> dict[str, str]:
        declared = compose_file.environment(service, self.variables)
        adapted = compose_file.host_specific(declared, SERVICES)
        unknown = adapted - self.local.keys()
        assert not unknown, f"{service}: the test has no local value for {sorted(unknown)}"
        values = {**declared, **{key: self.local[key] for key in adapted}}
        if LISTEN <= declared.keys():
            values |= {"CONVSCOPE_HOST": "127.0.0.1", "CONVSCOPE_PORT": str(self.ports[service])}
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("CONVSCOPE_", "MLFLOW_"))}
        return {**inherited, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), inherited.get("PYTHONPATH", "")) if p),
                **values}

    def run(self, service: str, timeout: float = 120, **extra_env: str) -> subprocess.CompletedProcess[str]:
        """The service's command to completion (a one-shot service, or one worker)."""
        return subprocess.run(executable(compose_file.command(service, self.variables)), capture_output=True,
                              text=True, env=self.env(service) | extra_env, timeout=timeout, cwd=self.tmp)

    def start(self, service: str, **extra_env: str) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{service}.log"
        process = start_process_group(executable(compose_file.command(service, self.variables)), log,
                                      env=self.env(service) | extra_env)
        self.servers.append(process)
        return process

    def healthy(self, service: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(executable(compose_file.healthcheck(service, self.variables)), capture_output=True,
                              text=True, env=self.env(service), timeout=60, cwd=self.tmp)

    def wait_healthy(self, service: str, process: subprocess.Popen[bytes], timeout: float = 180) -> None:
        """Poll the service's own healthcheck command, as Docker would."""
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                pytest.fail(f"{service} exited {process.returncode}\n{self.log(service)}")
            result = self.healthy(service)
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"{service} not healthy after {timeout:.0f} s: {result.stderr}\n{self.log(service)}")
            time.sleep(1)

    def log(self, service: str) -> str:
        path = self.tmp / f"{service}.log"
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""

    def stop(self) -> None:
        for process in self.servers:
            stop_process_group(process)


@pytest.fixture
def stack_factory(tmp_path: Path, new_database: Callable[[], str]) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []

    def make(**variables: str) -> Stack:
        stacks.append(Stack(tmp_path, new_database, **variables))
        return stacks[-1]

    yield make
    for stack in stacks:
        stack.stop()


def http_get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", "Basic " + b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def artifact_url(server: str, artifact_uri: str, path: str) -> str:
    """The proxied-artifact download URL of ``path`` in a run whose artifacts live at
    ``mlflow-artifacts:/<experiment>/<run>/artifacts``."""
    parsed = urllib.parse.urlparse(artifact_uri)
    assert parsed.scheme == "mlflow-artifacts", f"artifacts are not proxied by the server: {artifact_uri}"
    return f"{server}/api/2.0/mlflow-artifacts/artifacts/{parsed.path.lstrip('/')}/{path}"


def load_trials(storage_url: str) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.RDBStorage(storage_url)
    try:
        return optuna.load_study(study_name=STUDY, storage=storage).get_trials()
    finally:
        storage.remove_session()
        storage.engine.dispose()


def test_stack_two_workers_one_study_tracked_on_the_server(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory(CONVSCOPE_TRIALS="4", CONVSCOPE_TRIALS_PER_GPU="1")
    stack.wait_healthy("mlflow", stack.start("mlflow"))
    for attempt in range(2):  # once creates the study; a rerun (a restarted stack) finds it
        init = stack.run("study-init")
        assert init.returncode == 0, init.stdout + init.stderr
        assert f"study '{STUDY}' ready" in init.stdout and "not-used-by-the-test-server" not in init.stdout
    stack.wait_healthy("optuna-dashboard", stack.start("optuna-dashboard"))
    stack.wait_healthy("tensorboard", stack.start("tensorboard"))

    workers = [subprocess.Popen(executable(compose_file.command("worker", stack.variables)), env=stack.env("worker"),
                                cwd=stack.tmp, stdout=open(stack.tmp / f"worker{i}.log", "w"),
                                stderr=subprocess.STDOUT) for i in range(2)]
    try:
        codes = [worker.wait(timeout=300) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    logs = "\n".join((stack.tmp / f"worker{i}.log").read_text()[-4000:] for i in range(2))
    assert codes == [0, 0], logs
    assert stack.healthy("worker").returncode == 0, "the worker health check should pass on a live stack"

    trials = load_trials(stack.local["CONVSCOPE_STORAGE"])
    assert sorted(t.number for t in trials) == [0, 1, 2, 3], logs
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), [t.state for t in trials]
    run_ids = [t.user_attrs["mlflow_run_id"] for t in trials]
    assert len(set(run_ids)) == 4, run_ids

    client = MlflowClient(stack.mlflow_uri)
    parents = set()
    for trial, run_id in zip(trials, run_ids):
        run = client.get_run(run_id)
        assert run.data.tags["optuna.trial"] == str(trial.number)
        parents.add(run.data.tags["mlflow.parentRunId"])
    assert len(parents) == 2, "one parent run per worker"

    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) >= 2, "the median pruner prunes nothing in a one-epoch trial"
    run = client.get_run(complete[0].user_attrs["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images") if a.path.endswith(".png")]
    assert any("feature_maps~conv1" in path for path in images), images
    status, png = http_get(artifact_url(stack.mlflow_uri, run.info.artifact_uri, images[0]))
    assert status == 200 and png.startswith(b"\x89PNG"), (status, png[:40])
    activations = [a.path for a in client.list_artifacts(run.info.run_id, "activations")
                   if a.path.endswith(".safetensors")]
    assert activations, "activation artifacts missing"
    status, blob = http_get(artifact_url(stack.mlflow_uri, run.info.artifact_uri, activations[0]))
    assert status == 200 and "conv1" in load_safetensors(blob), status
    stored = Path(stack.local["MLFLOW_ARTIFACTS_DESTINATION"])
    assert list(stored.rglob(Path(activations[0]).name)), "artifacts must be stored by the server (proxied)"
    assert not (stack.tmp / "runs" / "mlartifacts").exists(), "workers must not write artifacts locally"

    # the study's best network is in the server's Model Registry and loads through it
    best = max(complete, key=lambda t: t.value or 0.0)
    champion = client.get_model_version_by_alias(STUDY, "champion")
    assert champion.run_id == best.user_attrs["mlflow_run_id"], (champion.run_id, best.number)
    versions = client.search_model_versions(f"name = '{STUDY}'")
    assert len({v.run_id for v in versions}) == len(versions), "one version per run, whichever worker registered it"
    import mlflow
    import numpy as np

    mlflow.set_tracking_uri(stack.mlflow_uri)
    try:
        predicted = mlflow.pyfunc.load_model(f"models:/{STUDY}@champion").predict(np.zeros((2, 40, 50, 3), np.uint8))
    finally:
        mlflow.set_tracking_uri("")
    assert predicted.shape == (2, 2) and np.allclose(predicted.sum(axis=1), 1)

    status, body = http_get(f"http://127.0.0.1:{stack.ports['optuna-dashboard']}/api/studies")
    assert status == 200 and STUDY in {s["study_name"] for s in json.loads(body)["study_summaries"]}
    deadline = time.monotonic() + 60  # TensorBoard rescans its logdir every few seconds
    while True:
        status, body = http_get(f"http://127.0.0.1:{stack.ports['tensorboard']}/data/runs")
        if status == 200 and len(json.loads(body)) >= 4 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert status == 200 and len(json.loads(body)) >= 4, body[:500]

    compare = subprocess.run(executable(["convscope", "compare", "--study", STUDY, "--top", "2", "--folds", "2"]),
                             capture_output=True, text=True, env=stack.env("worker"), timeout=300, cwd=stack.tmp)
    assert compare.returncode == 0, compare.stdout + compare.stderr[-4000:]
    experiment = client.get_experiment_by_name("convscope")
    reports = client.search_runs([experiment.experiment_id], "tags.`convscope.compared_runs` != ''")
    assert len(reports) == 1 and reports[0].info.status == "FINISHED"
    assert set(reports[0].data.tags["convscope.compared_runs"].split(",")) <= set(run_ids)
    assert "report/report.html" in {a.path for a in client.list_artifacts(reports[0].info.run_id, "report")}


def test_stack_with_basic_auth(stack_factory: Callable[..., Stack], monkeypatch: pytest.MonkeyPatch) -> None:
    stack = stack_factory(CONVSCOPE_MLFLOW_AUTH="true", CONVSCOPE_TRIALS="1", CONVSCOPE_TRIALS_PER_GPU="1")
    stack.wait_healthy("mlflow", stack.start("mlflow"))  # /health stays open for health checks
    search = f"{stack.mlflow_uri}/api/2.0/mlflow/experiments/search?max_results=1"
    assert http_get(search)[0] == 401, "without credentials the server must refuse"
    assert http_get(search, (stack.admin[0], "wrong-password-123"))[0] == 401
    assert http_get(search, stack.admin)[0] == 200

    init = stack.run("study-init")
    assert init.returncode == 0, init.stdout + init.stderr
    worker = stack.run("worker", timeout=300)
    assert worker.returncode == 0, worker.stdout + worker.stderr[-4000:]
    (trial,) = load_trials(stack.local["CONVSCOPE_STORAGE"])
    assert trial.state == TrialState.COMPLETE, trial.user_attrs

    bare = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "CONVSCOPE_"))}
    for credentials in ({}, {"MLFLOW_TRACKING_USERNAME": stack.admin[0], "MLFLOW_TRACKING_PASSWORD": "wrong-pass-123"}):
        refused = subprocess.run(executable(["convscope", "train", "--preset", "tiny", "--image-size", "32",
                                             "--epochs", "1", "--synthetic-size", "100", "--mlflow-uri",
                                             stack.mlflow_uri, "--runs-dir", str(stack.tmp / "refused")]),
                                 capture_output=True, text=True, env=bare | credentials, timeout=120, cwd=stack.tmp)
        lines = [line for line in refused.stderr.splitlines() if line.strip()]
        assert refused.returncode == 2 and len(lines) == 1, refused.stderr[-2000:]
        assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in lines[0] and "wrong-pass" not in lines[0]

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", stack.admin[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", stack.admin[1])
    run = MlflowClient(stack.mlflow_uri).get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["optuna.trial"] == "0"
    assert "best network: models:/" in worker.stdout, worker.stdout[-2000:]
    champion = MlflowClient(stack.mlflow_uri).get_model_version_by_alias(STUDY, "champion")
    assert champion.run_id == run.info.run_id
