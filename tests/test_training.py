"""Training through the public API: accuracy, reproducibility, callbacks, early stopping."""

from __future__ import annotations

from pathlib import Path

import pytest

from convscope.train.config import build_config
from convscope.train.run import run


def quiet(line: str) -> None:
    pass


def config(tmp_path: Path, preset: str = "seed", **optim):  # type: ignore[no-untyped-def]
    return build_config(preset, {
        "optim": optim,
        "data": {"synthetic_size": optim.pop("size", 6000)} if "size" in optim else {},
        "tracking": {"runs_dir": str(tmp_path), "mlflow": False, "tensorboard": False, "visuals": False},
    })


@pytest.mark.slow
def test_seed_reaches_90_percent_on_synthetic_within_5_epochs(tmp_path: Path) -> None:
    result = run(config(tmp_path, epochs=5, seed=0), progress=False, echo=quiet)
    assert result.final["val/accuracy"] >= 0.90, result.history


def test_cpu_runs_are_reproducible(tmp_path: Path) -> None:
    a = run(config(tmp_path / "a", "tiny", epochs=2, size=400), progress=False, echo=quiet)
    b = run(config(tmp_path / "b", "tiny", epochs=2, size=400), progress=False, echo=quiet)
    assert [h["val/loss"] for h in a.history] == [h["val/loss"] for h in b.history]


def test_epoch_callback_sees_every_epoch_and_may_stop_the_run(tmp_path: Path) -> None:
    seen: list[int] = []

    class Stop(Exception):
        pass

    def on_epoch_end(epoch: int, metrics: dict) -> None:
        seen.append(epoch)
        assert {"train/loss", "val/accuracy", "lr"} <= set(metrics)
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        run(config(tmp_path, "tiny", epochs=4, size=300), on_epoch_end=on_epoch_end, progress=False, echo=quiet)
    assert seen == [1, 2]


def test_patience_stops_early(tmp_path: Path) -> None:
    result = run(config(tmp_path, "tiny", epochs=30, size=200, patience=1, lr=3.0), progress=False, echo=quiet)
    assert result.stopped_early and len(result.history) < 30


def test_non_finite_loss_fails_the_run_with_a_reason(tmp_path: Path) -> None:
    from convscope.train.errors import NonFiniteLossError

    with pytest.raises(NonFiniteLossError, match="lower --lr"):
        run(config(tmp_path, "tiny", epochs=3, size=300, lr=1e12, schedule="constant"), progress=False, echo=quiet)
