"""The checks of a run's settings that need the file system but nothing heavy: done by the
command line before torch, MLflow or a data set is loaded, so such a mistake is one line at once.

What needs the data itself (its classes, its images) or the machine (a GPU) is checked where it
is loaded; this only asks whether the named things exist and can be written.
"""

from __future__ import annotations

import re
from pathlib import Path

from convscope.tracking.faults import check_writable
from convscope.tracking.stores import resolve_stores
from convscope.train.config_sections import NAMED_DATA, SYNTHETIC_DEPTH, RunConfig
from convscope.train.errors import ConfigError
from convscope.train.folders import check_folder

DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def preflight(config: RunConfig, *, tracking: bool = True) -> None:
    """ConfigError naming the flag for a ``--data`` folder or ``--probe`` file that does not
    exist, a ``--device`` that names no device, a ``--runs-dir`` that cannot be written, or (with
    ``tracking``: the command will log to MLflow) an MLflow tracking URI (``--mlflow-uri``,
    ``MLFLOW_TRACKING_URI``) that is malformed or does not answer."""
    data = config.data
    if data.data not in NAMED_DATA and not SYNTHETIC_DEPTH.fullmatch(data.data):
        check_folder(Path(data.data).expanduser())
    for probe in data.probe:
        if not Path(probe).expanduser().is_file():
            raise ConfigError(f"--probe {probe}: no such file")
    if not DEVICE.fullmatch(config.optim.device):
        raise ConfigError(f"--device {config.optim.device}: use auto, cpu, cuda, cuda:N or mps")
    check_writable(config.tracking.runs_dir, "--runs-dir")
    if tracking and config.tracking.mlflow:
        resolve_stores(config.tracking.runs_dir, config.tracking.mlflow_uri)
