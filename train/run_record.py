"""What a run logs about itself: the params people compare runs by, the complete config, the facts it found."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

import torch

from convscope.tracking.secrets import without_password
from convscope.train.config import build_config, flatten, to_dict
from convscope.train.config_sections import RunConfig
from convscope.train.model import count_parameters
from convscope.train.prepared import Prepared


#: Settings every run shows as MLflow params, beside those that differ from its preset.
KEY_SETTINGS = ("preset", "depth", "epochs")
#: Settings that say where a run is stored or what it shows rather than what it trained: never params.
_NOT_COMPARED = {"runs_dir", "experiment", "run_name", "mlflow", "tensorboard", "mlflow_uri", "visuals", "visual_epochs",
                 "cache_dir", "dataset_dir", "download", "memory_fraction", "probes_per_class", "probe",
                 "analysis_size", "in_channels", "num_classes"}


def _settings(config: RunConfig) -> dict[str, Any]:
    """Every setting by its flag name (``depth``, ``lr``: field names are unique across sections)."""
    return {key.rsplit(".", 1)[-1]: value for key, value in flatten(config).items()}


def _shown(value: Any) -> Any:
    """Floats to 4 significant digits (the exact value is in ``config.yaml``); everything else as is."""
    return f"{value:.4g}" if isinstance(value, float) else value


def run_params(prepared: Prepared, always: tuple[str, ...] = ()) -> dict[str, Any]:
    """The few settings people compare runs by, as MLflow params named like their flags: the
    ``KEY_SETTINGS``, the ``always`` settings (what a study varies) and every setting that differs
    from the preset. Kept short on purpose: MLflow lists a run's params above every image on its
    chart cards, in a fixed-height card, so each line of params hides a line of the picture. The
    complete config is ``run_config``; facts about the run are ``run_facts``."""
    settings, preset = _settings(prepared.config), _settings(build_config(prepared.config.preset))
    chosen = [key for key in (*KEY_SETTINGS, *always) if key in settings]
    unused = _unused(prepared.config)
    chosen += [key for key, value in settings.items()
               if key not in _NOT_COMPARED and key not in chosen and key not in unused and preset.get(key) != value]
    return {key: _param_value(key, settings[key]) for key in chosen}


def _unused(config: RunConfig) -> set[str]:
    """Settings this run's data makes meaningless (the synthetic data's size for a folder of photos)."""
    return set() if config.data.data.startswith("synthetic") else {"synthetic_size"}


def _param_value(key: str, value: Any) -> Any:
    """A param as shown above the pictures: a data folder by its name only (a full path took three
    lines of every image card; it is in the tag ``data.path`` and in ``config.yaml``)."""
    if key == "data" and isinstance(value, str) and ("/" in value or "\\" in value):
        return PurePath(value.rstrip("/\\")).name or value
    return _shown(value)


def run_config(config: RunConfig) -> dict[str, Any]:
    """The complete resolved config as sections (what ``--config`` reads back), no password in it."""
    values = to_dict(config)
    values["tracking"]["mlflow_uri"] = without_password(values["tracking"]["mlflow_uri"])
    return values


def run_facts(prepared: Prepared) -> dict[str, str]:
    """What this run found rather than chose (the data, the resolved precision and widths, the
    parameter count, the probes), as tags."""
    data = prepared.data
    return {
        "data.classes": ",".join(f"{i}:{name}" for i, name in enumerate(data.class_names)),
        "data.path": prepared.config.data.data,
        "data.val_images": str(len(data.val)),
        "data.val_chance": f"{majority_share(data.val.labels):.6g}",
        "data.files": str(data.total_files),
        "data.skipped_files": str(len(data.skipped)),
        "data.in_memory": str(data.train.in_memory),
        "precision": prepared.precision,
        "probes.ids": ",".join(prepared.probes.ids),
        "model.parameters": str(count_parameters(prepared.model)),
        "model.widths": ",".join(str(w) for w in prepared.config.model.channel_widths()),
        "data.train_images": str(len(data.train)),
        "data.seed": str(prepared.config.data.effective_seed(prepared.config.optim.seed)),
        **({"cpu.threads": str(torch.get_num_threads())} if prepared.device.type == "cpu" else {}),
    }


def majority_share(labels: torch.Tensor) -> float:
    """Accuracy of always answering the commonest class of ``labels`` (chance level); 0 for none."""
    return float(torch.bincount(labels.reshape(-1).long()).max() / labels.numel()) if labels.numel() else 0.0
