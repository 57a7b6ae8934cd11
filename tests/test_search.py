"""``convscope search`` on the embedded stores: trials, nesting, pruning, failures, resuming."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from mlflow import MlflowClient
from tensorboard.backend.event_processing import plugin_event_accumulator
from optuna.trial import TrialState

import convscope.search.objective

from convscope import search
from convscope.train import run as train_run
from e2e_helpers import convscope
from convscope.cli.main import build_parser, parse
from convscope.cli.search_cmd import build_settings
from convscope.search.dead_workers import WORKER_PID_ATTR
from convscope.search.session import run_study
from convscope.search.study import StudyStopped
from convscope.train.errors import NonFiniteLossError

pytestmark = pytest.mark.slow
FAST = ["--preset", "tiny", "--image-size", "32", "--fix", "epochs=2", "--fix", "synthetic_size=300",
        "--fix", "probes_per_class=2", "--fix", "analysis_size=32"]


def settings_for(runs: Path, *argv: str):  # type: ignore[no-untyped-def]
    args = parse(build_parser(), ["search", "--runs-dir", str(runs), *FAST, *argv])
    return build_settings(args)


def load(runs: Path, name: str = "convscope-study") -> optuna.Study:
    from convscope.search.storage import open_storage, resolve_storage

    return optuna.load_study(study_name=name, storage=open_storage(resolve_storage(runs)))


def mlflow_client(runs: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")


def test_six_trials_two_jobs_nested_runs_and_hparams(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    done = convscope("search", "--runs-dir", str(runs), "--trials", "6", "--jobs", "2", "--pruner", "none", *FAST)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("COMPLETE") >= 6 and "journal.log" in done.stdout
    study = load(runs)
    assert sorted(t.number for t in study.trials) == list(range(6))
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    best = study.best_trial  # its line reads like the trial lines: name=value, floats to three digits
    assert (f"best trial #{best.number}: val/accuracy {best.value:.4f}  depth={best.params['depth']}, "
            f"base_width={best.params['base_width']}, growth={best.params['growth']:.3g}, ") in done.stdout
    client = mlflow_client(runs)
    parents = set()
    for trial in study.trials:
        assert {"depth", "base_width", "growth", "dropout"} <= set(trial.params)
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED" and run.data.tags["optuna.trial"] == str(trial.number)
        parents.add(run.data.tags["mlflow.parentRunId"])
        names = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "activations")}
        assert {"latest.safetensors", "latest.json", "analysis.safetensors"} <= names  # a trial keeps the latest
        assert not any(name.startswith("epoch_") for name in names)
        assert int(run.data.params["depth"]) == trial.params["depth"]
        # every searched setting is a param, even where it equals the preset's value; the list stays short
        assert set(trial.params) <= set(run.data.params)
        assert len(run.data.params) <= 10, sorted(run.data.params)
    (parent_id,) = parents
    parent = client.get_run(parent_id)
    assert parent.data.tags["convscope.kind"] == "study" and parent.info.status == "FINISHED"
    parent_files = {a.path for a in client.list_artifacts(parent_id)}
    assert {"figures", "study"} <= parent_files
    best = study.best_trial
    assert parent.data.tags["best_run_id"] == best.user_attrs["mlflow_run_id"]
    champion = client.get_model_version_by_alias("convscope-study", "champion")  # the registered best network
    assert champion.run_id == best.user_attrs["mlflow_run_id"]
    study_dir = runs / "tensorboard" / "convscope" / "convscope-study"
    for trial in study.trials:
        events = plugin_event_accumulator.EventAccumulator(trial.user_attrs["tensorboard_dir"])
        events.Reload()
        assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
    assert sorted(p.name for p in study_dir.iterdir() if p.is_dir()) == [f"trial-{i:04d}" for i in range(6)]
    assert not list((runs / "checkpoints").rglob("*trial-*"))  # finished: MLflow holds the network, no checkpoint


def test_workers_as_threads_share_the_commands_process_and_finish_every_trial(tmp_path: Path) -> None:
    """``--workers-in threads``: the workers are threads of the ``convscope search`` process (every
    trial records that process's id), the trials run to the end, each in its own finished MLflow run
    under one parent, and the study ends as with worker processes."""
    runs = tmp_path / "runs"
    done = convscope("search", "--runs-dir", str(runs), "--trials", "4", "--jobs", "2", "--workers-in", "threads",
                     "--pruner", "none", *FAST)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "4 trials ended: 4 done" in done.stdout, done.stdout
    assert "--workers-in threads without a GPU: the 2 workers share one Python interpreter" in done.stderr
    study = load(runs)
    assert sorted(t.number for t in study.trials) == list(range(4))
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert len({t.user_attrs[WORKER_PID_ATTR] for t in study.trials}) == 1  # one process ran them all
    client = mlflow_client(runs)
    runs_of_trials = [client.get_run(t.user_attrs["mlflow_run_id"]) for t in study.trials]
    assert all(run.info.status == "FINISHED" for run in runs_of_trials)
    (parent,) = {run.data.tags["mlflow.parentRunId"] for run in runs_of_trials}
    assert len({run.info.run_id for run in runs_of_trials}) == 4
    assert client.get_run(parent).data.params["study.workers_in"] == "threads"


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


def test_pruned_trials_are_pruned_in_optuna_and_mlflow(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    study = run_study(settings_for(runs, "--trials", "2"), pruner=AlwaysPrune(), echo=lambda line: None)
    assert [t.state for t in study.trials] == [TrialState.PRUNED, TrialState.PRUNED]
    client = mlflow_client(runs)
    for trial in study.trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.data.tags["optuna.state"] == "PRUNED" and run.data.tags["convscope.status"] == "pruned"
        assert run.info.run_name.endswith(" (pruned)")
        assert client.get_metric_history(run.info.run_id, "val/accuracy")[0].step == 1  # stopped after epoch 1
    assert not list((runs / "checkpoints").rglob("*trial-*"))  # pruned: nothing resumes it


def test_a_study_can_optimise_the_flip_tta_accuracy(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    study = run_study(settings_for(runs, "--trials", "1", "--tta", "--metric", "val/accuracy_tta", "--pruner", "none"),
                      echo=lambda line: None)
    trial = study.trials[0]
    history = mlflow_client(runs).get_metric_history(trial.user_attrs["mlflow_run_id"], "val/accuracy_tta")
    assert trial.state == TrialState.COMPLETE and study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert trial.value == pytest.approx(history[-1].value)
    assert trial.intermediate_values == {m.step: pytest.approx(m.value) for m in history}


def test_out_of_memory_and_nan_leave_the_study_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_execute = train_run.execute
    calls = {"n": 0}

    def flaky_execute(prepared, tracker, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if calls["n"] == 2:
            raise NonFiniteLossError("training loss became nan in epoch 1/2; lower --lr or check the data")
        return real_execute(prepared, tracker, **kwargs)

    monkeypatch.setattr(train_run, "execute", flaky_execute)  # what train_tracked calls
    runs = tmp_path / "runs"
    # --trials counts finished trials: the OOM trial (pruned) and the good one; the NaN failure does not count
    study = run_study(settings_for(runs, "--trials", "2", "--pruner", "none"), echo=lambda line: None)
    states = [t.state for t in study.trials]
    assert states == [TrialState.PRUNED, TrialState.FAIL, TrialState.COMPLETE]
    oom, nan, ok = study.trials
    assert oom.user_attrs["pruned_reason"].startswith("CUDA out of memory")
    assert "nan" in nan.user_attrs["error"]
    assert study.best_trial.number == ok.number
    client = mlflow_client(runs)
    assert client.get_run(nan.user_attrs["mlflow_run_id"]).info.status == "FAILED"


def test_three_identical_failures_stop_the_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(prepared, tracker, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("disk full")

    monkeypatch.setattr(train_run, "execute", broken)
    with pytest.raises(StudyStopped, match="disk full"):
        run_study(settings_for(tmp_path / "runs", "--trials", "10"), echo=lambda line: None)
    study = load(tmp_path / "runs")
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 3


def test_rerunning_continues_numbering_and_honours_the_total(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    first: list[str] = []
    run_study(settings_for(runs, "--trials", "2", "--pruner", "none", "--keep-all"), echo=first.append)
    later: list[str] = []
    study = run_study(settings_for(runs, "--trials", "3", "--pruner", "none"), echo=later.append)
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert not any(line.startswith("the whole study:") for line in first)  # this run's tally says it all
    assert any(line.startswith("this run: ") and "1 trial ended: 1 done" in line for line in later)
    assert any(line.startswith("the whole study: [done 3 | pruned 0 | failed 0 | best #") for line in later)
    kept = sorted(p.parent.name for p in (runs / "checkpoints").rglob("state.pt"))
    assert kept == ["convscope-study-trial-0000", "convscope-study-trial-0001"]  # --keep-all; trial 2 without
    lines: list[str] = []
    again = run_study(settings_for(runs, "--trials", "3", "--pruner", "none"), echo=lines.append)
    assert len(again.trials) == 3 and any("nothing to run" in line for line in lines)


def test_search_usage_errors(tmp_path: Path) -> None:
    done = convscope("search", "--runs-dir", str(tmp_path), "--depth", "2..9", "--trials", "1")
    assert done.returncode == 2 and "--depth" in done.stderr and "Traceback" not in done.stderr
    done = convscope("search", "--runs-dir", str(tmp_path), "--fix", "epoch=3")
    assert done.returncode == 2 and "--fix" in done.stderr


@pytest.mark.parametrize("stop, jobs, workers_in", [
    pytest.param("SIGINT", 1, "processes", id="ctrl-c"), pytest.param("SIGTERM", 1, "processes", id="sigterm"),
    pytest.param("SIGTERM", 2, "processes", id="sigterm-2-workers"),
    pytest.param("SIGINT-group", 2, "processes", id="ctrl-c-2-workers", marks=pytest.mark.slow),
    pytest.param("SIGTERM", 2, "threads", id="sigterm-2-worker-threads"),
    pytest.param("SIGINT-group", 2, "threads", id="ctrl-c-2-worker-threads"),
])
def test_interrupt_ends_trials_and_parent_killed_and_the_study_continues(
    tmp_path: Path, stop: str, jobs: int, workers_in: str
) -> None:
    """Ctrl-C (to the whole process group, as a terminal sends it), or SIGTERM to the main process
    only (``docker stop``, ``kill``): every running trial's run and the parent end KILLED, SIGTERM is
    passed on to worker processes (worker threads see the stop at their epoch's end), no traceback
    is printed, and the exit code is 130 for Ctrl-C and 143 for SIGTERM."""
    import os
    import signal
    import subprocess
    import sys
    import time

    runs = tmp_path / "runs"
    slow = ["--preset", "tiny", "--image-size", "32", "--fix", "epochs=40", "--fix", "synthetic_size=2000",
            "--pruner", "none", "--trials", "2", "--jobs", str(jobs), "--workers-in", workers_in]
    proc = subprocess.Popen([sys.executable, "-m", "convscope", "search", "--runs-dir", str(runs), *slow],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until every worker's trial runs, linked to its MLflow run
        journal = runs / "optuna" / "journal.log"
        try:  # the journal file exists a moment before the study is written into it
            trials = load(runs).trials if journal.exists() else []
        except KeyError:
            trials = []
        if len(trials) >= jobs and all("mlflow_run_id" in t.user_attrs for t in trials[:jobs]):
            break
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(proc.communicate()[0])
    time.sleep(1.0)
    if stop.endswith("-group"):
        os.killpg(proc.pid, getattr(signal, stop.removesuffix("-group")))
    else:
        proc.send_signal(getattr(signal, stop))
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == (143 if stop == "SIGTERM" else 130), output
    assert "Traceback" not in output and "interrupted" in output, output
    assert "interrupted: the same command goes on with the study (trial" in output, output
    client = mlflow_client(runs)
    trials = load(runs).trials
    assert len(trials) == jobs, output
    for trial in trials:
        assert client.get_run(trial.user_attrs["mlflow_run_id"]).info.status == "KILLED", output
        assert trial.state == TrialState.FAIL
    parents = client.search_runs(["1"], "tags.`convscope.kind` = 'study'")
    assert [p.info.status for p in parents] == ["KILLED"]
    said: list[str] = []
    again = run_study(settings_for(runs, "--trials", "1", "--pruner", "none"), echo=said.append)
    assert "trial 0 was stopped by Ctrl-C or SIGTERM: it runs again first, same parameters" in said, said
    (done,) = [t for t in again.trials if t.state == TrialState.COMPLETE]
    assert done.number == jobs and done.params == trials[0].params  # numbering goes on, with what was interrupted


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def test_sigkill_of_search_leaves_nothing_running_and_closes_its_runs(tmp_path: Path) -> None:
    """``kill -9`` of ``convscope search --jobs 2``: within 15 s no worker is left; each running trial's
    run and the study's parent run end KILLED with the reason — by the workers as they go, else by
    the next convscope command on the runs folder."""
    import signal
    import subprocess
    import sys
    import time

    runs = tmp_path / "runs"
    slow = ["--preset", "tiny", "--image-size", "32", "--fix", "epochs=40", "--fix", "synthetic_size=2000",
            "--pruner", "none", "--trials", "2", "--jobs", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "convscope", "search", "--runs-dir", str(runs), *slow],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            trials = load(runs).trials if (runs / "optuna" / "journal.log").exists() else []
        except KeyError:
            trials = []
        if len(trials) >= 2 and all("mlflow_run_id" in t.user_attrs for t in trials[:2]):
            break
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("the trials did not start")
    time.sleep(1.0)
    workers = {t.user_attrs[WORKER_PID_ATTR] for t in trials[:2]}  # spawned: their command lines name no folder
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 15
    left = ["?"]
    while time.monotonic() < deadline:
        left = subprocess.run(["pgrep", "-f", str(runs)], capture_output=True, text=True).stdout.split()
        left += [str(pid) for pid in workers if _alive(pid)]
        if not left:
            break
        time.sleep(0.5)
    assert not left, f"still running 15 s after SIGKILL: {left}"
    from convscope.cli.orphan_runs import end_orphaned_runs
    from convscope.tracking.stores import resolve_stores

    end_orphaned_runs(resolve_stores(runs))  # what the next convscope command on the folder does first
    client = mlflow_client(runs)
    for trial in load(runs).trials:
        assert client.get_run(trial.user_attrs["mlflow_run_id"]).info.status == "KILLED"
    parents = client.search_runs(["1"], "tags.`convscope.kind` = 'study'")
    assert [p.info.status for p in parents] == ["KILLED"] and parents[0].data.tags.get("convscope.killed")


def test_a_worker_killed_mid_trial_on_the_journal_storage_is_replaced_and_its_trial_retried(tmp_path: Path) -> None:
    """The journal file has no heartbeat: ``convscope search`` sees its worker die, fails that trial,
    queues it again and starts another worker, so the study still reaches ``--trials``."""
    import os
    import signal
    import subprocess
    import sys
    import time

    runs = tmp_path / "runs"
    args = ["--preset", "tiny", "--image-size", "32", "--fix", "epochs=6", "--fix", "synthetic_size=1500",
            "--pruner", "none", "--trials", "3", "--jobs", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "convscope", "search", "--runs-dir", str(runs), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline, victim = time.monotonic() + 180, None
    while time.monotonic() < deadline and victim is None:
        try:
            trials = load(runs).trials if (runs / "optuna" / "journal.log").exists() else []
        except KeyError:
            trials = []
        running = [t for t in trials if t.state == TrialState.RUNNING and "mlflow_run_id" in t.user_attrs]
        victim = running[0] if running else None
        time.sleep(0.5)
    if victim is None:
        proc.kill()
        pytest.fail("no trial started")
    os.kill(victim.user_attrs["worker_pid"], signal.SIGKILL)
    output = proc.communicate(timeout=400)[0]
    assert proc.returncode == 0, output
    assert f"died, killed by SIGKILL: trial {victim.number} failed and queued again" in output, output
    trials = load(runs).trials
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    killed = trials[victim.number]
    assert killed.state == TrialState.FAIL and "died" in killed.user_attrs["error"]
    retries = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE and retries[0].params == killed.params
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) >= 3
    assert mlflow_client(runs).get_run(victim.user_attrs["mlflow_run_id"]).info.status == "KILLED"
