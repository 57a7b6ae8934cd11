"""Run settings shared by the commands that train many runs (``search``, ``depth``): flags → overrides."""

from __future__ import annotations

import argparse
from typing import Any

from train.cliargs import load_config_file
from train.config import PRESETS

# flag dest -> (config section, field); a flag left out keeps the config file's or the preset's value
RUN_FLAGS: dict[str, tuple[str, str]] = {
    "data": ("data", "data"),
    "epochs": ("optim", "epochs"),
    "image_size": ("model", "image_size"),
    "device": ("optim", "device"),
    "seed": ("optim", "seed"),
    "runs_dir": ("tracking", "runs_dir"),
    "experiment": ("tracking", "experiment"),
    "mlflow_uri": ("tracking", "mlflow_uri"),
    "mlflow": ("tracking", "mlflow"),
    "tensorboard": ("tracking", "tensorboard"),
}


def add_run_flags(group: argparse._ArgumentGroup, *, config_help: str, data_help: str, epochs_help: str) -> None:
    """``--config``, ``--preset`` and the run settings in RUN_FLAGS except ``--seed`` (each command words that)."""
    group.add_argument("--config", metavar="FILE", help=config_help)
    group.add_argument("--preset", choices=sorted(PRESETS), help="starting network (default: seed)")
    group.add_argument("--data", help=data_help)
    group.add_argument("--epochs", type=int, help=epochs_help)
    group.add_argument("--image-size", type=int, help="input size (default: 64)")
    group.add_argument("--device", help="auto (default), cpu, cuda, cuda:N, mps")
    group.add_argument("--runs-dir", help="where the embedded stores live (default: runs)")
    group.add_argument("--experiment", help="MLflow experiment / TensorBoard folder (default: convscope)")
    group.add_argument("--mlflow-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or embedded)")
    group.add_argument("--mlflow", action=argparse.BooleanOptionalAction, default=None, help="log to MLflow")
    group.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                       help="log to TensorBoard")


def run_overrides(args: argparse.Namespace) -> tuple[str, dict[str, dict[str, Any]], dict[str, Any]]:
    """(preset, section -> field -> value, the config file's ``search:`` section): file, then flags."""
    file_preset, overrides = load_config_file(args.config) if args.config else (None, {})
    search = overrides.pop("search", {})
    for dest, (section, name) in RUN_FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            overrides.setdefault(section, {})[name] = value
    return args.preset or file_preset or "seed", overrides, search if isinstance(search, dict) else {}
