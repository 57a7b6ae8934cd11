"""What ``MODEL`` names on the command line (``evaluate``, ``inspect``): a run id, a ``models:/`` or
``runs:/`` URI, or a study's name (its registered champion), and the network of that MLflow model."""

from __future__ import annotations

import re
from typing import Any

from convscope.train.errors import ConfigError

RUN_ID = re.compile(r"[0-9a-f]{32}")
MODEL_HELP = "run id, models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model, or a study name (its champion)"


def model_uri(spec: str) -> str:
    """The MLflow model URI ``MODEL`` names (see ``--help``)."""
    spec = spec.strip()
    if not spec:
        raise ConfigError("MODEL is empty: give a run id, a models:/ URI or a study name")
    if spec.startswith(("models:/", "runs:/")):
        return spec
    if RUN_ID.fullmatch(spec):
        return f"runs:/{spec}/model"
    return f"models:/{spec}@champion"


def load_network(uri: str, tracking_uri: str) -> Any:
    """The network of the MLflow model at ``uri``; ConfigError in one line when there is none."""
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri)
    try:
        model = mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        hint = ("a run that is still training or did not finish has no model yet" if uri.startswith("runs:/")
                else "a study registers its champion when it ends; check the name with MLflow's Models page")
        raise ConfigError(f"MODEL {uri}: no MLflow model there ({first[:160]}); {hint}") from None
    network = getattr(model.unwrap_python_model(), "network", None)
    if network is None:
        raise ConfigError(f"MODEL {uri}: not a convscope model")
    return network


def model_run_id(uri: str, tracking_uri: str) -> str | None:
    """The run that logged the model at ``uri`` (a registry version knows it), or None."""
    if uri.startswith("runs:/"):
        return uri.split("/")[1]
    from mlflow import MlflowClient

    name, _, rest = uri.removeprefix("models:/").partition("/")
    client = MlflowClient(tracking_uri)
    try:
        if "@" in name:
            name, alias = name.split("@", 1)
            return client.get_model_version_by_alias(name, alias).run_id
        return client.get_model_version(name, rest).run_id if rest else None
    except Exception:  # noqa: BLE001 - no run to attach to is an answer here
        return None
