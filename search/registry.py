"""A study's networks in the MLflow Model Registry: one version per trial that improved on every
trial before it (in trial order), the alias ``champion`` on the best, the trial's number, metric and
run link as version tags. Registering again adds only the versions that are new, so a continued
study (or another worker's) keeps one registered model whose versions tell its progress."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from convscope.train.mlflow_model import MODEL_ARTIFACT

CHAMPION = "champion"


def improving_trials(trials: Sequence[optuna.trial.FrozenTrial], direction: str) -> list[optuna.trial.FrozenTrial]:
    """The completed trials, in number order, that beat every completed trial before them."""
    better: Callable[[float, float], bool] = (lambda a, b: a > b) if direction == "maximize" else (lambda a, b: a < b)
    kept: list[optuna.trial.FrozenTrial] = []
    for trial in sorted(trials, key=lambda t: t.number):
        if trial.state != TrialState.COMPLETE or trial.value is None or "mlflow_run_id" not in trial.user_attrs:
            continue
        if not kept or better(trial.value, kept[-1].value or 0.0):
            kept.append(trial)
    return kept


def register_study_models(client: Any, name: str, study: optuna.Study, metric: str, direction: str) -> str | None:
    """Register the improving trials' models under ``name`` and point ``champion`` at the best; the
    champion's version, or None when no trial completed with a model."""
    from mlflow.exceptions import MlflowException

    improving = improving_trials(study.get_trials(deepcopy=False), direction)
    if not improving:
        return None
    try:
        client.create_registered_model(name, description=f"the best networks of the convscope study {study.study_name!r}")
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    known = {version.run_id: version for version in client.search_model_versions(f"name = '{name}'")}
    champion = None
    for trial in improving:
        run_id = trial.user_attrs["mlflow_run_id"]
        version = known.get(run_id)
        if version is None:
            tags = {"optuna.study": study.study_name, "optuna.trial": str(trial.number), metric: f"{trial.value:.6g}"}
            if "mlflow_run_url" in trial.user_attrs:
                tags["run_url"] = trial.user_attrs["mlflow_run_url"]
            version = client.create_model_version(name, source=f"runs:/{run_id}/{MODEL_ARTIFACT}", run_id=run_id,
                                                  tags=tags)
        champion = version
    assert champion is not None
    first = _first_versions(client, name, {version.run_id for version in known.values()})
    version_number = first.get(champion.run_id, champion.version)
    client.set_registered_model_alias(name, CHAMPION, version_number)
    return str(version_number)


def _first_versions(client: Any, name: str, known_runs: set[str]) -> dict[str, str]:
    """Each run's first version of ``name``. Workers of one study finishing together can register the
    same run twice: the later copies that this call made (runs not registered before it) are deleted,
    so every worker settles on the same versions."""
    from mlflow.exceptions import MlflowException

    by_run: dict[str, list[int]] = {}
    for version in client.search_model_versions(f"name = '{name}'"):
        by_run.setdefault(version.run_id, []).append(int(version.version))
    for run_id, numbers in by_run.items():
        if run_id in known_runs:
            continue
        for number in sorted(numbers)[1:]:
            try:
                client.delete_model_version(name, str(number))
            except MlflowException as error:  # another worker deleted it first
                if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
    return {run_id: str(min(numbers)) for run_id, numbers in by_run.items()}
