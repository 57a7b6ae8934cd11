"""``convscope train`` SIGKILLed at one phase of one epoch, for the resume tests.

    python kill_at_phase.py PHASE EPOCH train-flags...

PHASE: ``before-checkpoint`` (the epoch trained, its checkpoint not written), ``after-checkpoint``
(written, its metrics not yet logged), ``after-metrics`` (logged to MLflow), ``after-line`` (its
line printed, whatever the tracker's worker has written by then).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any


def main() -> int:
    phase, epoch, flags = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

    def die() -> None:
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    import convscope.train.resumed_epoch as run_module
    from convscope.tracking.mlflow_sink import MlflowTracker

    real_save = run_module.save_checkpoint

    def save_checkpoint(directory: Any, model: Any, config: Any, extra: Any, loop_state: dict[str, Any]) -> None:
        if phase == "before-checkpoint" and loop_state["epoch"] == epoch:
            die()
        real_save(directory, model, config, extra, loop_state)
        if phase == "after-checkpoint" and loop_state["epoch"] == epoch:
            die()

    run_module.save_checkpoint = save_checkpoint
    real_log_metrics = MlflowTracker.log_metrics

    def log_metrics(self: MlflowTracker, metrics: Any, step: int) -> None:
        real_log_metrics(self, metrics, step)
        if phase == "after-metrics" and step == epoch and "val/accuracy" in metrics:
            die()

    MlflowTracker.log_metrics = log_metrics  # type: ignore[method-assign]

    def echo(line: str) -> None:
        print(line, flush=True)
        if phase == "after-line" and line.startswith(f"epoch {epoch}/"):
            die()

    import convscope.cli.train_cmd as train_cmd

    train_cmd._echo = lambda quiet: echo  # type: ignore[assignment]
    from convscope.cli.main import main as convscope_main

    return convscope_main(["train", *flags])


if __name__ == "__main__":
    raise SystemExit(main())
