"""``tracking.lifecycle``: how a run ends for every way its block can end, with fake and real
trackers; ``tracking.orphans``: parent runs of killed processes; ``tracking.faults``."""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from convscope.tracking.background import BackgroundTracker
from convscope.tracking.base import NullTracker, RunStatus
from convscope.tracking.errors import ConfigError, StoreWriteError
from convscope.tracking.faults import NO_SPACE, READ_ONLY, check_writable, store_error, store_fault
from convscope.tracking.lifecycle import FAILURE_TAG, PRUNED_TAG, open_parent_run, tracked_run
from convscope.tracking.mlflow_sink import MlflowTracker
from convscope.tracking.orphans import KILLED_TAG, PID_TAG, PROCESS_START_TAG, close_orphaned_runs, orphan_reason, process_tags
from convscope.tracking.stores import resolve_stores

DISK_FULL = OSError(errno.ENOSPC, "No space left on device")


class FakeTracker(NullTracker):
    """Records tags and the closing status; ``close`` may raise, hang or report a ``close_error``."""

    def __init__(self, close_raises: BaseException | None = None, close_error: BaseException | None = None,
                 close_blocks: threading.Event | None = None) -> None:
        self.tags: dict[str, str] = {}
        self.closed: list[RunStatus] = []
        self.close_raises, self.close_blocks = close_raises, close_blocks
        self.close_error = None
        self._close_error = close_error

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.tags.update(tags)

    def links(self) -> dict[str, str]:
        return {"mlflow_tracking_uri": "sqlite:////data/runs/mlflow.db"}

    def close(self, status: RunStatus = RunStatus.FINISHED) -> None:
        self.closed.append(status)
        if self.close_blocks is not None:
            self.close_blocks.wait(30)
        self.close_error = self._close_error
        if self.close_raises is not None:
            raise self.close_raises


class TrialPruned(Exception):
    """Named like Optuna's: recognised by its name, without importing Optuna."""


def stderr_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """What was printed to stderr, without MLflow's INFO lines about creating its database."""
    return [line for line in capsys.readouterr().err.splitlines() if line.strip() and " INFO mlflow." not in line]


def test_a_block_that_returns_finishes_the_run_quietly(capsys: pytest.CaptureFixture[str]) -> None:
    tracker = FakeTracker()
    with tracked_run(tracker, "r1") as inside:
        assert inside is tracker and tracker.closed == []
    assert tracker.closed == [RunStatus.FINISHED] and tracker.tags == {}
    assert stderr_lines(capsys) == []


def test_an_interrupt_kills_the_run_and_goes_on(capsys: pytest.CaptureFixture[str]) -> None:
    tracker = FakeTracker()
    with pytest.raises(KeyboardInterrupt):
        with tracked_run(tracker, "r2", note="completed epochs stay browsable"):
            raise KeyboardInterrupt
    assert tracker.closed == [RunStatus.KILLED] and KILLED_TAG in tracker.tags
    assert stderr_lines(capsys) == ["run r2 ended killed; completed epochs stay browsable"]


def test_a_note_made_when_the_run_ends_says_what_is_true_then(capsys: pytest.CaptureFixture[str]) -> None:
    saved: list[int] = []
    asked: list[int] = []

    def note() -> str:
        asked.append(len(saved))
        return f"the last checkpoint is epoch {saved[-1]}"

    with pytest.raises(KeyboardInterrupt):
        with tracked_run(FakeTracker(), "r3", note=note):
            saved += [1, 2]
            raise KeyboardInterrupt
    assert stderr_lines(capsys) == ["run r3 ended killed; the last checkpoint is epoch 2"]
    with tracked_run(FakeTracker(), "r4", note=note):
        pass
    assert asked == [2] and stderr_lines(capsys) == []  # a run that finished says nothing, and asks nothing

    def broken() -> str:
        raise OSError("the checkpoint folder is gone")

    with pytest.raises(KeyboardInterrupt):
        with tracked_run(FakeTracker(), "r5", note=broken):
            raise KeyboardInterrupt
    assert stderr_lines(capsys) == ["run r5 ended killed"]  # the run's own line, whatever the note does


@pytest.mark.parametrize("pruned_types", [(), (LookupError,)], ids=["by-name", "given-type"])
def test_a_pruned_trial_is_pruned_with_its_reason(pruned_types: tuple[type[BaseException], ...],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    error: Exception = TrialPruned("pruned after epoch 2") if not pruned_types else KeyError("pruned after epoch 2")
    tracker = FakeTracker()
    with pytest.raises(type(error)):
        with tracked_run(tracker, "r3", pruned=pruned_types):
            raise error
    assert tracker.closed == [RunStatus.PRUNED]
    assert "pruned after epoch 2" in tracker.tags[PRUNED_TAG]
    assert stderr_lines(capsys) == []


@pytest.mark.parametrize("error, reason", [
    (DISK_FULL, "OSError: [Errno 28] No space left on device"),
    (OSError(errno.EROFS, "Read-only file system"), "OSError: [Errno 30] Read-only file system"),
    (RuntimeError("store said no\nsecond line"), "RuntimeError: store said no"),
    (ValueError("cannot reach postgresql://user:hunter2@db/mlflow"), "ValueError: cannot reach postgresql://user:***@db/mlflow"),
])
def test_any_other_error_fails_the_run_with_one_line_and_the_tag(
    error: Exception, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    tracker = FakeTracker()
    with pytest.raises(type(error)) as raised:
        with tracked_run(tracker, "r4"):
            raise error
    assert raised.value is error  # re-raised unchanged
    assert tracker.closed == [RunStatus.FAILED] and tracker.tags[FAILURE_TAG] == reason
    assert stderr_lines(capsys) == [f"run r4 ended failed ({reason})"]


def test_final_tags_are_set_before_closing_with_the_status() -> None:
    tracker = FakeTracker()
    with pytest.raises(RuntimeError):
        with tracked_run(tracker, "r5", final_tags=lambda status: {"optuna.state": status.name}):
            raise RuntimeError("x")
    assert tracker.tags["optuna.state"] == "FAILED"


def test_a_close_that_hits_a_full_disk_is_one_line_and_the_error_goes_on(capsys: pytest.CaptureFixture[str]) -> None:
    tracker = FakeTracker(close_raises=OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(RuntimeError, match="training broke"):
        with tracked_run(tracker, "r6"):
            raise RuntimeError("training broke")
    lines = stderr_lines(capsys)
    assert len(lines) == 1, lines
    assert lines[0].startswith("run r6 ended failed (RuntimeError: training broke); its end (failed) could not be saved")
    assert "no space left on device; free space in /data/runs" in lines[0] and "Traceback" not in lines[0]


def test_a_finished_block_whose_end_cannot_be_written_raises_the_fault(capsys: pytest.CaptureFixture[str]) -> None:
    tracker = FakeTracker(close_error=OSError(errno.EROFS, "Read-only file system"))
    with pytest.raises(OSError) as raised:
        with tracked_run(tracker, "r7", where="/mnt/runs"):
            pass
    assert raised.value.errno == errno.EROFS
    assert stderr_lines(capsys) == ["run r7 ended finished but that could not be saved: read-only file system; "
                                    "make /mnt/runs writable"]


def test_a_close_that_hangs_is_given_up(capsys: pytest.CaptureFixture[str]) -> None:
    gate = threading.Event()
    tracker = FakeTracker(close_blocks=gate)
    try:
        with tracked_run(tracker, "r8", close_timeout=0.5):
            pass
    finally:
        gate.set()
    assert tracker.closed == [RunStatus.FINISHED]  # closed once, with the true status, then given up on
    (line,) = stderr_lines(capsys)
    assert "run r8 ended finished but that could not be saved: TimeoutError: closing the run took more than 0.5 s" in line


def test_real_mlflow_run_ends_failed_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = BackgroundTracker(MlflowTracker(uri, "lifecycle", "real"))
    with pytest.raises(OSError):
        with tracked_run(tracker, "real"):
            tracker.log_metrics({"loss": 1.0}, step=1)
            raise OSError(errno.ENOSPC, "No space left on device")
    run = MlflowClient(uri).get_run(tracker.links()["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.info.run_name == "real (failed)"
    assert run.data.tags[FAILURE_TAG] == "OSError: [Errno 28] No space left on device"
    assert run.data.tags["convscope.status"] == "failed" and run.data.metrics == {"loss": 1.0}
    assert stderr_lines(capsys) == ["run real ended failed (OSError: [Errno 28] No space left on device)"]


def test_mlflow_close_failure_is_one_line_not_a_warning_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "lifecycle", "full")

    def full(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("(sqlite3.OperationalError) database or disk is full")

    monkeypatch.setattr(sink.client, "set_tag", full)
    monkeypatch.setattr(sink.client, "log_batch", full)
    with caplog.at_level(logging.WARNING):
        with pytest.raises(RuntimeError, match="disk is full"):
            with tracked_run(BackgroundTracker(sink), "full", where=str(tmp_path)):
                pass
    assert "could not close" not in caplog.text  # held back: the line says it
    lines = stderr_lines(capsys)
    assert lines == [f"run full ended finished but that could not be saved: no space left on device; free space in {tmp_path}"]


def test_warnings_of_a_clean_close_are_kept(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    class BadMetrics(FakeTracker):
        def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
            raise ValueError("metric rejected")

    tracker = BackgroundTracker(BadMetrics())
    with caplog.at_level(logging.WARNING, logger="convscope.tracking.background"):
        with tracked_run(tracker, "r9"):
            tracker.log_metrics({"m": 1.0}, 1)  # fails on the worker, during close's flush
    assert "metric rejected" in caplog.text and stderr_lines(capsys) == []


def test_a_full_store_stops_the_run_at_its_next_call() -> None:
    class FullDisk(FakeTracker):
        def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    tracker = BackgroundTracker(FullDisk())
    tracker.log_metrics({"m": 1.0}, 1)
    tracker.flush()
    with pytest.raises(OSError) as raised:
        tracker.log_metrics({"m": 2.0}, 2)
    assert raised.value.errno == errno.ENOSPC and tracker.errors == 1
    tracker.close()


def test_storage_faults_are_recognised_in_any_wrapping() -> None:
    class MlflowLike(Exception):
        pass

    try:
        try:
            raise RuntimeError("(sqlite3.OperationalError) attempt to write a readonly database")
        except RuntimeError as inner:
            raise MlflowLike("store unavailable") from inner
    except MlflowLike as wrapped:
        assert store_fault(wrapped) == READ_ONLY
    assert store_fault(OSError(errno.EDQUOT, "Disk quota exceeded")) == NO_SPACE
    assert store_fault(ValueError("no")) is None
    converted = store_error(DISK_FULL, "/mnt/runs", "--runs-dir", note="checkpoint in /mnt/runs/checkpoints")
    assert isinstance(converted, StoreWriteError) and isinstance(converted, ConfigError)
    assert str(converted) == ("--runs-dir /mnt/runs: no space left on device; free space there "
                              "(checkpoint in /mnt/runs/checkpoints)")
    server = store_error(RuntimeError("database or disk is full"), "runs", "--runs-dir",
                         server="http://u:pw@mlflow:5000")
    assert server is not None and str(server).startswith("--mlflow-uri http://u:***@mlflow:5000: no space left")
    assert store_error(ConfigError("--epochs 0: too few"), "runs", "--runs-dir") is None


def test_check_writable_names_the_flag(tmp_path: Path) -> None:
    assert check_writable(tmp_path / "new" / "runs", "--runs-dir") == (tmp_path / "new" / "runs").resolve()
    assert not list((tmp_path / "new" / "runs").iterdir())  # the probe file is gone
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=r"^--runs-dir .*a-file/runs: cannot write there .*choose another --runs-dir"):
        check_writable(blocker / "runs", "--runs-dir")


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_orphan_reason_needs_proof() -> None:
    mine = process_tags()
    assert orphan_reason(mine) is None  # this process is alive
    assert "is gone" in (orphan_reason({**mine, PID_TAG: str(_dead_pid())}) or "")
    reused = orphan_reason({**mine, PROCESS_START_TAG: "another-boot:1"})
    assert reused is not None and "another process" in reused
    assert orphan_reason({**mine, "convscope.host": "elsewhere", PID_TAG: str(_dead_pid())}) is None
    assert orphan_reason({**mine, "convscope.pid_namespace": "pid:[1]", PID_TAG: str(_dead_pid())}) is None
    assert orphan_reason({}) is None


def test_orphaned_parents_of_the_study_are_ended_killed(tmp_path: Path) -> None:
    stores = resolve_stores(tmp_path / "runs")
    study = {"convscope.kind": "study", "optuna.study": "s1"}
    alive = open_parent_run(stores, "exp", "alive", study)
    assert alive.client.get_run(alive.run_id).data.tags[PID_TAG] == str(os.getpid())
    dead = {**study, **process_tags(), PID_TAG: str(_dead_pid())}
    gone = MlflowTracker(stores.mlflow_uri, "exp", "gone", tags=dead)
    other_study = MlflowTracker(stores.mlflow_uri, "exp", "other", tags={**dead, "optuna.study": "s2"})
    ended = close_orphaned_runs(stores.mlflow_uri, "exp", study)
    assert [(run_id, name) for run_id, name, _ in ended] == [(gone.run_id, "gone")]
    client = MlflowClient(stores.mlflow_uri)
    run = client.get_run(gone.run_id)
    assert run.info.status == "KILLED" and run.info.run_name == "gone (killed)"
    assert "is gone" in run.data.tags[KILLED_TAG] and run.data.tags["convscope.status"] == "killed"
    assert client.get_run(alive.run_id).info.status == "RUNNING"
    assert client.get_run(other_study.run_id).info.status == "RUNNING"
    assert close_orphaned_runs(stores.mlflow_uri, "no-such-experiment", study) == []
    with tracked_run(alive, "alive"):
        pass
    assert client.get_run(alive.run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_a_sigkilled_search_has_its_parent_run_killed_by_the_next_start(tmp_path: Path) -> None:
    from e2e_helpers import convscope

    runs = tmp_path / "runs"
    args = ["search", "--runs-dir", str(runs), "--study-name", "killme", "--preset", "tiny", "--image-size", "32",
            "--fix", "epochs=40", "--fix", "synthetic_size=2000", "--pruner", "none", "--quiet"]
    killed: dict[str, str] = {}

    def kill_once_the_parent_runs() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            time.sleep(0.5)
            if not (runs / "mlflow.db").exists() or not list((runs / "checkpoints").glob("*/*trial-0000")):
                continue  # the first trial trains: the parent run exists and the store is set up
            client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
            for run in client.search_runs(["1"], "tags.`convscope.kind` = 'study'"):
                killed.update(run_id=run.info.run_id, pid=run.data.tags[PID_TAG])
                os.kill(int(killed["pid"]), signal.SIGKILL)

    killer = threading.Thread(target=kill_once_the_parent_runs, daemon=True)
    killer.start()
    first = convscope(*args, "--trials", "2", timeout=300)
    killer.join(5)
    assert first.returncode == -signal.SIGKILL, (first.returncode, first.stderr[-2000:])
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    assert client.get_run(killed["run_id"]).info.status == "RUNNING"  # nobody could close it
    again = convscope(*args, "--trials", "1", timeout=300)  # the killed trial still counts as running
    assert again.returncode == 0, again.stderr[-2000:]
    stale = client.get_run(killed["run_id"])
    assert stale.info.status == "KILLED" and stale.info.run_name.endswith(" (killed)")
    assert stale.data.tags[KILLED_TAG] == f"process {killed['pid']} on {stale.data.tags['convscope.host']} is gone"
    assert f"({killed['run_id']}) ended killed: process {killed['pid']} on " in again.stdout
    parents = client.search_runs(["1"], "tags.`convscope.kind` = 'study'")
    assert sorted(p.info.status for p in parents) == ["FINISHED", "KILLED"]
