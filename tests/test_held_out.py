"""A held-out test split: set aside before train and validation are drawn, the same photos whatever
``--seed``, never seen by a study's trials; the study's best network is scored on it once, at the end."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
import torch
from mlflow import MlflowClient
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from convscope.search.budget import RETRY_ATTR, STOPPED_ATTR, stopped_ahead
from convscope.train.config_sections import DataConfig
from convscope.train.splits import split_indices
from e2e_helpers import convscope


def test_the_test_split_is_stratified_disjoint_and_independent_of_the_seed() -> None:
    labels = torch.tensor([0] * 300 + [1] * 100)
    config = DataConfig(test_fraction=0.2, val_fraction=0.25)
    train, val, test = split_indices(labels, config, seed=1)
    assert test is not None and len(test) == 80 and int((labels[test] == 1).sum()) == 20
    assert len(set(train.tolist()) | set(val.tolist()) | set(test.tolist())) == 400  # disjoint, everything once
    assert len(val) == 80  # a quarter of the 320 left
    _, _, other_seed = split_indices(labels, config, seed=2)
    assert torch.equal(test, other_seed)  # --seed moves train/validation, never the test photos
    folds = [split_indices(labels, DataConfig(test_fraction=0.2, folds=4, fold=k), seed=1) for k in range(4)]
    assert all(torch.equal(f[2], test) for f in folds)
    assert sorted(i for f in folds for i in f[1].tolist()) == sorted(set(range(400)) - set(test.tolist()))
    assert split_indices(labels, DataConfig(), seed=1)[2] is None
    limited, _, kept_test = split_indices(labels, DataConfig(test_fraction=0.2, val_fraction=0.25, train_limit=100), seed=1)
    assert len(limited) == 100 and int((labels[limited] == 1).sum()) == 25 and torch.equal(kept_test, test)
    assert set(limited.tolist()) <= set(train.tolist())  # a sample of the same training split


def _study_with(stopped_value: float, best_value: float, retried: bool = False) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    x = FloatDistribution(0.0, 1.0)
    best = study.ask({"x": x})
    for epoch in range(1, 5):
        best.report(best_value * epoch / 4, epoch)
    study.tell(best, best_value)
    stopped = study.ask({"x": x})
    stopped.set_user_attr(STOPPED_ATTR, "the time budget (--timeout) ran out in epoch 2 of 4")
    for epoch in range(1, 3):
        stopped.report(stopped_value * epoch / 2, epoch)
    study.tell(stopped, state=TrialState.FAIL)
    if retried:
        again = study.ask({"x": x})
        again.set_user_attr(RETRY_ATTR, stopped.number)
        study.tell(again, 0.1)
    return study


def test_a_stopped_trial_ahead_of_the_best_at_the_same_epoch_is_named() -> None:
    ahead = _study_with(stopped_value=0.7, best_value=0.8)  # at epoch 2: 0.70 against 0.40
    (line,) = stopped_ahead(ahead, ahead.best_trial, "pets")
    assert line.startswith("trial #1, stopped by the time budget at epoch 2, was ahead of the best trial #0 at that "
                           "epoch (0.7000 against 0.4000): run the same convscope search --study-name pets")
    behind = _study_with(stopped_value=0.3, best_value=0.8)
    assert stopped_ahead(behind, behind.best_trial, "pets") == []
    finished = _study_with(stopped_value=0.7, best_value=0.8, retried=True)
    assert stopped_ahead(finished, finished.best_trial, "pets") == []


@pytest.mark.slow
def test_a_study_scores_its_best_network_on_the_test_split_once(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    done = convscope("search", "--study-name", "held", "--preset", "tiny", "--image-size", "32", "--trials", "2",
                     "--epochs", "2", "--synthetic-size", "400", "--no-tensorboard", "--no-visuals", "--pruner", "none",
                     "--test-fraction", "0.2", "--runs-dir", str(runs))
    assert done.returncode == 0, done.stderr
    assert "test split: 20% of every class set aside" in done.stdout
    match = re.search(r"held-out test: the champion \(best trial #(\d+)\) scores (0\.\d{4}) \(95% interval "
                      r"(0\.\d{4})–(\d\.\d{4})\) on 80 photos no trial saw; val/accuracy (0\.\d{4}) of trial #\1 on "
                      r"the validation split", done.stdout)
    assert match, done.stdout
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("convscope")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`convscope.kind` = 'study'")
    assert f"{parent.data.metrics['test/accuracy']:.4f}" == match.group(2)
    assert parent.data.metrics["test/images"] == 80
    trials = client.search_runs([experiment.experiment_id], "tags.`convscope.kind` != 'study'")
    assert trials and all(int(t.data.tags["data.train_images"]) + int(t.data.tags["data.val_images"]) == 320
                          for t in trials)  # the 80 test photos are in no trial's train or validation split
    champion = client.get_model_version_by_alias("held", "champion")
    assert champion.tags["test/accuracy"] == f"{parent.data.metrics['test/accuracy']:.6g}"
