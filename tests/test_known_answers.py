"""``convscope depth`` on tasks whose answer is known: ``synthetic-depthK`` needs exactly K blocks.

Settings measured on 2 CPU cores (3 folds, 32 px, no flips or crops — the default random crop
keeps this task from being learned at all): every fold of depth ≥ K reaches 1.000 by epoch 2
and stays there, every depth below K stays at chance (fold means 0.47-0.56); about 15 s per
study on an idle machine. K = 2 at seed 0 is the study in ``test_depth.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from e2e_helpers import convscope

COMMON = ["--image-size", "32", "--folds", "3", "--fix", "batch_size=64", "--fix", "flip=false",
          "--fix", "crop_padding=0", "--no-tensorboard"]
KNOWN = {2: ["--max-depth", "3", "--epochs", "4", "--fix", "synthetic_size=600"],
         3: ["--max-depth", "4", "--epochs", "4", "--fix", "synthetic_size=1200"],
         4: ["--max-depth", "4", "--epochs", "4", "--fix", "synthetic_size=1200"]}


def _study(tmp_path: Path, name: str, *argv: str) -> tuple[str, dict]:
    runs = tmp_path / "runs"
    done = convscope("depth", "--runs-dir", str(runs), "--name", name, *COMMON, *argv, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout, json.loads((runs / "depth" / name / "results.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize(("blocks", "seed"), [(2, 1), (3, 0), (3, 1), (4, 0), (4, 1)])
def test_depth_study_recommends_the_depth_the_task_needs(blocks: int, seed: int, tmp_path: Path) -> None:
    stdout, results = _study(tmp_path, f"k{blocks}s{seed}", "--data", f"synthetic-depth{blocks}", "--seed", str(seed),
                             *KNOWN[blocks])
    assert f"recommended depth: {blocks} — " in stdout, stdout
    means = {v["blocks"]: v["mean"] for v in results["variants"]}
    assert all(means[d] < 0.6 for d in means if d < blocks), means  # too shallow: at chance
    assert all(means[d] > 0.95 for d in means if d >= blocks), means
    assert not results["problems"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_an_under_trained_depth_study_warns_and_recommends_nothing(seed: int, tmp_path: Path) -> None:
    """Two epochs of 600 images: no learning curve to judge (depth 3 and 4 still climb at the last epoch)."""
    stdout, results = _study(tmp_path, f"short{seed}", "--data", "synthetic-depth3", "--seed", str(seed),
                             "--max-depth", "4", "--epochs", "2", "--fix", "synthetic_size=600")
    assert "no recommendation: " in stdout and "trained for 2 epochs: a learning curve needs at least 4 epochs" \
        in stdout, stdout
    assert "rerun with --epochs 12" in stdout and "recommended depth" not in stdout
    assert results["problems"] and not any(v["recommended"] for v in results["variants"])
