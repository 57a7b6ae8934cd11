"""A run SIGKILLed at any phase of an epoch resumes with every epoch in MLflow exactly once."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from e2e_helpers import FAST, convscope, only_run

KILLER = Path(__file__).resolve().parent / "kill_at_phase.py"


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["before-checkpoint", "after-checkpoint", "after-metrics", "after-line"])
def test_a_run_killed_at_any_phase_of_an_epoch_resumes_with_every_epoch_logged_once(tmp_path: Path, phase: str) -> None:
    runs = tmp_path / "runs"
    killed = subprocess.run([sys.executable, str(KILLER), phase, "2", "--runs-dir", str(runs), "--run-name", "r",
                             "--epochs", "4", *FAST], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = convscope("train", "--resume", str(runs / "checkpoints" / "convscope" / "r"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run = only_run(f"sqlite:///{runs / 'mlflow.db'}")
    for key in ("val/accuracy", "train/loss", "lr"):
        assert run.metric_steps(key) == [1, 2, 3, 4], (phase, key, run.metric_steps(key))
    assert run.info.info.status == "FINISHED"
    assert "trained for 2 epochs" not in resumed.stdout, resumed.stdout  # the verdict reads the whole curve
    backfilled = "epoch 2 was checkpointed but not yet logged when the run stopped: logged it now"
    if phase == "after-checkpoint":
        assert backfilled in resumed.stdout, resumed.stdout
    if phase in ("before-checkpoint", "after-metrics"):
        assert backfilled not in resumed.stdout, resumed.stdout
