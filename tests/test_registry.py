"""A study registers its best networks: one Model Registry version per improving trial, the alias
``champion`` on the best, and ``models:/<study>@champion`` loads and predicts; ``mlflow models
serve`` answers a request for it (a real server on a free port)."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
from mlflow import MlflowClient

from convscope.search.registry import CHAMPION, improving_trials
from convscope.search.storage import open_storage, resolve_storage
from convscope.servers.servers import free_port, start_process_group, stop_process_group, wait_for_http
from e2e_helpers import convscope


def _trial(number: int, value: float | None, state: optuna.trial.TrialState = optuna.trial.TrialState.COMPLETE):
    return optuna.trial.create_trial(state=state, value=value, params={}, distributions={},
                                     user_attrs={"mlflow_run_id": f"run{number}"}) if value is not None else \
        optuna.trial.create_trial(state=state, params={}, distributions={}, user_attrs={"mlflow_run_id": f"run{number}"})


def test_improving_trials_are_those_that_beat_every_earlier_one() -> None:
    trials = [_trial(0, 0.6), _trial(1, 0.55), _trial(2, 0.7), _trial(3, None, optuna.trial.TrialState.PRUNED),
              _trial(4, 0.7), _trial(5, 0.8)]
    for number, trial in enumerate(trials):
        trial.number = number
    assert [t.number for t in improving_trials(trials, "maximize")] == [0, 2, 5]
    assert [t.number for t in improving_trials(trials, "minimize")] == [0, 1]


@pytest.fixture(scope="module")
def study_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("registry") / "runs"
    done = convscope("search", "--study-name", "pets", "--preset", "tiny", "--image-size", "32", "--trials", "3",
                     "--epochs", "1", "--synthetic-size", "200", "--no-tensorboard", "--no-visuals",
                     "--pruner", "none", "--runs-dir", str(runs))
    assert done.returncode == 0, done.stderr
    assert "best network: models:/pets@champion" in done.stdout, done.stdout
    return runs


def test_the_study_registers_its_improving_trials_with_a_champion(study_runs: Path) -> None:
    uri = f"sqlite:///{study_runs / 'mlflow.db'}"
    client = MlflowClient(uri)
    study = optuna.load_study(study_name="pets", storage=open_storage(resolve_storage(study_runs)))
    expected = improving_trials(study.trials, "maximize")
    versions = sorted(client.search_model_versions("name = 'pets'"), key=lambda v: int(v.version))
    assert [v.run_id for v in versions] == [t.user_attrs["mlflow_run_id"] for t in expected]
    champion = client.get_model_version_by_alias("pets", CHAMPION)
    assert champion.run_id == study.best_trial.user_attrs["mlflow_run_id"]
    assert champion.tags["optuna.trial"] == str(study.best_trial.number) and "val/accuracy" in champion.tags
    mlflow.set_tracking_uri(uri)
    try:
        predicted = mlflow.pyfunc.load_model(f"models:/pets@{CHAMPION}").predict(np.zeros((2, 50, 40, 3), np.uint8))
    finally:
        mlflow.set_tracking_uri("")
    assert predicted.shape == (2, 2) and np.allclose(predicted.sum(axis=1), 1)


@pytest.mark.slow
def test_mlflow_models_serve_answers_for_the_champion(study_runs: Path, tmp_path: Path) -> None:
    port = free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{study_runs / 'mlflow.db'}",
           "PATH": f"{mlflow_cli.parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # it execs uvicorn from PATH
    proc = start_process_group([str(mlflow_cli), "models", "serve", "-m", f"models:/pets@{CHAMPION}",
                                "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
                               tmp_path / "serve.log", env=env)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", timeout=180, proc=proc, log_path=tmp_path / "serve.log")
        body = json.dumps({"inputs": np.zeros((1, 32, 32, 3), np.uint8).tolist()}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
    finally:
        stop_process_group(proc)
    (row,) = answer["predictions"]
    assert set(row) == {"horizontal", "vertical"} and abs(sum(row.values()) - 1) < 1e-5


def test_two_workers_registering_at_once_settle_on_one_version_per_run(tmp_path: Path) -> None:
    """Another worker registers the same improving trial between this worker's look and its own
    registration: the later copy is deleted and both point the champion at the first."""
    from convscope.search.registry import register_study_models

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("e")
    run_ids = [client.create_run(experiment).info.run_id for _ in range(2)]
    study = optuna.create_study(direction="maximize", study_name="s")
    for run_id, value in zip(run_ids, (0.6, 0.7)):
        study.add_trial(optuna.trial.create_trial(value=value, params={}, distributions={},
                                                  user_attrs={"mlflow_run_id": run_id}))

    class RacingClient:
        """The real client, but another worker registers each run just before this one does."""

        def __getattr__(self, name: str):
            return getattr(client, name)

        def create_model_version(self, name: str, **kwargs):
            client.create_model_version(name, **kwargs)
            return client.create_model_version(name, **kwargs)

    version = register_study_models(RacingClient(), "s", study, "val/accuracy", "maximize")
    versions = client.search_model_versions("name = 's'")
    assert sorted((v.run_id, int(v.version)) for v in versions) == sorted([(run_ids[0], 1), (run_ids[1], 3)])
    assert version == "3" and str(client.get_model_version_by_alias("s", CHAMPION).version) == "3"
