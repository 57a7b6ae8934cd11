"""The runs folder: the one place that knows what lies where under ``--runs-dir``.

::

    <runs>/mlflow.db                          MLflow's embedded sqlite store
    <runs>/mlartifacts/                       its artifacts
    <runs>/tensorboard/<experiment>/<run>/    TensorBoard event files (a study's trials under the study's name)
    <runs>/checkpoints/<experiment>/<run>/    model, config and training state of every run (``--resume``)
    <runs>/optuna/journal.log                 the default study storage
    <runs>/depth/<name>/                      a depth study's table and figures
    <runs>/cache/                             decoded images of image folders (``--cache-dir``)
    <runs>/datasets/                          torchvision data sets (``--dataset-dir``)
    <runs>/logs/                              the logs of the servers ``convscope ui`` starts
    <runs>/logs/mlflow-ui.url                 where the running ``convscope ui`` serves MLflow (links use it)
    <runs>/.mlflow-open.lock                  serialises creating the embedded MLflow store
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunsLayout:
    root: Path

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.mlflow_db}"

    @property
    def artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    def tensorboard_run(self, experiment: str, *names: str) -> Path:
        return self.tensorboard.joinpath(experiment, *names)

    def checkpoint(self, experiment: str, run_name: str) -> Path:
        return self.root / "checkpoints" / experiment / run_name

    @property
    def study_journal(self) -> Path:
        return self.root / "optuna" / "journal.log"

    def depth_report(self, name: str) -> Path:
        return self.root / "depth" / name

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def ui_address(self) -> Path:
        return self.logs / "mlflow-ui.url"

    @property
    def open_lock(self) -> Path:
        return self.root / ".mlflow-open.lock"
