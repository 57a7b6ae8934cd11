"""``convscope depth --study NAME`` studies the network the study found: every setting of the best
trial's network, data and training recipe, searched and fixed alike, reaches the depth study's
folds; the depth command's own machine and tracking settings stay its own."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from convscope.cli.depth_cmd import build_depth_settings
from convscope.cli.main import build_parser
from convscope.search.objective import TRIAL_CONFIG_ATTR, trained_settings
from convscope.search.space import SETTINGS, NOT_SAMPLED
from convscope.train.config import build_config, flatten
from convscope.train.config_sections import MACHINE_SETTINGS, SECTIONS
from e2e_helpers import convscope

FIXED = ["--head", "gap", "--label-smoothing", "0.15", "--image-size", "48"]
SET_BY_THE_DEPTH_STUDY = {"model.depth", "model.widths", "data.folds", "data.fold"}


@pytest.fixture(scope="module")
def study_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("study") / "runs"
    done = convscope("search", "--study-name", "s", "--preset", "tiny", *FIXED, "--trials", "2", "--epochs", "1",
                     "--synthetic-size", "200", "--no-tensorboard", "--no-visuals", "--runs-dir", str(runs), "--quiet")
    assert done.returncode == 0, done.stderr
    return runs


def test_every_searchable_setting_is_recorded_with_the_trial() -> None:
    """What a trial records holds every setting a study can search (a new searchable setting must be
    carried over to ``depth --study`` without another list to update)."""
    trained = trained_settings(build_config("seed"))
    recorded = {f"{section}.{key}" for section, values in trained.items() if isinstance(values, dict) for key in values}
    searchable = {name for name in SETTINGS if name not in NOT_SAMPLED and name != "layer_width"}
    fields = {key.rsplit(".", 1)[1] for key in recorded}
    assert searchable <= fields, searchable - fields
    for section, names in MACHINE_SETTINGS.items():
        assert not {f"{section}.{name}" for name in names} & recorded


def test_depth_study_takes_the_best_trials_whole_network_and_data_settings(study_runs: Path) -> None:
    flags = ["depth", "--study", "s", "--runs-dir", str(study_runs), "--no-mlflow", "--folds", "2"]
    settings = build_depth_settings(build_parser().parse_args(flags))
    import optuna

    from convscope.search.storage import open_storage, resolve_storage

    study = optuna.load_study(study_name="s", storage=open_storage(resolve_storage(study_runs)))
    best = max((t for t in study.trials if t.value is not None), key=lambda t: t.value)
    trained = best.user_attrs[TRIAL_CONFIG_ATTR]
    expected = {f"{section}.{key}": value for section, values in trained.items() if section in SECTIONS
                for key, value in values.items()}
    assert expected["model.head"] == "gap" and expected["optim.label_smoothing"] == 0.15
    assert expected["model.image_size"] == 48
    for variant in settings.variants:
        got = flatten(variant.config)
        for key, value in expected.items():
            if key in SET_BY_THE_DEPTH_STUDY:
                continue
            shown = ",".join(str(v) for v in value) if isinstance(value, list) else value
            assert got[key] == shown, (key, got[key], shown)
        assert got["tracking.mlflow"] is False  # the depth command's own tracking settings
    assert "best trial" in settings.source


def test_explicit_flags_win_over_the_trials_settings(study_runs: Path) -> None:
    flags = ["depth", "--study", "s", "--runs-dir", str(study_runs), "--no-mlflow", "--label-smoothing", "0.05"]
    settings = build_depth_settings(build_parser().parse_args(flags))
    assert {v.config.optim.label_smoothing for v in settings.variants} == {0.05}
    assert {v.config.model.head for v in settings.variants} == {"gap"}


@pytest.mark.slow
def test_the_depth_studys_fold_runs_log_the_trials_settings(study_runs: Path) -> None:
    done = convscope("depth", "--study", "s", "--runs-dir", str(study_runs), "--folds", "2", "--max-depth", "2",
                     "--no-tensorboard", "--name", "from-study")
    assert done.returncode == 0, done.stderr
    client = MlflowClient(f"sqlite:///{study_runs / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("convscope")
    folds = client.search_runs([experiment.experiment_id], "tags.`mlflow.parentRunId` != ''")
    folds = [run for run in folds if run.info.run_name.startswith("from-study")]
    assert len(folds) == 4
    for run in folds:
        path = client.download_artifacts(run.info.run_id, "config.yaml", str(study_runs.parent))
        config = yaml.safe_load(Path(path).read_text())
        assert config["model"]["head"] == "gap" and config["model"]["image_size"] == 48
        assert config["optim"]["label_smoothing"] == 0.15
