"""Checkpoints: weights as safetensors, config as JSON, loop state loaded with ``weights_only=True``.

A checkpoint folder holds:
- ``model.safetensors`` — the model's state dict (metadata: epoch);
- ``config.json`` — the fully resolved RunConfig, the normaliser, class names and the run's links, every
  password in them masked (``saved_form``);
- ``state.pt`` — optimiser, scheduler, epoch and early-stopping state (plain tensors and numbers only).
"""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors
from torch import nn

from convscope.train.config import from_dict, to_dict
from convscope.train.config_sections import RunConfig
from convscope.train.errors import ConfigError

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "state.pt"


@dataclass
class Checkpoint:
    config: RunConfig
    model_state: dict[str, torch.Tensor]
    loop_state: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)  # normaliser, class names, links

    @property
    def epoch(self) -> int:
        return int(self.loop_state.get("epoch", 0))


def saved_form(value: Any) -> Any:
    """``value`` (nested dicts, lists and strings) with every string's credentials masked
    (``tracking.secrets.mask_secrets``): what a checkpoint may hold on disk."""
    from convscope.tracking.secrets import mask_secrets

    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, dict):
        return {key: saved_form(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [saved_form(item) for item in value]
    return value


def save_model(directory: Path, model: nn.Module, config: RunConfig, extra: dict[str, Any], epoch: int) -> None:
    """Write the weights and the config JSON (atomically, so a kill never leaves half a file).

    No password reaches the JSON: every string in ``config`` and ``extra`` is written as
    ``saved_form`` gives it, so a tracking URI with a password is saved with ``***``
    (``resume_tracking`` then asks for the real one on ``--resume``)."""
    write_together(directory, _model_files(model, config, extra, epoch))


def _map_tensors(value: Any, change: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``value`` (nested dicts, lists and tuples) with ``change`` applied to every tensor in it."""
    if isinstance(value, torch.Tensor):
        return change(value.detach())
    if isinstance(value, dict):
        return {key: _map_tensors(item, change) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_map_tensors(item, change) for item in value)
    return value


def snapshot(value: Any) -> Any:
    """``value`` with every tensor cloned on its own device: cheap, no wait for the device, and
    unchanged by later training steps, so another thread can write it (``save_checkpoint``)
    while training goes on."""
    return _map_tensors(value, torch.Tensor.clone)


def _model_files(model: nn.Module | Mapping[str, torch.Tensor], config: RunConfig, extra: dict[str, Any],
                 epoch: int) -> dict[str, bytes]:
    weights = model.state_dict() if isinstance(model, nn.Module) else model
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in weights.items()}
    payload = saved_form({"config": to_dict(config), **extra, "epoch": epoch})
    return {
        MODEL_FILE: save_safetensors(state, metadata={"epoch": str(epoch)}),
        CONFIG_FILE: json.dumps(payload, indent=2, default=str).encode(),
    }


def write_together(directory: Path, files: Mapping[str, bytes]) -> None:
    """Write every one of ``files`` (name → content) into ``directory``, all or none.

    Each file goes to a uniquely named temp file first; only when every one is complete are they
    renamed over the old files (renaming needs no space). A failed write (a full disk: an
    ``OSError`` with its errno and file name) removes the temp files and propagates, leaving the
    folder's previous files, a consistent checkpoint, untouched.
    """
    directory.mkdir(parents=True, exist_ok=True)
    temps = {name: directory / f"{name}.{uuid.uuid4().hex}.tmp" for name in files}
    try:
        for name, content in files.items():
            with open(temps[name], "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
        for name, temp in temps.items():
            os.replace(temp, directory / name)
    finally:
        for temp in temps.values():
            temp.unlink(missing_ok=True)


def resume_tracking(config: RunConfig, environ: Mapping[str, str] | None = None) -> RunConfig:
    """``config`` (a resumed run's, after the flags) ready to connect to its MLflow store.

    A checkpoint saves its tracking URI with the password masked (``save_model``). When
    ``config.tracking.mlflow_uri`` is still such a masked URI (no ``--mlflow-uri`` replaced
    it), the real URI comes from ``MLFLOW_TRACKING_URI`` in ``environ`` (default
    ``os.environ``): the URI is cleared so that the environment is used. Any other config is
    returned unchanged.

    Raises:
        ConfigError: the URI is masked and ``MLFLOW_TRACKING_URI`` is not set.
    """
    import dataclasses
    import os

    from convscope.tracking.secrets import has_masked_secret

    uri = config.tracking.mlflow_uri
    if not has_masked_secret(uri):
        return config
    if not (os.environ if environ is None else environ).get("MLFLOW_TRACKING_URI", ""):
        raise ConfigError(
            f"--resume: the checkpoint saved its MLflow URI without the password ({uri}); "
            "pass it again with --mlflow-uri or MLFLOW_TRACKING_URI"
        )
    return dataclasses.replace(config, tracking=dataclasses.replace(config.tracking, mlflow_uri=""))


def save_checkpoint(
    directory: Path, model: nn.Module | Mapping[str, torch.Tensor], config: RunConfig, extra: dict[str, Any],
    loop_state: dict[str, Any],
) -> None:
    """The weights (a model or its ``snapshot``-ed state dict), the config JSON and the loop state of one
    epoch, written together (``write_together``): a checkpoint folder always holds one epoch's three files.
    Tensors on a device are copied to the CPU here."""
    state = io.BytesIO()
    torch.save(_map_tensors(loop_state, torch.Tensor.cpu), state)
    write_together(directory, {**_model_files(model, config, extra, int(loop_state["epoch"])),
                               STATE_FILE: state.getvalue()})


def load_checkpoint(directory: str | Path) -> Checkpoint:
    """Read a checkpoint folder written by ``save_checkpoint``; ConfigError if it is not one."""
    folder = Path(directory)
    missing = [name for name in (MODEL_FILE, CONFIG_FILE, STATE_FILE) if not (folder / name).is_file()]
    if missing:
        raise ConfigError(
            f"--resume {directory}: not a convscope checkpoint folder (missing {', '.join(missing)}); "
            f"checkpoints are under <runs-dir>/checkpoints/<experiment>/<run>"
        )
    config_file = folder / CONFIG_FILE
    try:
        payload = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConfigError(f"--resume {directory}: cannot read {config_file} ({_first_line(error)}); "
                          "the checkpoint is damaged") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("config"), dict):
        raise ConfigError(f"--resume {directory}: {config_file} holds no run config (a 'config' mapping); "
                          "the checkpoint is damaged")
    try:
        config = from_dict(payload.pop("config"))
    except ConfigError as error:
        raise ConfigError(f"--resume {directory}: {config_file}: {error}") from None
    payload.pop("epoch", None)
    try:
        loop_state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a damaged or foreign file
        raise ConfigError(f"--resume {directory}: cannot read {folder / STATE_FILE} ({_first_line(error)}); "
                          "the checkpoint is damaged") from None
    if not isinstance(loop_state, dict):
        raise ConfigError(f"--resume {directory}: {folder / STATE_FILE} holds no training state; "
                          "the checkpoint is damaged")
    try:
        model_state = load_file(folder / MODEL_FILE)
    except Exception as error:  # safetensors raises its own error types
        raise ConfigError(f"--resume {directory}: cannot read {folder / MODEL_FILE} ({_first_line(error)}); "
                          "the checkpoint is damaged") from None
    return Checkpoint(config, model_state, loop_state, payload)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
