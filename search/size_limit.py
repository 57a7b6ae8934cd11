"""A study's parameter budget: networks above it are pruned before they train."""

from __future__ import annotations

import torch

from convscope.train.config_sections import RunConfig
from convscope.train.model import build_model, count_parameters


def parameter_count(config: RunConfig) -> int:
    """Parameters of the network ``config`` builds, counted without allocating its weights."""
    with torch.device("meta"):
        return count_parameters(build_model(config.model))


def over_budget(config: RunConfig, max_params: int | None) -> str | None:
    """Why ``config``'s network is over ``max_params`` (``None``: no budget), or None."""
    if max_params is None:
        return None
    count = parameter_count(config)
    if count <= max_params:
        return None
    return f"{count:,} parameters, over the budget of {max_params:,} (--max-params)"
