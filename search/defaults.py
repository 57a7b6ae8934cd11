"""What a study's trials do differently from a single ``convscope train`` run by default.

Each default applies only where the user set nothing (flag, ``--fix``, config file or environment):
an explicit setting always wins.

- Every study keeps, per trial, the pictures of the first and last epoch and the latest probe
  activations (``--visual-epochs ends``): what a trial's page and a comparison show, a few MB per
  trial instead of every epoch's. ``--keep-all`` keeps every epoch's, and every checkpoint.
- A study on a folder of photos sets ``FOLDER_TEST_FRACTION`` of every class aside as its test
  split, scored once at the end (a folder with its own ``test/`` uses that instead); with
  ``--timeout`` it keeps ``FOLDER_FINAL_SHARE`` of the budget to train its best network again on
  train+validation (``--final-share``, decided in ``cli.search_cmd``). Its trials are members of
  the seed's family that learn real photos well (``PHOTO_RUN``: padded convs, a global-average-pool
  head with its ReLU, label smoothing, flip test-time augmentation, ``PHOTO_EPOCHS`` epochs) and it
  searches ``PHOTO_SPACE`` (depth, widths, dropout, learning rate, weight decay); on a CPU it runs
  one single-threaded worker per core (``default_jobs``).
- Any study on CUDA runs one worker per visible GPU unless ``--jobs`` or ``--trials-per-gpu`` say
  otherwise (``default_jobs``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from convscope.train.config_sections import RunConfig

FOLDER_TEST_FRACTION = 0.1
"""A study on a folder of photos sets this share of every class aside as its test split."""
FOLDER_FINAL_SHARE = 0.35
"""A timed study of a folder of photos keeps this share of ``--timeout`` to train its best network
again on train+validation (``search.final_training``)."""
PHOTO_EPOCHS = 8
PHOTO_RUN: dict[str, dict[str, Any]] = {
    "model": {"padding": 1, "head": "gap", "head_activation": True},
    "optim": {"label_smoothing": 0.1, "tta": True, "epochs": PHOTO_EPOCHS},
}
"""Run settings of a photo folder's trials, each unless the user set it."""
PHOTO_SPACE: dict[str, str] = {
    "depth": "3..", "base_width": "16..48:log", "growth": "1.25..2.0", "dropout": "0.0..0.3",
    "lr": "0.002..0.02:log", "weight_decay": "1e-4..0.05:log",
}
"""The search space of a photo folder's study, each range unless the user gave one."""
TRIAL_VISUAL_EPOCHS = "ends"
"""The ``--visual-epochs`` of a study's trials unless ``--keep-all`` or the user says otherwise."""


def is_photo_folder(data: str) -> bool:
    """``--data`` names a folder of class sub-folders (not the synthetic or a named data set, and not
    a folder whose own train/ and val/ (and perhaps test/) folders fix the split)."""
    from convscope.train.config_sections import SYNTHETIC_DEPTH
    from convscope.train.torchvision_data import KNOWN

    if data == "synthetic" or SYNTHETIC_DEPTH.fullmatch(data) or data in KNOWN:
        return False
    root = Path(data).expanduser()
    return root.is_dir() and not (root / "train").is_dir()


def _unless_set(config: RunConfig, overrides: Mapping[str, Mapping[str, Any]], section: str, name: str,
                value: Any) -> RunConfig:
    if name in overrides.get(section, {}):
        return config
    return dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **{name: value})})


def study_defaults(base: RunConfig, overrides: Mapping[str, Mapping[str, Any]], *, keep_all: bool) -> RunConfig:
    """``base`` with the study's defaults for every setting ``overrides`` (what the user set, by
    section) leaves open; ``keep_all`` (``--keep-all``) keeps every epoch's pictures."""
    config = _unless_set(base, overrides, "tracking", "visual_epochs", "all" if keep_all else TRIAL_VISUAL_EPOCHS)
    if is_photo_folder(config.data.data):
        config = _unless_set(config, overrides, "data", "test_fraction", FOLDER_TEST_FRACTION)
        for section, values in PHOTO_RUN.items():
            for name, value in values.items():
                config = _unless_set(config, overrides, section, name, value)
    return config


def photo_space(base: RunConfig, given: Mapping[str, Any]) -> dict[str, Any]:
    """The search settings of a study: ``PHOTO_SPACE`` under ``given`` (the user's) for a photo
    folder, else ``given`` alone."""
    return {**PHOTO_SPACE, **given} if is_photo_folder(base.data.data) else dict(given)


def on_cpu(device: str) -> bool:
    """Whether ``--device`` trains on the CPU (``auto`` without CUDA or MPS)."""
    if device == "cpu":
        return True
    if device != "auto":
        return False
    import torch

    return not torch.cuda.is_available() and not torch.backends.mps.is_available()


def default_jobs(base: RunConfig, gpus: int) -> int:
    """``--jobs`` when the user gave none: one worker per visible GPU (``gpus``) when ``--device`` is
    auto or cuda and there are GPUs (the workers go round-robin over them: ``search.workers.worker_devices``),
    so no GPU of the machine sits idle; a photo folder's study on a CPU runs one worker per core
    (each on one thread: the cores are used, and no thread team waits on a busy core); else 1."""
    import os

    if gpus > 0 and base.optim.device in ("auto", "cuda"):
        return gpus
    if not is_photo_folder(base.data.data) or not on_cpu(base.optim.device):
        return 1
    return max(1, min(8, os.cpu_count() or 1))
