"""A time-boxed study's last step: the best trial's network trained again, longer, on train+validation.

With ``--final-share X`` and ``--timeout T`` trials start only during the first (1 - X)·T; in the time
left the best completed trial's network (its every setting, read from its MLflow model) is trained
again as one more child run of the study's parent run, named ``<study>-final``:

- on the training and validation photos together, all but ``FINAL_VAL_FRACTION`` of them (kept only
  to draw the run's curve; the held-out test split stays aside, as for every trial);
- for as many epochs as fit in the time left (``plan_final``): the best trial's median epoch time,
  scaled by the final run's larger training split (``final_train_images``) and, on a CPU where the trials shared the cores,
  divided by ``CPU_SPEEDUP`` (the final run has them all), into 90% of what is left; at least the trial's
  own epochs (else there is no final training and the best trial stays the champion), at most
  ``MAX_EPOCH_FACTOR`` times them;
- on a CPU with as many threads as cores are idle when it starts (``train.threads.idle_cores``: the
  workers have ended; another program's busy cores are left to it, so no thread team waits on them).

The final run is registered as a new version of the study's model with the alias ``champion``: the
network the study hands over, and the one scored on the test split.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from convscope.train.config_sections import RunConfig

FINAL_VAL_FRACTION = 0.05
"""The share of the non-test photos the final run keeps out of training, to draw its curve."""
MAX_EPOCH_FACTOR = 4
"""The final run trains at most this many times the best trial's epochs."""
FILL = 0.9
"""The share of the time left that the planned epochs may take (the rest: its start and its end)."""
FINAL_KIND = "final"
CPU_SPEEDUP = 1.25
"""How much faster an epoch runs on every core of a CPU than on a share of them beside other
workers: a cautious figure (two threads against one on an idle 2-core machine: 1.3–1.4×)."""


@dataclass(frozen=True)
class FinalPlan:
    """The final training of trial ``trial``'s network: ``epochs`` of about ``epoch_seconds`` each."""

    trial: int
    run_id: str
    epochs: int
    epoch_seconds: float

    def line(self, seconds_left: float) -> str:
        from convscope.search.budget import format_duration

        return (f"final training: trial #{self.trial}'s network again on train+validation for {self.epochs} epochs "
                f"(about {format_duration(self.epochs * self.epoch_seconds)} of the {format_duration(seconds_left)} "
                "left); it becomes the champion")


def plan_final(trial: int, run_id: str, trial_epochs: int, epoch_seconds: list[float], images: tuple[int, int],
               seconds_left: float, speedup: float = 1.0) -> tuple[FinalPlan | None, str]:
    """The final training that fits in ``seconds_left`` (see the module), or None and why not.
    ``images``: the training photos of the trial and of the final run (``final_train_images``)."""
    if not epoch_seconds or min(images) < 1:
        return None, f"no final training: trial #{trial} recorded no epoch times or photo counts"
    scale = images[1] / images[0] / speedup
    per_epoch = statistics.median(epoch_seconds) * scale
    fits = math.floor(FILL * seconds_left / per_epoch)
    if fits < trial_epochs:
        return None, (f"no final training: {trial_epochs} epochs of trial #{trial}'s network on train+validation "
                      f"need about {trial_epochs * per_epoch / 60:.1f} min, {max(0.0, seconds_left) / 60:.1f} min "
                      "are left: the best trial stays the champion")
    return FinalPlan(trial, run_id, min(fits, MAX_EPOCH_FACTOR * trial_epochs), per_epoch), ""


def final_train_images(trial_train: int, trial_val: int, trial_val_fraction: float, limited: bool) -> int:
    """About how many photos the final run trains on: ``1 - FINAL_VAL_FRACTION`` of the photos the
    trial's splits were drawn from (its training and validation photos; when ``--train-limit``
    ``limited`` its training split, its validation photos over its validation share)."""
    whole = round(trial_val / trial_val_fraction) if limited else trial_train + trial_val
    return round((1 - FINAL_VAL_FRACTION) * whole)


def speedup_over_trials(jobs: int, device: str) -> float:
    """``CPU_SPEEDUP`` when the trials were several CPU workers sharing the cores, else 1."""
    from convscope.search.defaults import on_cpu

    return CPU_SPEEDUP if jobs > 1 and on_cpu(device) else 1.0


def final_config(trained: RunConfig, base: RunConfig, study_name: str, epochs: int) -> RunConfig:
    """The best trial's ``trained`` config for the final run: ``base``'s machine and tracking
    settings, the validation split shrunk to ``FINAL_VAL_FRACTION``, ``epochs`` epochs."""
    from convscope.train.config_sections import MACHINE_SETTINGS

    data = dataclasses.replace(trained.data, val_fraction=FINAL_VAL_FRACTION, train_limit=0,
                               **{key: getattr(base.data, key) for key in MACHINE_SETTINGS["data"]})
    optim = dataclasses.replace(trained.optim, epochs=epochs, patience=0,
                                **{key: getattr(base.optim, key) for key in MACHINE_SETTINGS["optim"]})
    tracking = dataclasses.replace(base.tracking, run_name=f"{study_name}-final")
    return dataclasses.replace(trained, data=data, optim=optim, tracking=tracking)


def epoch_times(tracking_uri: str, run_id: str) -> list[float]:
    """The ``epoch_seconds`` a run logged, one per epoch."""
    from mlflow import MlflowClient

    return [m.value for m in MlflowClient(tracking_uri).get_metric_history(run_id, "epoch_seconds")]


def train_final(plan: FinalPlan, base: RunConfig, study_name: str, parent_run_id: str, tracking_uri: str,
                echo: Callable[[str], None], keep_checkpoint: bool = False) -> str:
    """Train the final run (see the module); its MLflow run id. Once it finished its checkpoint is
    deleted (its network is in MLflow) unless ``keep_checkpoint`` (``--keep-all``)."""
    import shutil

    import torch

    from convscope.search.sources import run_config
    from convscope.train.prepared import prepare
    from convscope.train.run import RunTracking, train_tracked
    from convscope.train.threads import idle_cores, threads_for_idle

    config = final_config(run_config(base, plan.run_id), base, study_name, plan.epochs)
    threads = torch.get_num_threads()
    try:
        prepared = prepare(config, echo=lambda line: None, progress=False)
        if prepared.device.type == "cpu":  # the workers have ended: every core that is idle now
            torch.set_num_threads(threads_for_idle(os.cpu_count() or 1, idle_cores()))
        tracking = RunTracking(name=f"{study_name}-final", parent_run_id=parent_run_id,
                               tags={"convscope.kind": FINAL_KIND, "optuna.study": study_name,
                                     "final_of_trial": str(plan.trial)})
        result, tracker = train_tracked(prepared, tracking, progress=False, echo=echo)
        if not keep_checkpoint:
            shutil.rmtree(prepared.stores.checkpoint_dir(config.tracking.experiment, prepared.run_name),
                          ignore_errors=True)
    finally:
        torch.set_num_threads(threads)
    last = result.history[-1] if result.history else {}
    echo(f"final training done: {plan.epochs} epochs, val/accuracy {last.get('val/accuracy', float('nan')):.4f} on "
         f"its {FINAL_VAL_FRACTION:.0%} of photos kept to draw its curve (not comparable with the trials')")
    return str(tracker.links()["mlflow_run_id"])


def register_final(client: Any, name: str, run_id: str, plan: FinalPlan, study_name: str) -> str:
    """Register the final run's network as a version of ``name`` with the alias champion; its version."""
    from convscope.search.registry import CHAMPION
    from convscope.train.mlflow_model import MODEL_ARTIFACT

    version = client.create_model_version(name, source=f"runs:/{run_id}/{MODEL_ARTIFACT}", run_id=run_id, tags={
        "optuna.study": study_name, "final_of_trial": str(plan.trial), "epochs": str(plan.epochs),
        "trained_on": "train+validation"})
    client.set_registered_model_alias(name, CHAMPION, version.version)
    return str(version.version)


def best_completed(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The study's best trial when it completed with a network in MLflow, else None."""
    from convscope.search.study import best_trial

    best = best_trial(study)
    return best if best is not None and "mlflow_run_id" in best.user_attrs else None
