"""Tags that say where a run came from: code version, device, libraries, data."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch

from convscope.train.config_sections import RunConfig


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the checkout convscope runs from, if there is one."""
    where = path or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return platform.processor() or platform.machine()
    return device.type


def tags(device: torch.device, fingerprint: str, config: RunConfig) -> dict[str, str]:
    found = {
        "convscope.preset": config.preset,
        "device": str(device),
        "device.name": device_name(device),
        "torch.version": torch.__version__,
        "python.version": platform.python_version(),
        "data.fingerprint": fingerprint,
    }
    commit = git_commit()
    if commit:
        found["mlflow.source.git.commit"] = commit
        found["git.commit"] = commit
    return found
