"""Checkpoints: weights as safetensors, config as JSON, loop state loaded with ``weights_only=True``.

A checkpoint folder holds:
- ``model.safetensors`` — the model's state dict (metadata: epoch);
- ``config.json`` — the fully resolved RunConfig, the normaliser, class names and the run's links;
- ``state.pt`` — optimiser, scheduler, epoch and early-stopping state (plain tensors and numbers only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from train.atomic import write_atomically

from train.config import RunConfig, from_dict, to_dict
from train.errors import ConfigError

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


def save_model(directory: Path, model: nn.Module, config: RunConfig, extra: dict[str, Any], epoch: int) -> None:
    """Write the weights and the config JSON (atomically, so a kill never leaves half a file)."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    write_atomically(directory / MODEL_FILE, lambda tmp: save_file(state, tmp, metadata={"epoch": str(epoch)}))
    payload = {"config": to_dict(config), **extra, "epoch": epoch}
    write_atomically(directory / CONFIG_FILE, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=2, default=str)))


def save_checkpoint(
    directory: Path, model: nn.Module, config: RunConfig, extra: dict[str, Any], loop_state: dict[str, Any]
) -> None:
    save_model(directory, model, config, extra, int(loop_state["epoch"]))
    write_atomically(directory / STATE_FILE, lambda tmp: torch.save(loop_state, tmp))


def load_checkpoint(directory: str | Path) -> Checkpoint:
    """Read a checkpoint folder written by ``save_checkpoint``; ConfigError if it is not one."""
    folder = Path(directory)
    missing = [name for name in (MODEL_FILE, CONFIG_FILE, STATE_FILE) if not (folder / name).is_file()]
    if missing:
        raise ConfigError(
            f"--resume {directory}: not a convscope checkpoint folder (missing {', '.join(missing)}); "
            f"checkpoints are under <runs-dir>/checkpoints/<experiment>/<run>"
        )
    payload = json.loads((folder / CONFIG_FILE).read_text())
    config = from_dict(payload.pop("config"))
    payload.pop("epoch", None)
    loop_state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    return Checkpoint(config, load_file(folder / MODEL_FILE), loop_state, payload)
