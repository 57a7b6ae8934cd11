"""One Optuna trial = one full convscope training run, tracked like any other.

The trial's config comes from ``search.space.suggest``; it trains through
``train.run``'s public API with an ``on_epoch_end`` callback that reports the
metric and raises ``optuna.TrialPruned`` when the pruner says so (``train``
never imports optuna). Every trial is an MLflow child run of the study's parent
run and its own TensorBoard run (with its hyperparameters in the hparams
plugin). Outcomes:

- pruned by the pruner → PRUNED in Optuna, MLflow run FINISHED with ``convscope.status=pruned``;
- CUDA out of memory → PRUNED with the reason recorded, GPU memory released;
- NaN/inf loss → FAIL with the reason (a failed trial can never be the best);
- any other error → FAIL, the error in the user attribute ``error`` and the MLflow run FAILED;
- Ctrl-C → the MLflow run KILLED, the interrupt goes on to stop the study;
- the study's time budget ran out (``--timeout``) → at the end of that epoch (never the last)
  FAIL with the user attribute ``stopped_by_budget``, the MLflow run KILLED with the reason in
  ``convscope.killed``, and ``TimeBudgetSpent`` goes on to stop the worker (``search.budget``).

A trial that finished or was pruned leaves no checkpoint behind when its MLflow run holds its
results (the network as an MLflow model among them) unless ``keep_all``: nothing resumes
it, and a checkpoint (weights and optimizer state) is most of what a trial would keep on disk.
A trial that failed or that the budget stopped keeps it.

The run is opened and closed by ``train.run.train_tracked``, the one run lifecycle.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

from convscope.search.budget import INTERRUPTED_ATTR, STOPPED_ATTR, TimeBudgetSpent, spent, stop_requested
from convscope.search.size_limit import over_budget
from convscope.search.space import SearchSpace, config_keys, suggest
from convscope.search.storage import StudyStorage
from convscope.tracking.base import RunStatus, Tracker
from convscope.tracking.orphans import KILLED_TAG
from convscope.tracking.stores import Stores, resolve_stores
from convscope.tracking.secrets import without_password
from convscope.train.config import to_dict
from convscope.train.config_sections import MACHINE_SETTINGS, RunConfig
from convscope.train.errors import NonFiniteLossError
from convscope.train.prepared import prepare
from convscope.train.run import RunTracking, train_tracked

METRICS = {"val/accuracy": "maximize", "val/loss": "minimize", "val/accuracy_tta": "maximize", "val/loss_tta": "minimize"}
"""What a study may optimise, and which way; the ``_tta`` ones need ``--tta`` (flip test-time augmentation)."""
OPTUNA_STATE = {RunStatus.FINISHED: "COMPLETE", RunStatus.PRUNED: "PRUNED",
                RunStatus.FAILED: "FAIL", RunStatus.KILLED: "FAIL"}
"""The tag ``optuna.state`` of a trial's run, by how the run ended."""


@dataclass(frozen=True)
class StudySettings:
    """Everything a worker needs to run trials of one study (picklable)."""

    study_name: str
    storage: StudyStorage
    base: RunConfig  # the starting config with --fix values applied
    space: SearchSpace
    metric: str = "val/accuracy"
    pruner: str = "median"  # median | hyperband | none
    trials: int | None = 20  # total finished (complete + pruned) trials the study should reach; None: no limit
    jobs: int = 1
    workers_in: str = "processes"  # processes | threads: where the workers beyond the first run (search.workers)
    seed: int = 0
    device: str = "auto"
    parent_run_id: str | None = None
    timeout: float | None = None  # this invocation's time budget in seconds (--timeout); None: none
    deadline: float | None = None  # when trials stop, as time.time() seconds, the same in every worker process
    budget_end: float | None = None  # the whole budget's end: after the final training, if there is one
    started: float | None = None  # time.time() when the invocation started
    model_name: str = ""  # the Model Registry name of the study's best networks; empty = the study's name
    keep_all: bool = False  # keep the checkpoints of trials that finished or were pruned (see Objective)
    final_share: float = 0.0  # of --timeout, kept at the end to train the best network again (search.final_training)

    @property
    def direction(self) -> str:
        return METRICS[self.metric]

    def stores(self) -> Stores:
        return resolve_stores(self.base.tracking.runs_dir, self.base.tracking.mlflow_uri)

    def study_tensorboard_dir(self) -> Path:
        return self.stores().layout.tensorboard_run(self.base.tracking.experiment, self.study_name)


def trial_run_name(study_name: str, number: int) -> str:
    return f"{study_name}-trial-{number:04d}"


from convscope.search.dead_workers import WORKER_PID_ATTR
from convscope.search.pruning import VAL_IMAGES_ATTR

TRIAL_CONFIG_ATTR = "config"
"""The trial's user attribute holding what it trained (``trained_settings``): read back by ``depth --study``."""
TRAINED_SECTIONS = ("model", "data", "optim")


def trained_settings(config: RunConfig) -> dict[str, Any]:
    """What a trial trained, searched and fixed settings alike: the preset and the model, data and
    optim sections of its config (JSON-ready), without the machine's own settings
    (``MACHINE_SETTINGS``). Tracking settings are left out: where a run is stored is not part of
    the network, and a tracking URL may hold a password."""
    whole = to_dict(config)
    return {"preset": config.preset, **{
        section: {key: value for key, value in whole[section].items() if key not in MACHINE_SETTINGS.get(section, ())}
        for section in TRAINED_SECTIONS}}


class Objective:
    def __init__(self, settings: StudySettings, device: str | None = None) -> None:
        self.settings = settings
        self.device = device or settings.device

    def __call__(self, trial: optuna.Trial) -> float:
        settings = self.settings
        config = suggest(trial, settings.space, settings.base)
        too_big = over_budget(config, settings.space.max_params)
        if too_big:  # pruned at once: no run, no time spent; the sampler learns to avoid it
            trial.set_user_attr("pruned_reason", f"not trained: {too_big}")
            raise optuna.TrialPruned(f"not trained: {too_big}")
        trial.set_user_attr(TRIAL_CONFIG_ATTR, trained_settings(config))
        trial.set_user_attr(WORKER_PID_ATTR, os.getpid())  # a worker that dies is known by it
        name = trial_run_name(settings.study_name, trial.number)
        config = dataclasses.replace(
            config,
            tracking=dataclasses.replace(config.tracking, run_name=name),
            optim=dataclasses.replace(config.optim, device=self.device),
        )
        prepared = prepare(config, echo=lambda line: None, progress=False)
        checkpoint_dir = prepared.stores.checkpoint_dir(config.tracking.experiment, prepared.run_name)
        finished_or_pruned = False  # then nothing resumes the trial: its checkpoint can go
        trial.set_user_attr(VAL_IMAGES_ATTR, len(prepared.data.val))  # the noise of its accuracy, for the pruner
        tb_dir = settings.study_tensorboard_dir() / f"trial-{trial.number:04d}"
        stopped: list[str] = []  # why the budget stopped the trial, once it has

        def on_epoch_end(epoch: int, metrics: Mapping[str, float]) -> None:
            trial.report(metrics[settings.metric], epoch)
            if epoch < config.optim.epochs and trial.should_prune():  # pruning the last epoch saves nothing
                raise optuna.TrialPruned(f"pruned by the pruner after epoch {epoch}")
            if stop_requested():  # the interrupt that the study's process passed on may have been lost
                raise KeyboardInterrupt("the study was stopped")
            if epoch < config.optim.epochs and spent(settings.deadline):
                stopped.append(f"the time budget (--timeout) ran out in epoch {epoch} of {config.optim.epochs}")
                trial.set_user_attr(STOPPED_ATTR, stopped[0])
                raise TimeBudgetSpent(stopped[0])

        def final_tags(status: RunStatus) -> dict[str, str]:
            return {"optuna.state": OPTUNA_STATE[status], **({KILLED_TAG: stopped[0]} if stopped else {})}

        def record_links(tracker: Tracker) -> None:
            links = tracker.links()
            for key in ("mlflow_run_id", "mlflow_run_url", "mlflow_tracking_uri"):
                if key in links:  # the study's storage is no place for a password
                    trial.set_user_attr(key, without_password(links[key]))
            trial.set_user_attr("tensorboard_dir", str(tb_dir))
            if "mlflow_artifact_uri" in links:
                trial.set_user_attr("activations", links["mlflow_artifact_uri"].rstrip("/") + "/activations")

        tracking = RunTracking(  # named shortly in MLflow: its runs table shows ~20 characters of a name
            name=f"trial-{trial.number:04d}", shown=name, parent_run_id=settings.parent_run_id,
            tensorboard_dir=tb_dir, hparams={**trial.params, "trial": trial.number},
            tags={"optuna.study": settings.study_name, "optuna.trial": str(trial.number), "convscope.kind": "trial"},
            pruned=(optuna.TrialPruned, torch.OutOfMemoryError), final_tags=final_tags,  # out of memory: pruned
        )
        try:
            try:
                result, _ = train_tracked(prepared, tracking, on_open=record_links, on_epoch_end=on_epoch_end,
                                          progress=False, echo=lambda line: None, compared=config_keys(trial.params))
            except optuna.TrialPruned as pruned:
                trial.set_user_attr("pruned_reason", str(pruned))
                finished_or_pruned = True
                raise
            except torch.OutOfMemoryError as error:
                reason = f"CUDA out of memory: {str(error).splitlines()[0]}"
                trial.set_user_attr("pruned_reason", reason)
                finished_or_pruned = True
                raise optuna.TrialPruned(reason) from None
            except NonFiniteLossError as error:
                trial.set_user_attr("error", str(error))
                raise
            except KeyboardInterrupt as stop:
                if not isinstance(stop, TimeBudgetSpent):  # Ctrl-C or SIGTERM: stopped, not failed
                    trial.set_user_attr(INTERRUPTED_ATTR, "Ctrl-C or SIGTERM")
                raise
            except Exception as error:
                trial.set_user_attr("error", f"{type(error).__name__}: {error}")
                raise
            finished_or_pruned = True
            return result.final[settings.metric]
        finally:
            if finished_or_pruned and config.tracking.mlflow and not settings.keep_all:
                shutil.rmtree(checkpoint_dir, ignore_errors=True)
            del prepared  # the worker releases the memory once the trial is over (search.study.worker)
