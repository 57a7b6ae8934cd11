"""``convscope train --data FOLDER`` with bad files, through the real entry point."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from e2e_helpers import convscope, only_run
from test_folders import write_images

pytestmark = pytest.mark.slow


def test_bad_files_are_skipped_reported_and_logged(tmp_path: Path) -> None:
    root = tmp_path / "PetImages"
    write_images(root / "Cat", 12, (200, 60, 60), size=40)
    write_images(root / "Dog", 12, (60, 60, 200), size=40)
    (root / "Cat" / "Thumbs.db").write_bytes(os.urandom(100))
    (root / "Dog" / "0-empty.jpg").write_bytes(b"")
    good = (root / "Dog" / "1.jpg").read_bytes()
    (root / "Dog" / "cut.jpg").write_bytes(good[: len(good) // 2])
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(root / "Cat" / "cmyk.jpg")
    runs = tmp_path / "runs"
    probe = tmp_path / "my-cat.png"
    Image.new("RGB", (50, 30), (250, 10, 10)).save(probe)
    done = convscope("train", "--data", str(root), "--epochs", "1", "--runs-dir", str(runs), "--quiet",
                     "--preset", "tiny", "--image-size", "32", "--no-tensorboard", "--probe", str(probe))
    assert done.returncode == 0, done.stderr
    line = next(l for l in done.stderr.splitlines() if l.startswith("skipped"))
    assert line.startswith("skipped 3 of 28 files: ") and "skipped_files.csv" in line
    assert "1 empty file" in line and "1 not an image" in line and "1 unreadable" in line
    run = only_run(f"sqlite:///{runs / 'mlflow.db'}")
    tags = run.info.data.tags
    assert tags["data.skipped_files"] == "3" and tags["data.files"] == "28"
    assert tags["data.classes"] == "0:Cat,1:Dog"
    csv_file = run.download("data/skipped_files.csv", tmp_path / "dl")
    assert "cut.jpg,unreadable" in csv_file.read_text()
    meta = json.loads(run.download("activations/epoch_0001.json", tmp_path / "dl").read_text())
    assert meta["probe_ids"][-1] == str(probe) and meta["labels"][-1] == -1  # the user's probe, unlabelled
    assert meta["labels"].count(-1) == 1 and set(meta["labels"]) == {-1, 0, 1}
    assert meta["shapes"]["conv1"][0] == len(meta["probe_ids"])  # the probe went through the network
    again = convscope("train", "--data", str(root), "--epochs", "1", "--runs-dir", str(runs), "--quiet",
                      "--preset", "tiny", "--image-size", "32", "--no-mlflow", "--no-tensorboard")
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--data", "{root}/Cat/0.jpg"], "is a file, not a folder"),
        (["--data", "{root}/nothing"], "no such folder"),
        (["--data", "{root}/Cat"], "found 0 class folder(s)"),
        (["--data", "{root}", "--image-size", "8"], "--image-size 8 is below the minimum of 63"),
        (["--data", "cifar10"], "add --download"),
    ],
)
def test_data_usage_errors_are_one_line_exit_2(tmp_path: Path, argv: list[str], needle: str) -> None:
    root = tmp_path / "PetImages"
    write_images(root / "Cat", 2, (200, 60, 60))
    write_images(root / "Dog", 2, (60, 60, 200))
    args = [a.format(root=root) for a in argv]
    done = convscope("train", *args, "--runs-dir", str(tmp_path / "runs"), "--quiet")
    assert done.returncode == 2, done.stderr
    assert needle in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
