"""The one epoch a kill can leave half recorded, made whole on ``--resume``.

Every epoch's checkpoint is written before that epoch's metrics reach the trackers (both on the
tracker's worker thread, in that order). A process killed between the two leaves the trackers one
epoch behind the checkpoint, never ahead of it, so a resumed run never logs an epoch twice. The
checkpoint keeps every epoch's metrics (``history`` in its loop state: one mapping per epoch, with
its ``epoch``), and ``log_missing_epoch`` logs the last one when MLflow does not hold it. Without MLflow they go to TensorBoard again, which keeps
the later of two values written for one step.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from convscope.tracking.background import in_order
from convscope.tracking.base import Tracker
from convscope.train.checkpoint import save_checkpoint, snapshot
from convscope.train.config_sections import RunConfig
from convscope.train.step import plain_optimizer_state

#: The metric whose steps tell which epochs MLflow holds (every epoch logs it).
EPOCH_METRIC = "val/accuracy"


def log_missing_epoch(tracker: Tracker, loop_state: Mapping[str, Any], tracking_uri: str) -> bool:
    """Log the checkpoint's epoch (``loop_state``) to ``tracker`` unless its MLflow run already holds
    it; True when it was logged. Checkpoints written before they kept their history log nothing."""
    history = loop_state.get("history")
    if not history:
        return False
    metrics = {key: value for key, value in history[-1].items() if key != "epoch"}
    epoch = int(history[-1]["epoch"])
    run_id = tracker.links().get("mlflow_run_id")
    if run_id is not None:
        from convscope.tracking.mlflow_sink import logged_steps

        if epoch in logged_steps(tracking_uri, run_id, EPOCH_METRIC):
            return False
    tracker.log_metrics(metrics, step=epoch)
    return True


def checkpoint_epoch(tracker: Tracker, directory: Path, model: torch.nn.Module, config: RunConfig,
                     extra: dict[str, Any], loop_state: dict[str, Any]) -> None:
    """Snapshot the epoch's state on the device now; copy and write it on the tracker's worker, in order
    with the epoch's other records, which the caller logs after this call (a full disk surfaces at the
    next tracker call: ``tracking.background``)."""
    weights, state = snapshot(model.state_dict()), snapshot(loop_state)
    in_order(tracker, lambda: save_checkpoint(directory, weights, config, extra, {
        **state, "optimizer": plain_optimizer_state(state["optimizer"])}), "checkpoint")
