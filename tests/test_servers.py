"""Server helpers: process-group shutdown and the TensorBoard/MLflow command lines."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from convscope.servers.servers import (
    TENSORBOARD_IMAGE_SAMPLES,
    group_members,
    mlflow_server_command,
    start_process_group,
    stop_process_group,
    tensorboard_command,
)


@pytest.mark.parametrize(
    ("script", "timeout"),
    [("sleep 300 & sleep 300", 10.0), ("trap '' TERM; sleep 300 & sleep 300", 0.5)],
    ids=["sigterm", "sigkill-when-term-ignored"],
)
def test_stop_process_group_kills_children(script: str, timeout: float, tmp_path: Path) -> None:
    proc = start_process_group(["bash", "-c", script], tmp_path / "log.txt")
    deadline = time.monotonic() + 5
    while len(group_members(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    members = group_members(proc.pid)
    assert len(members) >= 2, members
    stop_process_group(proc, timeout=timeout)
    assert proc.returncode is not None
    assert group_members(proc.pid) == []
    for pid in members:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().split(")")[-1].split()[0] == "Z"


def test_server_commands() -> None:
    tb = tensorboard_command("runs/tb", "127.0.0.1", 6006)
    assert Path(tb[0]).name == "tensorboard" or tb[:3] == [sys.executable, "-m", "tensorboard"]
    assert tb[tb.index("--samples_per_plugin") + 1] == f"images={TENSORBOARD_IMAGE_SAMPLES}"
    assert TENSORBOARD_IMAGE_SAMPLES > 0
    ml = mlflow_server_command("sqlite:///db", "127.0.0.1", 5000, artifacts_destination="/a")
    assert "server" in ml and ml[ml.index("--artifacts-destination") + 1] == "/a"
    assert "--serve-artifacts" in ml
    assert "--no-serve-artifacts" in mlflow_server_command("sqlite:///db", "h", 1, serve_artifacts=False)
    with pytest.raises(ValueError, match="ui_only"):
        mlflow_server_command("sqlite:///db", "h", 1, ui_only=True, artifacts_destination="/a")
