"""Where a depth study's network comes from: a trained run's config, or a study's best trial."""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import yaml

from convscope.search.space import params_text
from convscope.train.config import from_dict, to_dict
from convscope.train.config_sections import SECTIONS, RunConfig
from convscope.train.config_file import merge
from convscope.train.errors import ConfigError


MODEL_CONFIG_ARTIFACTS = ("model/artifacts/config.json", "model/config.json")
"""Where a finished run's config is: in its MLflow model, or (runs made before) beside the weights."""


def run_config(command: RunConfig, run_id: str, flag: str = "--ablate") -> RunConfig:
    """The RunConfig a run trained: its MLflow model's config (a finished run), else its
    ``config.yaml`` artifact (logged when the run starts). Errors name ``flag``."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from convscope.tracking.mlflow_sink import CONFIG_ARTIFACT
    from convscope.tracking.stores import require_runs, resolve_stores

    stores = resolve_stores(command.tracking.runs_dir, command.tracking.mlflow_uri)
    require_runs(stores, f"{flag} {run_id}")
    client = MlflowClient(stores.mlflow_uri)
    try:
        client.get_run(run_id)
    except MlflowException as error:
        raise ConfigError(f"{flag} {run_id}: no such run in {stores.mlflow_uri} "
                          f"({str(error).splitlines()[0]})") from None
    with tempfile.TemporaryDirectory() as tmp:
        for saved in MODEL_CONFIG_ARTIFACTS:
            try:
                path = client.download_artifacts(run_id, saved, tmp)
                return from_dict(json.loads(Path(path).read_text())["config"])
            except Exception:  # no model artifact (a run that did not finish): the config it started with
                pass
        try:
            path = client.download_artifacts(run_id, CONFIG_ARTIFACT, tmp)
        except Exception:
            raise ConfigError(f"{flag} {run_id}: the run has neither a model/config.json nor a {CONFIG_ARTIFACT} "
                              "artifact; give a run made by convscope train or search") from None
        return from_dict(yaml.safe_load(Path(path).read_text()) or {})


def study_config(base: RunConfig, name: str, storage_url: str,
                 overrides: dict[str, dict[str, Any]] | None = None) -> tuple[RunConfig, tuple[int, ...], str]:
    """The network and data settings of study ``name``'s best trial, searched and fixed alike, on
    ``base``'s machine and tracking settings, with ``overrides`` (the flags the user gave) on top;
    and its per-layer widths, if any.

    A trial records what it trained (``search.objective.trained_settings``); a trial of a study
    made before it did is rebuilt from its parameters on ``base``, which then supplies every
    setting the study did not search."""
    import optuna

    from convscope.search.objective import TRIAL_CONFIG_ATTR
    from convscope.search.storage import open_storage, resolve_storage
    from convscope.search.study import best_trial

    storage = resolve_storage(Path(base.tracking.runs_dir), storage_url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(storage))
    except KeyError:
        raise ConfigError(f"--study {name}: no such study in {storage.display} (give --storage where it lives)") from None
    best = best_trial(study)
    if best is None:
        raise ConfigError(f"--study {name}: the study has no completed trial yet")
    trained = best.user_attrs.get(TRIAL_CONFIG_ATTR)
    if isinstance(trained, dict):
        whole = to_dict(base)
        sections = merge({s: whole[s] for s in SECTIONS}, {s: v for s, v in trained.items() if s in SECTIONS},
                         overrides or {})
        config = from_dict({**sections, "preset": trained.get("preset", base.preset)})
    else:
        config = _from_params(best, base)
    return config, tuple(config.model.widths), f"study {name!r}, best trial #{best.number} ({params_text(best.params)})"


def _from_params(trial: Any, base: RunConfig) -> RunConfig:
    """A trial's config rebuilt from its parameters and the study's own ranges, on ``base``."""
    from convscope.search.space import NOT_SAMPLED, SETTINGS, IntRange, SearchSpace, config_from_params

    params, drawn = trial.params, {name: _spec(d) for name, d in trial.distributions.items()}
    plain = [key for key in SETTINGS if key not in (*NOT_SAMPLED, "depth", "widths", "layer_width")]
    space = SearchSpace(  # the study's own ranges (a value outside today's defaults must still fit)
        depth=IntRange(1, None) if "depth" in params else None,  # up to what fits this run's image size
        widths="per-layer" if "width_1" in params else "growth", layer_width=drawn.get("width_1"),
        # the defaults' ranges would draw what the trial never did: only the study's own ones count
        **{key: drawn.get(key) for key in plain},
    )
    with warnings.catch_warnings():  # FixedTrial warns when the best depth is above what fits: validate says more
        warnings.simplefilter("ignore")
        return config_from_params(params, space, base)


def _spec(distribution: Any) -> Any:
    """An Optuna distribution as a search-space spec."""
    from optuna.distributions import FloatDistribution, IntDistribution

    from convscope.search.space import Choice, FloatRange, IntRange

    if isinstance(distribution, IntDistribution):
        return IntRange(distribution.low, distribution.high, distribution.log, distribution.step)
    if isinstance(distribution, FloatDistribution):
        return FloatRange(distribution.low, distribution.high, distribution.log)
    return Choice(tuple(distribution.choices))
