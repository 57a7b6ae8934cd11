"""End-of-study report on an in-memory study: figures, and the best-trials table."""

from __future__ import annotations

import logging

import os

os.environ["MPLBACKEND"] = "Agg"

import csv  # noqa: E402
import io  # noqa: E402
import warnings  # noqa: E402

import matplotlib  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from optuna.exceptions import ExperimentalWarning  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from convscope.search.report import FIGURE_NAMES, best_trials_table, close_figures, study_figures  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.ERROR)

DEPTHS = [3, 5, 2, 4, 1, 6]  # trial 2 is pruned, trial 4 fails


def objective(trial: optuna.Trial) -> float:
    depth = trial.suggest_int("depth", 1, 6)
    dropout = trial.suggest_float("dropout", 0.0, 0.5)
    trial.set_user_attr("mlflow_run_id", f"run-{trial.number}")
    if trial.number != 3:
        trial.set_user_attr("tensorboard_dir", f"tb/trial_{trial.number:04d}")
    for epoch in range(3):
        trial.report(depth * 0.1 + epoch * 0.01, epoch)
    if trial.number == 2:
        raise optuna.TrialPruned()
    if trial.number == 4:
        raise RuntimeError("boom")
    return depth * 0.1 - dropout * 0.01


@pytest.fixture
def study() -> optuna.Study:
    """Six trials with fixed params (maximize): 4 complete, 1 pruned, 1 failed."""
    study = optuna.create_study(direction="maximize", study_name="report")
    for depth in DEPTHS:
        study.enqueue_trial({"depth": depth, "dropout": 0.1})
    study.optimize(objective, n_trials=len(DEPTHS), catch=(RuntimeError,))
    states = [t.state for t in study.trials]
    assert states.count(TrialState.PRUNED) == 1 and states.count(TrialState.FAIL) == 1
    return study


def test_figures_have_every_plot_and_close(study: optuna.Study) -> None:
    style_before = matplotlib.rcParams["axes.facecolor"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExperimentalWarning)  # silenced inside study_figures
        figures = study_figures(study)
    assert tuple(figures) == FIGURE_NAMES
    assert all(isinstance(figure, Figure) and figure.axes for figure in figures.values())
    assert set(plt.get_fignums()) >= {figure.number for figure in figures.values()}
    assert matplotlib.rcParams["axes.facecolor"] == style_before  # optuna's ggplot style stays inside
    close_figures(figures)
    assert not set(plt.get_fignums()) & {figure.number for figure in figures.values()}


def test_importances_skipped_for_one_trial() -> None:
    study = optuna.create_study()
    study.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0), n_trials=1)
    figures = study_figures(study)
    assert set(figures) == {"optimization_history", "parallel_coordinate"}  # nothing reported either
    close_figures(figures)


def test_importances_skipped_when_no_param_varies() -> None:
    study = optuna.create_study()
    for _ in range(3):
        study.enqueue_trial({"x": 0.5})
    study.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0), n_trials=3)
    figures = study_figures(study)
    assert "param_importances" not in figures and "optimization_history" in figures
    close_figures(figures)


def test_importances_skipped_when_every_trial_ties() -> None:
    """Optuna's evaluator warns "Parameter importances will be equal" when its top quantiles hold the
    same trials (all tied): no such figure, and no warning on the console."""
    study = optuna.create_study(direction="maximize")
    for x in (0.1, 0.5, 0.9, 0.3):
        study.enqueue_trial({"x": x})
    study.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0) * 0 + 0.5, n_trials=4)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        figures = study_figures(study)
    assert "param_importances" not in figures and "optimization_history" in figures
    assert not [w for w in said if "importances will be equal" in str(w.message)]
    close_figures(figures)


def test_empty_study_has_no_figures() -> None:
    assert study_figures(optuna.create_study()) == {}


def test_a_study_of_interrupted_trials_draws_nothing_and_warns_nothing(caplog: pytest.LogCaptureFixture) -> None:
    study = optuna.create_study()

    def interrupted(trial: optuna.Trial) -> float:
        trial.report(0.5, 1)  # an epoch reported, then Ctrl-C: the trial ends FAIL
        raise RuntimeError("stopped")

    study.optimize(interrupted, n_trials=2, catch=(RuntimeError,))
    optuna.logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING, logger="optuna"):
            assert study_figures(study) == {}
    finally:
        optuna.logging.disable_propagation()
    assert not [r.getMessage() for r in caplog.records if "does not contain trials" in r.getMessage()]


def test_best_trials_table_orders_and_excludes_pruned_and_failed(study: optuna.Study) -> None:
    csv_text, markdown = best_trials_table(study, top=3)
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert [int(row["number"]) for row in rows] == [5, 1, 3]  # depths 6, 5, 4; top 3
    assert [row["rank"] for row in rows] == ["1", "2", "3"]
    assert {row["state"] for row in rows} == {"COMPLETE"}
    assert float(rows[0]["value"]) == pytest.approx(0.6 - 0.001)
    assert rows[0]["params_depth"] == "6" and rows[0]["params_dropout"] == "0.1"
    assert rows[0]["mlflow_run_id"] == "run-5" and rows[0]["tensorboard_dir"] == "tb/trial_0005"
    assert rows[2]["tensorboard_dir"] == ""  # trial 3 has no such attr
    assert all(float(row["duration_s"]) >= 0 for row in rows)

    full, _ = best_trials_table(study)
    numbers = [int(row["number"]) for row in csv.DictReader(io.StringIO(full))]
    assert numbers == [5, 1, 3, 0]  # pruned 2 and failed 4 never listed

    lines = markdown.splitlines()
    assert lines[0].startswith("| rank | number | value | state | duration_s | params_depth | params_dropout")
    assert len(lines) == 2 + 3 and lines[2].startswith("| 1 | 5 | 0.599 | COMPLETE |")


def test_best_trials_table_minimize_and_bad_top() -> None:
    study = optuna.create_study(direction="minimize")
    for x in [0.3, 0.1, 0.2]:
        study.enqueue_trial({"x": x})
    study.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0), n_trials=3)
    csv_text, _ = best_trials_table(study)
    assert [row["number"] for row in csv.DictReader(io.StringIO(csv_text))] == ["1", "2", "0"]
    assert "mlflow_run_id" not in csv_text.splitlines()[0]
    with pytest.raises(ValueError, match="top"):
        best_trials_table(study, top=0)


@pytest.mark.parametrize("trials,legend", [(3, True), (20, False)])
def test_the_curves_plot_drops_a_legend_of_more_trials_than_can_be_read(trials: int, legend: bool) -> None:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for number in range(trials):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        for step in range(1, 4):
            trial.report(0.1 * step + 0.01 * number, step)
        study.tell(trial, 0.3 + 0.01 * number)
    figures = study_figures(study)
    try:
        axes = figures["intermediate_values"].axes[0]
        assert (axes.get_legend() is not None) is legend
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "Tight layout not applied" from a legend taller than the figure
            figures["intermediate_values"].savefig(io.BytesIO(), format="png")
    finally:
        close_figures(figures)
