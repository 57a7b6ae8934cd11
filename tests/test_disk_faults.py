"""Real storage faults under ``--runs-dir``: a disk that fills up during training, and a read-only
folder. Each test mounts its own small tmpfs (needs root, or the right to mount) and unmounts it
afterwards; without that right it is skipped, saying why."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from e2e_helpers import convscope
from convscope.train.checkpoint import CONFIG_FILE, STATE_FILE, load_checkpoint

pytestmark = pytest.mark.slow
TRAIN = ["train", "--preset", "tiny", "--synthetic-size", "256", "--batch-size", "64", "--analysis-size", "32",
         "--image-size", "32", "--epochs", "6", "--quiet"]
MLFLOW_INFO = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d INFO mlflow\.")  # "creating the database" notes


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Call it with a size (``1600k``) for a fresh tmpfs folder of that size; unmounted at the end."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        done = _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point))
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in reversed(mounted):
        if subprocess.run(["umount", str(point)], capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=30)


def problem_lines(stderr: str) -> list[str]:
    """stderr without MLflow's INFO lines about creating its database."""
    return [line for line in stderr.splitlines() if line.strip() and not MLFLOW_INFO.match(line)]


def test_a_disk_that_fills_during_training_is_one_line_and_keeps_the_checkpoint(
    tmpfs: Callable[[str], Path],
) -> None:
    runs = tmpfs("1600k") / "runs"  # the store and the first epochs fit; the disk fills before the end
    done = convscope(*TRAIN, "--runs-dir", str(runs), timeout=300)  # a hang is a TimeoutExpired
    lines = problem_lines(done.stderr)
    assert done.returncode != 0, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert 1 <= len(lines) <= 2, lines
    assert "no space left on device" in lines[-1] and f"--runs-dir {runs}" in lines[-1], lines
    assert "free space there" in lines[-1]
    assert lines[0].startswith("run tiny-d3-"), lines  # the run's own line names it
    for folder in (runs / "checkpoints" / "convscope").iterdir():
        if (folder / STATE_FILE).is_file():  # a checkpoint was written: it is whole and of one epoch
            checkpoint = load_checkpoint(folder)
            assert 1 <= checkpoint.epoch <= 6
            assert json.loads((folder / CONFIG_FILE).read_text())["epoch"] == checkpoint.epoch
            assert all(torch.isfinite(tensor).all() for tensor in checkpoint.model_state.values()
                       if tensor.is_floating_point())
            assert str(folder) in lines[-1]  # the message says where to --resume from


@pytest.mark.parametrize("command", [TRAIN, ["search", "--preset", "tiny", "--trials", "1", "--quiet"]],
                         ids=["train", "search"])
def test_a_read_only_runs_dir_is_exit_2_before_any_run(tmpfs: Callable[[str], Path], command: list[str]) -> None:
    disk = tmpfs("4m")
    (disk / "runs").mkdir()
    remounted = _mount("-o", "remount,ro", str(disk))
    if remounted.returncode != 0:
        pytest.skip(f"cannot remount the tmpfs read-only: {remounted.stderr.strip()}")
    done = convscope(*command, "--runs-dir", str(disk / "runs"), timeout=300)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = problem_lines(done.stderr)
    assert len(lines) == 1, lines
    assert f"--runs-dir {disk / 'runs'}" in lines[0] and "read-only file system" in lines[0], lines
    assert list((disk / "runs").iterdir()) == []  # nothing was opened, nothing written
