"""A study's time budget (``--timeout``) and pruning that waits for the learning-rate warm-up."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from convscope.cli.main import build_parser, main
from convscope.cli.search_cmd import build_settings
from e2e_helpers import convscope
from convscope.search.budget import (
    INTERRUPTED_ATTR,
    RETRY_ATTR,
    STOPPED_ATTR,
    TimeBudgetSpent,
    counts,
    hide_budget_tracebacks,
    retry_stopped,
    run_line,
)
from convscope.train.durations import parse_timeout
from convscope.search.pruning import make_pruner, pruning_start, warmup_epochs
from convscope.search.report import best_over_time_figure, close_figures
from convscope.search.study import summary_line, trial_line

optuna.logging.set_verbosity(optuna.logging.ERROR)

TINY = ["--preset", "tiny", "--image-size", "32", "--synthetic-size", "256", "--batch-size", "64",
        "--analysis-size", "32"]
# --- --timeout -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [
    ("1h", 3600), ("90m", 5400), ("45s", 45), ("2h30m", 9000), ("3600", 3600), ("1h0m30s", 3630),
    ("1.5h", 5400), ("0.5", 0.5), (" 2M ", 120),
])
def test_timeout_values(text: str, seconds: float) -> None:
    assert parse_timeout(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["0", "-5", "0s", "abc", "", "h", "1d", "30m1h", "1h 30m", "inf", "nan", "1h2h"])
def test_timeout_errors_name_the_flag(text: str) -> None:
    from convscope.train.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^--timeout must be a duration above 0"):
        parse_timeout(text)


def test_bad_timeout_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    assert main(["search", "--runs-dir", str(tmp_path), "--timeout", "soon"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "--timeout" in err and "'soon'" in err and "Traceback" not in err
    monkeypatch.setenv("CONVSCOPE_TIMEOUT", "0")
    assert main(["search", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--timeout" in err and "CONVSCOPE_TIMEOUT" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "optuna").exists()  # refused before any store was written


def settings_for(runs: Path, *argv: str):  # type: ignore[no-untyped-def]
    return build_settings(build_parser().parse_args(["search", "--runs-dir", str(runs), *TINY, *argv]))


def test_timeout_makes_trials_unbounded_unless_given(tmp_path: Path, clean_env: None) -> None:
    before = time.time()
    budget = settings_for(tmp_path, "--timeout", "1h")
    assert budget.trials is None and budget.timeout == 3600
    assert budget.deadline == pytest.approx(budget.started + 3600) and before <= budget.started <= time.time()
    assert settings_for(tmp_path, "--timeout", "1h", "--trials", "20").trials == 20  # given: a total again
    plain = settings_for(tmp_path)
    assert (plain.trials, plain.timeout, plain.deadline) == (20, None, None)


# --- the warm-up rule and the pruner -----------------------------------------------------------

@pytest.mark.parametrize("epochs, schedule, steps, warmup", [
    (6, "onecycle", None, 2),  # the warm-up ends 1.5 epochs in
    (10, "onecycle", None, 3),
    (20, "onecycle", None, 5),
    (3, "onecycle", None, 1),
    (4, "onecycle", 1, 2),  # 4 steps in all: make_scheduler warms up for half of them
    (6, "cosine", None, 2),  # no warm-up, but never fewer than 2 epochs …
    (20, "constant", None, 5),  # … nor under a quarter of them
    (1, "cosine", None, 1),  # never more than the run
    (0, "onecycle", None, 0),
])
def test_warmup_epochs(epochs: int, schedule: str, steps: int | None, warmup: int) -> None:
    assert warmup_epochs(epochs, schedule, steps) == warmup


def test_pruning_start_line() -> None:
    assert pruning_start(6).describe() == "pruning (median) from epoch 3 of 6: the one-cycle warm-up ends at epoch 2"
    assert pruning_start(6, "cosine").first_epoch == 3
    short = pruning_start(2)
    assert not short.possible and short.describe().startswith("no pruning with 2 epochs")
    assert isinstance(make_pruner("median", 2), optuna.pruners.NopPruner)
    assert pruning_start(6).describe("none") == "no pruning (--pruner none)"


def curve(good: bool, epochs: int) -> list[float]:
    return [(0.5 if good else 0.1) + 0.05 * epoch for epoch in range(1, epochs + 1)]


@pytest.mark.parametrize("name", ["median", "hyperband"])
@pytest.mark.parametrize("epochs", [6, 10])
def test_a_weak_trial_is_not_pruned_in_the_warm_up_but_after_it(name: str, epochs: int) -> None:
    """Three good trials complete; a much worse one survives the one-cycle warm-up (2 epochs of
    6, 3 of 10) and is pruned at the first epoch after it."""
    first = {6: 3, 10: 4}[epochs]
    assert pruning_start(epochs).first_epoch == first
    study = optuna.create_study(direction="maximize", pruner=make_pruner(name, epochs, "onecycle"),
                                sampler=optuna.samplers.RandomSampler(seed=0))
    x = FloatDistribution(0.0, 1.0)
    for _ in range(3):
        trial = study.ask({"x": x})
        for epoch, value in enumerate(curve(True, epochs), start=1):
            trial.report(value, epoch)
            assert not trial.should_prune()
        study.tell(trial, curve(True, epochs)[-1])
    weak = study.ask({"x": x})
    verdicts = []
    for epoch, value in enumerate(curve(False, epochs)[:first], start=1):
        weak.report(value, epoch)
        verdicts.append(bool(weak.should_prune()))
    assert verdicts == [False] * (first - 1) + [True]


def test_the_median_pruner_spares_the_first_trials() -> None:
    study = optuna.create_study(direction="maximize", pruner=make_pruner("median", 6))
    for number in range(3):  # each worse than the last: still never pruned while fewer than 3 completed
        trial = study.ask({"x": FloatDistribution(0.0, 1.0)})
        for epoch in range(1, 7):
            trial.report(0.9 - 0.3 * number, epoch)
            assert not trial.should_prune()
        study.tell(trial, 0.9 - 0.3 * number)


@pytest.mark.parametrize(("gap", "images", "pruned"), [
    (0.02, 500, False),   # 0.02 behind the median on 500 images: inside the noise (SE of the gap ≈ 0.027)
    (0.10, 500, True),    # far behind
    (0.02, 20_000, True),  # the same gap on 20,000 images is beyond the noise
])
def test_the_median_pruner_does_not_cut_a_trial_inside_the_noise(gap: float, images: int, pruned: bool) -> None:
    from convscope.search.pruning import VAL_IMAGES_ATTR, gap_noise

    study = optuna.create_study(direction="maximize", pruner=make_pruner("median", 6, metric="val/accuracy"))
    x = FloatDistribution(0.0, 1.0)
    for _ in range(3):
        trial = study.ask({"x": x})
        for epoch in range(1, 7):
            trial.report(0.80, epoch)
        study.tell(trial, 0.80)
    behind = study.ask({"x": x})
    behind.set_user_attr(VAL_IMAGES_ATTR, images)
    for epoch in range(1, 4):
        behind.report(0.80 - gap, epoch)
    assert bool(behind.should_prune()) is pruned, gap_noise(0.8, images)
    loss = optuna.create_study(direction="minimize", pruner=make_pruner("median", 6, metric="val/loss"))
    assert isinstance(loss.pruner, optuna.pruners.MedianPruner)  # a loss has no binomial noise to account for


# --- stops by the budget: counting, retrying, quiet -------------------------------------------

def stopped_study() -> optuna.Study:
    """complete, pruned, failed, stopped by the budget (in that order)."""
    study = optuna.create_study(direction="maximize")
    x = FloatDistribution(0.0, 1.0)
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL):
        trial = study.ask({"x": x})
        if trial.number == 3:
            trial.set_user_attr(STOPPED_ATTR, "the time budget (--timeout) ran out in epoch 1 of 3")
        study.tell(trial, 0.5 if state == TrialState.COMPLETE else None, state=state)
    return study


def test_counts_and_the_run_line_tell_stops_from_failures() -> None:
    trials = stopped_study().trials
    assert counts(trials) == {"done": 1, "pruned": 1, "failed": 1, "stopped": 1, "interrupted": 0}
    line = run_line(trials, 75.0, 60.0)
    assert line == ("this run: wall time 1m15s of a 1m00s budget; 4 trials ended: 1 done, 1 pruned, 1 failed, "
                    "1 stopped by the time budget")


def test_a_trial_stopped_by_ctrl_c_is_interrupted_not_failed() -> None:
    study = stopped_study()
    trial = study.ask({"x": FloatDistribution(0.0, 1.0)})
    trial.set_user_attr(INTERRUPTED_ATTR, "Ctrl-C or SIGTERM")
    study.tell(trial, None, state=TrialState.FAIL)
    assert counts(study.trials) == {"done": 1, "pruned": 1, "failed": 1, "stopped": 1, "interrupted": 1}
    assert run_line(study.trials, 10.0, None).endswith("5 trials ended: 1 done, 1 pruned, 1 failed, "
                                                       "1 stopped by the time budget, 1 interrupted")
    assert summary_line(study).startswith("[done 1 | pruned 1 | failed 1 | stopped 1 | interrupted 1 | best #0")
    assert trial_line(study.trials[4]).startswith("trial   4 INTERRUPTED")
    assert retry_stopped(study) == [3, 4]  # the budget's stop and the interrupt's: both run again first


def test_a_stopped_trial_is_retried_once_with_its_parameters() -> None:
    study = stopped_study()
    assert retry_stopped(study) == [3]
    assert retry_stopped(study) == []  # already enqueued
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].user_attrs[RETRY_ATTR] == 3
    retry = study.ask({"x": FloatDistribution(0.0, 1.0)})
    assert retry.params == study.trials[3].params and retry.number == 4


def test_optuna_logs_no_traceback_for_a_budget_stop(caplog: pytest.LogCaptureFixture) -> None:
    hide_budget_tracebacks()
    hide_budget_tracebacks()  # idempotent
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()

    def stopped(trial: optuna.Trial) -> float:
        raise TimeBudgetSpent("budget")

    def broken(trial: optuna.Trial) -> float:
        raise RuntimeError("boom")

    try:
        with caplog.at_level(logging.WARNING, logger="optuna"):
            with pytest.raises(TimeBudgetSpent):
                study.optimize(stopped, n_trials=1)
            study.optimize(broken, n_trials=1, catch=(RuntimeError,))
    finally:
        optuna.logging.disable_propagation()
        optuna.logging.set_verbosity(optuna.logging.ERROR)
    messages = [record.getMessage() for record in caplog.records]
    assert not any(m.startswith("Trial 0 ") for m in messages), messages
    assert any(m.startswith("Trial 1 failed") for m in messages), messages  # real failures still say so


def test_best_over_time_figure() -> None:
    study = optuna.create_study(direction="maximize")
    for value in (0.3, 0.6, 0.4):
        study.enqueue_trial({"x": value})
    study.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0), n_trials=3)
    figure = best_over_time_figure(study, "val/accuracy")
    assert figure is not None
    axes = figure.axes[0]
    assert list(axes.lines[0].get_ydata()) == [0.3, 0.6, 0.6]  # the best so far
    assert "minutes" in axes.get_xlabel() and axes.get_ylabel() == "val/accuracy"
    assert min(axes.lines[0].get_xdata()) >= 0.0
    close_figures([figure])
    assert best_over_time_figure(optuna.create_study()) is None


# --- end to end: the real command ---------------------------------------------------------------

def load(runs: Path) -> optuna.Study:
    from convscope.search.storage import open_storage, resolve_storage

    return optuna.load_study(study_name="convscope-study", storage=open_storage(resolve_storage(runs)))


def run_search(*argv: str) -> str:
    """``convscope search`` to the end (a study the budget fails to stop is a TimeoutExpired); its stdout."""
    done = convscope("search", *argv, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
def test_a_time_budget_stops_a_study_of_unbounded_trials(tmp_path: Path, clean_env: None) -> None:
    runs = tmp_path / "runs"
    budget = 40  # two worker processes take ~20 s to start their first trials on 2 cores
    out = run_search("--runs-dir", str(runs), *TINY, "--epochs", "3", "--timeout", f"{budget}s", "--jobs", "2")
    # trials are unbounded: without the deadline in both worker processes the command would not return
    assert "pruning (median) from epoch 2 of 3: the one-cycle warm-up ends at epoch 1" in out
    assert "time budget 40.0s: no trial starts after" in out
    line = re.search(r"this run: wall time (\d+\.\d)s of a 40\.0s budget; (\d+) trials? ended: (\d+) done, "
                     r"(\d+) pruned, (\d+) failed, (\d+) stopped by the time budget", out)
    assert line is not None, out
    wall, ended, done, pruned, failed, stopped = (float(line[1]), *map(int, line.groups()[1:]))
    assert wall >= budget  # unbounded trials: nothing but the budget ends the study
    study = load(runs)
    # how many trials finish in the budget depends on the machine's load; the tally must match in any case
    assert ended >= 1 and failed == 0 and ended == done + pruned + stopped == len(study.trials)
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == done
    assert stopped == sum(STOPPED_ATTR in t.user_attrs for t in study.trials)
    assert not study.get_trials(states=(TrialState.RUNNING,))  # nothing left running
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    (parent,) = client.search_runs(["1"], "tags.`convscope.kind` = 'study'")
    assert parent.info.status == "FINISHED"
    figures = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert ("best_over_time.png" in figures) == (done >= 1), figures  # drawn once a trial finished
    assert parent.data.params["study.timeout"] == "40.0s"


@pytest.mark.slow
def test_a_trial_stopped_by_the_budget_ends_killed_and_the_rerun_goes_on(tmp_path: Path, clean_env: None) -> None:
    """Trials far longer than the budget: the first is stopped at the end of an epoch, its run
    KILLED; the rerun (a fresh budget) retries it under the next number, same parameters."""
    runs = tmp_path / "runs"
    long = ["--runs-dir", str(runs), *TINY, "--epochs", "1000", "--timeout", "45", "--pruner", "none"]
    out = run_search(*long)  # the first trial starts ~12 s in (~30 s on a loaded machine); 1000 epochs take minutes
    assert re.search(r"trial +0 STOPPED .*\(the time budget \(--timeout\) ran out in epoch \d+ of 1000\)", out), out
    assert "1 trial ended: 0 done, 0 pruned, 0 failed, 1 stopped by the time budget" in out, out
    (first,) = load(runs).trials
    assert first.state == TrialState.FAIL and first.user_attrs[STOPPED_ATTR].startswith("the time budget")
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    run = client.get_run(first.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and "--timeout" in run.data.tags["convscope.killed"]
    epochs = len(client.get_metric_history(run.info.run_id, "val/accuracy"))
    assert 1 <= epochs < 1000
    assert (runs / "checkpoints" / "convscope" / "convscope-study-trial-0000" / "state.pt").is_file()  # kept to resume

    out = run_search(*long)
    assert "trial 0 was stopped by an earlier run's time budget: it runs again first" in out, out
    trials = load(runs).trials
    assert [t.number for t in trials] == [0, 1]  # numbering goes on
    assert trials[1].user_attrs[RETRY_ATTR] == 0 and trials[1].params == first.params
    assert trials[1].state == TrialState.FAIL and STOPPED_ATTR in trials[1].user_attrs
    parents = client.search_runs(["1"], "tags.`convscope.kind` = 'study'")
    assert sorted(p.info.status for p in parents) == ["FINISHED", "FINISHED"]


def test_release_memory_freezes_what_survives_and_still_collects_new_garbage() -> None:
    import gc
    import weakref

    from convscope.train.memory import release_memory

    class Node:
        pass

    try:
        release_memory()
        assert gc.get_freeze_count() > 0  # the survivors: left out of later collections
        cycle = Node()
        cycle.me = cycle  # type: ignore[attr-defined]
        alive = weakref.ref(cycle)
        del cycle
        release_memory()
        assert alive() is None  # a trial's own cyclic garbage is still collected
    finally:
        gc.unfreeze()
