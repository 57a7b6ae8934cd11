"""A time-boxed study's final training: the best trial's network trained again on train+validation in
the share of the budget kept for it, registered as the champion and scored on the test split."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow import MlflowClient

from convscope.cli.main import build_parser, parse
from convscope.cli.search_cmd import build_settings
from convscope.search.defaults import FOLDER_FINAL_SHARE
from convscope.search.final_training import (
    FINAL_VAL_FRACTION, MAX_EPOCH_FACTOR, final_config, final_train_images, plan_final)
from convscope.train.config import build_config
from convscope.train.errors import ConfigError
from e2e_helpers import convscope


def test_the_plan_fills_the_time_left_with_epochs_of_the_larger_split() -> None:
    plan, why = plan_final(3, "r", 8, [10.0, 12.0, 11.0], (800, final_train_images(800, 200, 0.2, False)),
                           seconds_left=400)
    assert why == "" and plan is not None
    per_epoch = 11.0 * (1 - FINAL_VAL_FRACTION) / 0.8  # the median epoch, on 95% instead of 80% of the photos
    assert plan.epoch_seconds == pytest.approx(per_epoch) and plan.epochs == 27  # 90% of 400 s
    assert "trial #3's network again on train+validation for 27 epochs (about 5m53s of the 6m40s left)" in plan.line(400)


def test_the_plan_is_capped_and_refuses_when_one_trainings_worth_is_not_left() -> None:
    capped, _ = plan_final(0, "r", 5, [1.0], (800, 950), seconds_left=3600)
    assert capped is not None and capped.epochs == MAX_EPOCH_FACTOR * 5
    none, why = plan_final(2, "r", 10, [30.0], (800, 950), seconds_left=200)
    assert none is None and why.startswith("no final training: 10 epochs of trial #2's network") and \
        "the best trial stays the champion" in why
    faster, _ = plan_final(0, "r", 8, [10.0], (800, 950), seconds_left=300, speedup=1.25)
    assert faster is not None and faster.epochs == int(0.9 * 300 / (10.0 * 0.95 / 0.8 / 1.25)) == 28
    nothing, why = plan_final(2, "r", 10, [], (800, 950), seconds_left=2000)
    assert nothing is None and "recorded no epoch times" in why


def test_the_final_run_trains_on_the_photos_the_trial_split_was_drawn_from() -> None:
    assert final_train_images(800, 200, 0.2, limited=False) == 950  # 95% of train + validation
    assert final_train_images(300, 200, 0.2, limited=True) == 950  # --train-limit 300 of 800: all 1,000 again
    plan, _ = plan_final(0, "r", 2, [3.0], (300, 950), seconds_left=60)
    assert plan is not None and plan.epoch_seconds == pytest.approx(3.0 * 950 / 300)


def test_the_final_config_keeps_the_network_and_the_test_split() -> None:
    trained = build_config("tiny", {"data": {"test_fraction": 0.1, "val_fraction": 0.25, "train_limit": 100,
                                             "cache_dir": "/elsewhere"},
                                    "optim": {"epochs": 6, "lr": 0.004, "patience": 2, "device": "cuda"},
                                    "model": {"depth": 2, "dropout": 0.2}})
    base = build_config("seed", {"tracking": {"runs_dir": "/runs"}, "data": {"cache_dir": "/cache"}})
    final = final_config(trained, base, "pets", 24)
    assert final.model == trained.model and final.optim.lr == 0.004 and final.data.test_fraction == 0.1
    assert (final.data.val_fraction, final.data.train_limit, final.optim.epochs, final.optim.patience) == \
        (FINAL_VAL_FRACTION, 0, 24, 0)
    assert (final.data.cache_dir, final.optim.device) == ("/cache", base.optim.device)  # this machine's
    assert (final.tracking.runs_dir, final.tracking.run_name) == ("/runs", "pets-final")


def _settings(*argv: str):  # type: ignore[no-untyped-def]
    return build_settings(parse(build_parser(), ["search", *argv]))


def test_final_share_defaults_and_bad_values(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    for name in ("cat", "dog"):
        (photos / name).mkdir(parents=True)
    runs = ["--runs-dir", str(tmp_path / "runs")]
    assert _settings(*runs, "--data", str(photos), "--timeout", "1h").final_share == FOLDER_FINAL_SHARE
    assert _settings(*runs, "--data", str(photos)).final_share == 0.0  # no budget: nothing to keep
    assert _settings(*runs, "--timeout", "1h").final_share == 0.0  # generated data: no final training
    timed = _settings(*runs, "--data", str(photos), "--timeout", "1h", "--final-share", "0.25")
    assert timed.final_share == 0.25 and timed.deadline == pytest.approx(timed.started + 2700)
    assert timed.budget_end == pytest.approx(timed.started + 3600)
    for argv, message in ((["--final-share", "0.3"], "--final-share needs --timeout"),
                          (["--timeout", "1h", "--final-share", "0.95"], r"--final-share must be in \[0, 0.9\)"),
                          (["--timeout", "1h", "--final-share", "0.3", "--no-mlflow"], "--final-share needs MLflow")):
        with pytest.raises(ConfigError, match=message):
            _settings(*runs, *argv)


@pytest.mark.slow
def test_a_timed_study_trains_its_best_network_again_and_hands_that_over(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    done = convscope("search", "--study-name", "pets", "--preset", "tiny", "--image-size", "32", "--trials", "2",
                     "--epochs", "2", "--synthetic-size", "400", "--no-tensorboard", "--pruner", "none",
                     "--test-fraction", "0.2", "--timeout", "1h", "--final-share", "0.5", "--runs-dir", str(runs))
    assert done.returncode == 0, done.stderr
    assert "(--final-share 0.5) train the best trial's network again on train+validation" in done.stdout
    planned = re.search(r"final training: trial #(\d+)'s network again on train\+validation for (\d+) epochs",
                        done.stdout)
    assert planned and int(planned.group(2)) == MAX_EPOCH_FACTOR * 2, done.stdout  # half an hour left: the cap
    assert re.search(rf"held-out test: the champion \(best trial #{planned.group(1)} trained again on "
                     rf"train\+validation for 8 epochs\) scores 0\.\d{{4}}", done.stdout), done.stdout
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("convscope")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`convscope.kind` = 'study'")
    (final,) = client.search_runs([experiment.experiment_id], "tags.`convscope.kind` = 'final'")
    assert final.info.status == "FINISHED" and final.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert final.data.tags["final_of_trial"] == planned.group(1) and final.data.params["epochs"] == "8"
    assert int(final.data.tags["data.val_images"]) == 16  # 5% of the 320 photos left beside the test split
    champion = client.get_model_version_by_alias("pets", "champion")
    assert champion.run_id == final.info.run_id == parent.data.tags["final_run_id"]
    assert champion.tags["test/accuracy"] == f"{parent.data.metrics['test/accuracy']:.6g}"
    assert parent.data.metrics["study/trials_per_hour"] > 0  # 2 trials over the time the trials took
    page = Path(client.download_artifacts(parent.info.run_id, "study/champion.md", str(tmp_path)))
    text = page.read_text()
    assert text.startswith("# The study's champion: models:/pets@champion") and "held-out test: the champion" in text
    assert "Trials finished or pruned per hour" in text and "depth:" in text  # the settings it trained with
    assert not (runs / "checkpoints" / "convscope" / "pets-final").exists()  # its network is in MLflow
