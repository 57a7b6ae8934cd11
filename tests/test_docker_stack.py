"""docker-compose.yml under a real Docker engine, with images built from Debian's packages.

``docker/local-images.sh`` builds the images (cached in the engine); ``docker/local-images.yml``
swaps only the PostgreSQL image; with Compose v1 the file is first generated into the variant v1
reads (``compose_file.v1_variant``). Then: ``up`` with ``--scale worker=2`` on a small CPU study,
every healthcheck waited for, every trial landing once with its MLflow run and images reachable
through the MLflow server on 127.0.0.1, TensorBoard and optuna-dashboard answering; ``stop worker``
during a trial leaves it KILLED and the study resumable; ``down -v`` removes everything. The time
of each phase is printed. Skipped when no Docker engine answers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

import compose_file
from compose_file import REPO
from test_stack import TINY_STUDY, artifact_url, http_get
from convscope.servers.servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.docker]
TRIALS = 4
STUDY = "convscope"


def _engine_problem() -> str | None:
    if shutil.which("docker") is None:
        return "no docker command (apt-get install -y docker.io)"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer in 30 s"
    if info.returncode != 0:
        return "no Docker engine answers `docker info` (start dockerd; .ci/run does)"
    if shutil.which("mmdebstrap") is None:
        return "no mmdebstrap to build the local images (apt-get install -y mmdebstrap)"
    return None


def _compose_command() -> tuple[list[str], bool]:
    """The Compose command and whether it is v1 (``docker-compose`` 1.x)."""
    plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if plugin.returncode == 0:
        return ["docker", "compose"], False
    if shutil.which("docker-compose"):
        return ["docker-compose"], True
    pytest.skip("no Docker Compose (apt-get install -y docker-compose)")


class Phases:
    def __init__(self) -> None:
        self.marks: list[tuple[str, float]] = []
        self.last = time.monotonic()

    def done(self, name: str) -> None:
        now = time.monotonic()
        self.marks.append((name, now - self.last))
        self.last = now

    def report(self) -> str:
        return "; ".join(f"{name} {seconds:.0f} s" for name, seconds in self.marks)


class Stack:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.command, self.v1 = _compose_command()
        self.project = f"convscope-test-{uuid.uuid4().hex[:8]}"
        self.ports = {"MLFLOW_HOST_PORT": free_port(), "TENSORBOARD_HOST_PORT": free_port(),
                      "OPTUNA_DASHBOARD_HOST_PORT": free_port()}
        self.config = tmp / "search.yaml"
        self.study(synthetic_size=400, epochs=1)
        (tmp / "datasets").mkdir()
        self.variables = {
            "POSTGRES_PASSWORD": uuid.uuid4().hex, "MLFLOW_ADMIN_PASSWORD": f"Docker-{uuid.uuid4().hex}",
            "MLFLOW_SECRET_KEY": uuid.uuid4().hex, "CONVSCOPE_SEARCH_CONFIG": str(self.config),
            "CONVSCOPE_DATASETS": str(tmp / "datasets"), "CONVSCOPE_TRIALS": str(TRIALS),
            "CONVSCOPE_TRIALS_PER_GPU": "1", **{k: str(v) for k, v in self.ports.items()},
        }
        files = [REPO / "docker-compose.yml"]
        if self.v1:
            files = [tmp / "docker-compose.v1.yml"]
            files[0].write_text(yaml.safe_dump(compose_file.v1_variant(compose_file.load(), gpus=False)))
        self.files = [*files, REPO / "docker" / "local-images.yml"]

    def study(self, *, synthetic_size: int, epochs: int) -> None:
        definition = {**TINY_STUDY, "data": {**TINY_STUDY["data"], "synthetic_size": synthetic_size},
                      "optim": {"epochs": epochs, "device": "cpu"}}
        self.config.write_text(yaml.safe_dump(definition))  # the same file: the bind mount sees it

    def compose(self, *args: str, timeout: float = 600, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        argv = [*self.command, "--project-name", self.project, "--project-directory", str(REPO)]
        for path in self.files:
            argv += ["--file", str(path)]
        done = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **self.variables, **env}, cwd=REPO)
        if check:
            assert done.returncode == 0, f"compose {' '.join(args)}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
        return done

    def containers(self, service: str) -> list[str]:
        return self.compose("ps", "-q", service).stdout.split()

    def state(self, container: str) -> dict:
        out = subprocess.run(["docker", "inspect", container], capture_output=True, text=True, check=True).stdout
        return json.loads(out)[0]["State"]

    def wait_healthy(self, services: list[str], timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(services)
        while waiting:
            waiting = [s for s in waiting
                       if not self.containers(s)
                       or any(self.state(c).get("Health", {}).get("Status") != "healthy" for c in self.containers(s))]
            assert time.monotonic() < deadline, f"not healthy in {timeout:.0f} s: {waiting}\n" + self.logs(*waiting)
            time.sleep(2)

    def wait_exited(self, service: str, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        while True:
            states = [self.state(c) for c in self.containers(service)]
            if states and all(s["Status"] == "exited" for s in states):
                return [s["ExitCode"] for s in states]
            assert time.monotonic() < deadline, f"{service} still running after {timeout:.0f} s\n" + self.logs(service)
            time.sleep(2)

    def logs(self, *services: str) -> str:
        return self.compose("logs", "--no-color", "--tail", "60", *services, check=False).stdout[-6000:]

    @property
    def mlflow_uri(self) -> str:
        return f"http://127.0.0.1:{self.ports['MLFLOW_HOST_PORT']}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    problem = _engine_problem()
    if problem:
        pytest.skip(problem)
    start = time.monotonic()
    built = subprocess.run([str(REPO / "docker" / "local-images.sh")], capture_output=True, text=True, timeout=3600)
    assert built.returncode == 0, built.stderr[-4000:]
    print(f"\nlocal images ready in {time.monotonic() - start:.0f} s:\n{built.stderr.strip()}")
    stack = Stack(tmp_path_factory.mktemp("docker-stack"))
    try:
        yield stack
    finally:
        stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "30", check=False)


def _trial_runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name("convscope")
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], "tags.`convscope.kind` = 'trial'")


def test_the_compose_stack_runs_a_study_and_cleans_up(stack: Stack) -> None:
    phases = Phases()
    stack.compose("up", "--detach", "--no-build", "--scale", "worker=2", timeout=900)
    phases.done("up")
    stack.wait_healthy(["postgres", "mlflow", "tensorboard", "optuna-dashboard"])
    phases.done("healthy")
    assert stack.wait_exited("study-init", 300) == [0], stack.logs("study-init")
    assert stack.wait_exited("worker", 900) == [0, 0], stack.logs("worker")
    phases.done(f"{TRIALS} trials on 2 workers")

    client = MlflowClient(stack.mlflow_uri)
    runs = _trial_runs(client)
    numbers = sorted(int(run.data.tags["optuna.trial"]) for run in runs)
    assert numbers == list(range(TRIALS)), numbers  # every trial once
    assert all(run.info.status == "FINISHED" for run in runs), [run.info.status for run in runs]
    assert len({run.data.tags["mlflow.parentRunId"] for run in runs}) == 2  # one parent run per worker
    images = [a.path for a in client.list_artifacts(runs[0].info.run_id, "images") if a.path.endswith(".png")]
    assert images, "no images logged"
    status, png = http_get(artifact_url(stack.mlflow_uri, runs[0].info.artifact_uri, images[0]))
    assert status == 200 and png.startswith(b"\x89PNG"), status
    status, body = http_get(f"http://127.0.0.1:{stack.ports['OPTUNA_DASHBOARD_HOST_PORT']}/api/studies")
    summaries = {s["study_name"]: s for s in json.loads(body)["study_summaries"]}
    assert status == 200 and STUDY in summaries
    status, body = http_get(f"http://127.0.0.1:{stack.ports['TENSORBOARD_HOST_PORT']}/data/environment")
    assert status == 200, body[:300]
    champion = client.get_model_version_by_alias(STUDY, "champion")  # the study's best, in the server's registry
    assert champion.run_id in {run.info.run_id for run in runs}, champion.run_id
    phases.done("checks")

    stack.study(synthetic_size=4000, epochs=30)  # trials long enough to be stopped in the middle
    more = {"CONVSCOPE_TRIALS": str(TRIALS + 2)}
    stack.compose("up", "--detach", "--no-build", "--scale", "worker=1", "worker", timeout=600, **more)
    deadline = time.monotonic() + 300
    while not [run for run in _trial_runs(client) if run.info.status == "RUNNING"]:
        assert time.monotonic() < deadline, "no trial started\n" + stack.logs("worker")
        time.sleep(2)
    check = stack.compose("exec", "-T", "worker", "convscope", "search", "--check", check=False, **more)
    assert check.returncode == 0, check.stdout + check.stderr  # the worker's healthcheck, in its container
    stack.compose("stop", "worker", timeout=300, **more)
    phases.done("stop during a trial")
    stopped = [run for run in _trial_runs(client) if int(run.data.tags["optuna.trial"]) >= TRIALS]
    assert stopped and all(run.info.status == "KILLED" for run in stopped), [r.info.status for r in stopped]

    stack.study(synthetic_size=400, epochs=1)
    stack.compose("up", "--detach", "--no-build", "--scale", "worker=1", "worker", timeout=600, **more)
    assert stack.wait_exited("worker", 600) == [0], stack.logs("worker")
    phases.done("resume")
    finished = [run for run in _trial_runs(client) if run.info.status == "FINISHED"]
    assert len(finished) == TRIALS + 2, [(r.data.tags["optuna.trial"], r.info.status) for r in _trial_runs(client)]

    servers = ["mlflow", "tensorboard", "optuna-dashboard"]
    stack.compose("stop", "--timeout", "30", *servers, timeout=300)  # docker stop: SIGTERM, SIGKILL after 30 s
    phases.done("stop the servers")
    for service in servers:  # each ended on the SIGTERM (a SIGKILL after the grace period exits 137)
        assert [stack.state(c)["ExitCode"] for c in stack.containers(service)] != [137], stack.logs(service)
    stack.compose("down", "--volumes", "--timeout", "30", timeout=300)
    phases.done("down -v")
    left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={stack.project}"],
                          capture_output=True, text=True).stdout.split()
    volumes = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={stack.project}"],
                             capture_output=True, text=True).stdout.split()
    assert left == [] and volumes == [], (left, volumes)
    print(f"\ncompose stack phases: {phases.report()}")
