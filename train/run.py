"""One training run, end to end: config → data → model → epochs → tracked results.

``train.prepared.prepare`` does everything that can fail on bad input (data, model, probes, a
runs folder that cannot be written) before any tracker is opened. ``execute`` trains and logs into a tracker the
caller owns. ``run`` is both plus opening and closing the trackers, with the
right status (FINISHED, FAILED, or KILLED on Ctrl-C/SIGTERM).
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from convscope.tracking.base import Tracker
from convscope.pictures.epoch_visuals import EpochVisuals, picture_mode
from convscope.tracking.faults import store_error
from convscope.tracking.lifecycle import tracked_run
from convscope.tracking.stores import open_tracker
from convscope.train import provenance
from convscope.train.batches import Batches, LabelTap, make_batches
from convscope.train.checkpoint import STATE_FILE, Checkpoint, save_model
from convscope.train.config_sections import RunConfig
from convscope.train.loop import evaluate, make_scheduler, train_one_epoch
from convscope.train.step import Scorer, Stepper, graphs_wanted, load_optimizer_state, make_optimizer
from convscope.train.mlflow_model import log_mlflow_model
from convscope.train.prepared import Prepared, prepare
from convscope.train.resumed_epoch import checkpoint_epoch, log_missing_epoch
from convscope.train.run_record import run_config, run_facts, run_params

EpochCallback = Callable[[int, Mapping[str, float]], None]
"""Called after every epoch with (epoch, metrics); may raise to stop the run (e.g. pruning)."""


@dataclass
class RunResult:
    run_name: str
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_loss: float = math.inf
    best_val_accuracy: float = 0.0
    stopped_early: bool = False
    checkpoint_dir: Path | None = None
    links: dict[str, str] = field(default_factory=dict)
    val_images: int = 0
    chance: float = 0.5  # the majority class's share of the validation images

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


def execute(
    prepared: Prepared,
    tracker: Tracker,
    *,
    on_epoch_end: EpochCallback | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    compared: tuple[str, ...] = (),
) -> RunResult:
    """Train ``prepared`` and log everything to ``tracker`` (owned and closed by the caller).

    ``compared``: settings (flag names such as ``depth``) a study varies; always logged as params.
    """
    config, model, device, data = prepared.config, prepared.model, prepared.device, prepared.data
    experiment = config.tracking.experiment
    checkpoint_dir = prepared.stores.checkpoint_dir(experiment, prepared.run_name)
    result = RunResult(prepared.run_name, checkpoint_dir=checkpoint_dir, links=tracker.links(), val_images=len(data.val),
                       chance=float(data.val.labels.bincount().max()) / max(len(data.val), 1))
    graphed, not_graphed = graphs_wanted(config.optim.cuda_graph, device)
    train_batches = make_batches(
        data.train, prepared.normalizer, config.optim.batch_size, device, drop_last=graphed,
        shuffle=True, flip=config.optim.flip, crop_padding=config.optim.crop_padding, seed=config.optim.seed,
    )
    val_batches = make_batches(data.val, prepared.normalizer, max(256, config.optim.batch_size), device)
    optimizer = make_optimizer(model, config.optim, capturable=graphed)
    scheduler = make_scheduler(optimizer, config.optim, len(train_batches))
    start_epoch, best_loss, stale = 0, math.inf, 0
    if prepared.resume is not None:
        state = prepared.resume.loop_state
        start_epoch, best_loss, stale = int(state["epoch"]), float(state["best_val_loss"]), int(state["stale_epochs"])
        load_optimizer_state(optimizer, state["optimizer"])
        if int(state["planned_epochs"]) == config.optim.epochs:
            scheduler.load_state_dict(state["scheduler"])
        else:
            echo(f"--epochs changed from {state['planned_epochs']} to {config.optim.epochs}: the schedule restarts")
        train_batches.generator.set_state(state["batch_rng"])
        torch.set_rng_state(state["torch_rng"])
        result.best_val_loss = best_loss
        result.history = [dict(record) for record in state.get("history", ())]  # the whole curve, not just this part
        result.best_val_accuracy = max((record["val/accuracy"] for record in result.history), default=0.0)
    say = functools.partial(print, file=sys.stderr)
    compiled = torch.compile(model) if config.optim.compile else None
    stepper = Stepper(model, optimizer, scheduler, device, precision=prepared.precision,
                      label_smoothing=config.optim.label_smoothing, graphed=graphed, compiled=compiled, say=say)
    scorer = Scorer(model, device, precision=prepared.precision, tta=config.optim.tta, graphed=graphed, say=say)
    if not graphed and device.type == "cuda":
        echo(f"eager steps: {not_graphed}")
    extra = {
        "run_name": prepared.run_name,
        "class_names": list(data.class_names),
        "normalizer": prepared.normalizer.state(),
        "links": tracker.links(),
    }

    if prepared.resume is None:
        tracker.log_params(run_params(prepared, always=compared))
        tracker.set_tags({**provenance.tags(device, data.fingerprint, config), **run_facts(prepared)})
        if prepared.skipped_csv is not None:
            tracker.log_file(prepared.skipped_csv, "data")
    tracker.log_config(run_config(config))  # again on resume: --epochs may have changed
    if prepared.resume is not None and log_missing_epoch(tracker, prepared.resume.loop_state, prepared.stores.mlflow_uri):
        echo(f"epoch {start_epoch} was checkpointed but not yet logged when the run stopped: logged it now")
    keep_files = not config.tracking.mlflow
    artifact_dir = checkpoint_dir / "activations"  # files are removed once MLflow has them
    visuals = None
    if config.tracking.visuals:
        visuals = EpochVisuals(
            tracker, model.feature_layers(), prepared.probes, data.class_names, artifact_dir,
            first_conv=model.first_conv(), keep_files=keep_files,
            channels=prepared.resume.extra.get("visual_channels") if prepared.resume is not None else None,
            pictures=picture_mode(config.tracking.visual_epochs, device),
        )
        if start_epoch == 0:
            visuals.log(model, step=0)

    last_epoch = start_epoch
    for epoch in range(start_epoch + 1, config.optim.epochs + 1):
        last_epoch = epoch
        lr_at_start = _copy(optimizer.param_groups[0]["lr"])  # a device tensor in a graphed run: read after the epoch
        fit = train_one_epoch(stepper, train_batches, description=f"epoch {epoch}/{config.optim.epochs}",
                              progress=progress)
        lr = float(lr_at_start)  # the epoch's one wait for the device is over: no second wait here
        val, _ = evaluate(model, val_batches, device, scorer=scorer)
        metrics = {
            "train/loss": fit.loss, "train/accuracy": fit.accuracy,
            "val/loss": val.loss, "val/accuracy": val.accuracy,
            **({"val/loss_tta": val.tta_loss, "val/accuracy_tta": val.tta_accuracy} if config.optim.tta else {}),
            "lr": lr, "epoch_seconds": fit.seconds + val.seconds, "train_seconds": fit.seconds,
            "images_per_second": fit.images_per_second,
            **({"first_step_seconds": stepper.captured.first_call_seconds} if epoch == start_epoch + 1 else {}),
        }
        improved = val.loss < best_loss
        best_loss, stale = (val.loss, 0) if improved else (best_loss, stale + 1)
        result.history.append({"epoch": epoch, **metrics})
        if visuals is not None:
            extra["visual_channels"] = visuals.channels  # a resumed run keeps its overview columns
        checkpoint_epoch(tracker, checkpoint_dir, model, config, dict(extra), {  # before the epoch's records
            "epoch": epoch, "planned_epochs": config.optim.epochs, "best_val_loss": best_loss, "stale_epochs": stale,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "batch_rng": train_batches.generator.get_state(), "torch_rng": torch.get_rng_state(),
            "history": [dict(record) for record in result.history],
        })
        tracker.log_metrics(metrics, step=epoch)
        if epoch == start_epoch + 1:
            tracker.set_tags({"convscope.step": stepper.mode,
                              **({"convscope.pictures": visuals.pictures} if visuals is not None else {})})
        if visuals is not None:
            visuals.log(model, step=epoch)
        result.best_val_loss = best_loss
        result.best_val_accuracy = max(result.best_val_accuracy, val.accuracy)
        if progress:
            echo(
                f"epoch {epoch}/{config.optim.epochs}  train loss {fit.loss:.4f} acc {fit.accuracy:.3f}  "
                f"val loss {val.loss:.4f} acc {val.accuracy:.3f}"
                + (f" (tta {val.tta_accuracy:.3f})" if val.tta_accuracy is not None else "")
                + f"  {fit.images_per_second:,.0f} img/s"
            )
        if on_epoch_end is not None:
            try:
                on_epoch_end(epoch, metrics)
            except BaseException:  # pruned or stopped here: the run keeps its last epoch's pictures
                if visuals is not None:
                    visuals.finish()
                raise
        if config.optim.patience and stale >= config.optim.patience:
            result.stopped_early = True
            echo(f"early stop after epoch {epoch}: no better validation loss for {stale} epochs (--patience)")
            break

    _log_final(prepared, tracker, visuals, val_batches, checkpoint_dir, last_epoch)
    return result


def _log_final(
    prepared: Prepared, tracker: Tracker, visuals: EpochVisuals | None, val_batches: Batches, checkpoint_dir: Path,
    last_epoch: int,
) -> None:
    """Confusion matrix (at the last epoch's step), analysis-set activations and the final model."""
    config, model, data = prepared.config, prepared.model, prepared.data
    tap = LabelTap(val_batches)  # a streamed pass may drop lost files: pair predictions with what was there
    _, predictions = evaluate(model, tap, prepared.device, return_predictions=True, precision=prepared.precision)
    if visuals is not None:
        visuals.finish()  # the last epoch's pictures, when they are drawn only at the ends
        order = analysis_order(config, len(data.val))
        batches, kept_order = [], []
        for i in range(0, len(order), 256):
            images, kept = data.val.take_available(order[i : i + 256])
            batches.append(prepared.normalizer(images.to(prepared.device)).contiguous(memory_format=torch.channels_last))
            kept_order.append(order[i : i + 256][kept])
        order = torch.cat(kept_order) if kept_order else order[:0]
        assert predictions is not None
        visuals.log_final(model, batches, data.val.labels[order], tap.labels(), predictions, step=last_epoch,
                          analysis_ids=[data.val.ids[i] for i in order.tolist()], data_fingerprint=data.fingerprint)
    final_dir = checkpoint_dir / "final"
    save_model(final_dir, model, config, {"class_names": list(data.class_names), "normalizer": prepared.normalizer.state()},
               epoch=-1)
    example, _ = data.val.take_available(torch.arange(min(2, len(data.val))))
    log_mlflow_model(tracker, final_dir, example.permute(0, 2, 3, 1).cpu().numpy())
    if len(data.vanished):  # files lost while training: in skipped_files.csv, logged again
        csv_path = data.vanished.csv_path or data.write_skipped_csv(checkpoint_dir / "skipped_files.csv")
        data.vanished.flush()
        print(f"convscope: {data.vanished.summary()}", file=sys.stderr)
        tracker.log_file(csv_path, "data")


def _copy(value: Any) -> Any:
    return value.clone() if isinstance(value, torch.Tensor) else value


def analysis_order(config: RunConfig, val_count: int) -> torch.Tensor:
    """Indices into the validation set of the analysis set: ``--analysis-size`` images drawn by the data seed."""
    count = min(config.data.analysis_size, val_count)
    gen = torch.Generator().manual_seed(config.data.effective_seed(config.optim.seed) + 2)
    return torch.randperm(val_count, generator=gen)[:count]


@dataclass(frozen=True)
class RunTracking:
    """How a training run is tracked: what ``open_tracker`` needs beyond the run's own config and
    what ``tracked_run`` needs to close it. ``name`` (default: the prepared run's name) is the run's
    name in MLflow; ``shown`` the name the end-of-run line uses (default: ``name``)."""

    name: str = ""
    shown: str = ""
    parent_run_id: str | None = None
    resume_run_id: str | None = None
    tensorboard_dir: Path | None = None
    hparams: Mapping[str, Any] | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    pruned: tuple[type[BaseException], ...] = ()
    final_tags: Callable[[Any], Mapping[str, str]] | None = None
    note: str | Callable[[], str] = ""
    where: str | None = None


def train_tracked(prepared: Prepared, tracking: RunTracking, *, on_open: Callable[[Tracker], None] | None = None,
                  **execute_options: Any) -> tuple[RunResult, Tracker]:
    """The one run lifecycle of every training run (a ``convscope train`` run, a study's trial, a
    depth study's fold): open its tracker (a child run when ``tracking.parent_run_id`` is given),
    call ``on_open`` with it, ``execute`` with ``execute_options``, and close it with the status
    the run earned on every exit path (``tracking.lifecycle.tracked_run``)."""
    settings = prepared.config.tracking
    name = tracking.name or prepared.run_name
    tracker = open_tracker(
        prepared.stores, settings.experiment, name, mlflow=settings.mlflow, tensorboard=settings.tensorboard,
        parent_run_id=tracking.parent_run_id, resume_run_id=tracking.resume_run_id,
        tensorboard_dir=tracking.tensorboard_dir, hparams=tracking.hparams, tags=dict(tracking.tags),
    )
    with tracked_run(tracker, tracking.shown or name, pruned=tracking.pruned, final_tags=tracking.final_tags,
                     note=tracking.note, where=tracking.where):
        if on_open is not None:
            on_open(tracker)
        return execute(prepared, tracker, **execute_options), tracker


def run(
    config: RunConfig,
    *,
    on_epoch_end: EpochCallback | None = None,
    progress: bool = True,
    resume: Checkpoint | None = None,
    echo: Callable[[str], None] = print,
) -> RunResult:
    """Prepare, open the configured trackers, execute, and close them with the right status
    (``tracking.lifecycle.tracked_run``: one stderr line for a run that did not finish).

    Raises:
        StoreWriteError: the runs folder or the MLflow store could not be written (no space left,
            read-only): one line naming it, what to free, and where the last checkpoint is.
        ConfigError: bad input, before any run is opened (``prepare``).
    """
    prepared: Prepared | None = None
    try:
        prepared = prepare(config, resume=resume, echo=echo, progress=progress)
        resume_run_id = None
        if resume is not None:
            resume_run_id = resume.extra.get("links", {}).get("mlflow_run_id")
        ready = prepared

        def announce(tracker: Tracker) -> None:
            echo(f"run {ready.run_name} on {ready.device}" + "".join(f"; {where}" for where in _where_to_watch(tracker.links())))

        result, _ = train_tracked(prepared, RunTracking(
            resume_run_id=resume_run_id, tags={"convscope.kind": "train"},
            note=lambda: f"completed epochs stay browsable; {_checkpoint_note(ready)}",
            where=str(prepared.stores.runs_dir) if prepared.stores.embedded else None,
        ), on_open=announce, on_epoch_end=on_epoch_end, progress=progress, echo=echo)
        return result
    except Exception as error:
        stores = prepared.stores if prepared is not None else None
        converted = store_error(error, config.tracking.runs_dir, "--runs-dir", note=_checkpoint_note(prepared),
                                server="" if stores is None or stores.embedded else stores.mlflow_uri)
        if converted is None:
            raise
        raise converted from error


def _where_to_watch(links: dict[str, str]) -> list[str]:
    """Where a run can be followed while it trains, one phrase per store (from ``Tracker.links``)."""
    places = []
    if "mlflow_run_url" in links:
        places.append(f"MLflow {links['mlflow_run_url']}")
    elif "mlflow_run_id" in links:
        places.append(f"MLflow run {links['mlflow_run_id']} in {links['mlflow_tracking_uri']}")
    if "tensorboard_dir" in links:
        places.append(f"TensorBoard {links['tensorboard_dir']}")
    return places


def _checkpoint_note(prepared: Prepared | None) -> str:
    """Where the last complete checkpoint of ``prepared``'s run is, if one was written."""
    if prepared is None:
        return ""
    folder = prepared.stores.checkpoint_dir(prepared.config.tracking.experiment, prepared.run_name)
    if not (folder / STATE_FILE).is_file():
        return "no epoch was checkpointed"
    return f"the last complete epoch's checkpoint is {folder}; continue with: convscope train --resume {folder}"
