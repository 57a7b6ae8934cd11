"""What a study's trials do differently from a single ``convscope train`` run by default.

Each default applies only where the user set nothing (flag, ``--fix``, config file or environment):
an explicit setting always wins.

- Every study keeps, per trial, the pictures of the first and last epoch and the latest probe
  activations (``--visual-epochs ends``): what a trial's page and a comparison show, a few MB per
  trial instead of every epoch's. ``--keep-all`` keeps every epoch's, and every checkpoint.
- A study on a folder of photos sets ``FOLDER_TEST_FRACTION`` of every class aside as its test
  split, scored once at the end (a folder with its own ``test/`` uses that instead); with
  ``--timeout`` it keeps ``FOLDER_FINAL_SHARE`` of the budget to train its best network again on
  train+validation (``--final-share``, decided in ``cli.search_cmd``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from convscope.train.config import RunConfig

FOLDER_TEST_FRACTION = 0.1
"""A study on a folder of photos sets this share of every class aside as its test split."""
FOLDER_FINAL_SHARE = 0.35
"""A timed study of a folder of photos keeps this share of ``--timeout`` to train its best network
again on train+validation (``search.final_training``)."""
TRIAL_VISUAL_EPOCHS = "ends"
"""The ``--visual-epochs`` of a study's trials unless ``--keep-all`` or the user says otherwise."""


def is_photo_folder(data: str) -> bool:
    """``--data`` names a folder of class sub-folders (not the synthetic or a named data set, and not
    a folder whose own train/ and val/ (and perhaps test/) folders fix the split)."""
    from convscope.train.data import SYNTHETIC_DEPTH
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
    return config
