"""Seeded, stratified train/validation splits: a fraction of every class, or k folds."""

from __future__ import annotations

import torch

from convscope.train.config_sections import DataConfig
from convscope.train.errors import ConfigError


#: Seed of the test split when ``--data-seed`` is not set: the same photos are set aside whatever ``--seed``.
TEST_SPLIT_SEED = 0


def split_indices(labels: torch.Tensor, config: DataConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Train, validation and test indices. The test split (``--test-fraction`` of every class, drawn
    with ``--data-seed`` or ``TEST_SPLIT_SEED``, never with ``--seed``) is set aside first; the rest is
    split by ``--val-fraction``, or into fold ``--fold`` of ``--folds``. No test split: None."""
    if not config.test_fraction:
        train, val = _train_val(labels, config, seed)
        return _limited(train, labels, config.train_limit, seed), val, None
    test_seed = config.data_seed if config.data_seed >= 0 else TEST_SPLIT_SEED
    rest, test = stratified_split(labels, config.test_fraction, test_seed)
    train, val = _train_val(labels[rest], config, seed)
    return _limited(rest[train], labels, config.train_limit, seed), rest[val], test


def _limited(train: torch.Tensor, labels: torch.Tensor, limit: int, seed: int) -> torch.Tensor:
    """``train`` cut to ``limit`` indices (``--train-limit``), every class in its share; all for 0."""
    if not limit or limit >= len(train):
        return train
    _, kept = stratified_split(labels[train], limit / len(train), seed)
    return train[kept]


def _train_val(labels: torch.Tensor, config: DataConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and validation indices: by ``--val-fraction``, or fold ``--fold`` of ``--folds``."""
    if not config.folds:
        if config.fold:
            raise ConfigError(f"--fold {config.fold} needs --folds (the number of folds)")
        return stratified_split(labels, config.val_fraction, seed)
    if not 0 <= config.fold < config.folds:
        raise ConfigError(f"--fold must be between 0 and {config.folds - 1} for --folds {config.folds} "
                          f"(got {config.fold})")
    val_idx = stratified_folds(labels, config.folds, seed)[config.fold]
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[val_idx] = False
    return torch.nonzero(keep).flatten(), val_idx


def stratified_folds(labels: torch.Tensor, folds: int, seed: int) -> list[torch.Tensor]:
    """``folds`` disjoint, sorted index tensors that together hold every index once.

    Every class is shuffled with ``seed`` and dealt round-robin, so each fold holds its
    share of every class (±1) and the folds' sizes differ by at most one; the same
    labels and seed give the same folds. Raises ConfigError when ``folds`` is below 2
    or a class has fewer images than folds.
    """
    if folds < 2:
        raise ConfigError(f"--folds must be at least 2 (got {folds}); 0 switches cross-validation off")
    gen = torch.Generator().manual_seed(seed)
    fold_of = torch.empty(len(labels), dtype=torch.long)
    dealt = 0  # classes continue the deal where the last one stopped: fold sizes stay even
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        if len(members) < folds:
            raise ConfigError(f"--folds {folds}: class {cls} has only {len(members)} images, fewer than the folds "
                              f"(use --folds {max(2, len(members))} or fewer, or more images)")
        members = members[torch.randperm(len(members), generator=gen)]
        fold_of[members] = (torch.arange(len(members)) + dealt) % folds
        dealt += len(members)
    return [torch.nonzero(fold_of == k).flatten() for k in range(folds)]


def stratified_split(labels: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and validation indices: every class split by ``val_fraction``, the same for the same seed."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"--val-fraction must be between 0 and 1 (got {val_fraction})")
    gen = torch.Generator().manual_seed(seed)
    train_parts, val_parts = [], []
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        n_val = min(len(members) - 1, max(1, round(val_fraction * len(members))))
        val_parts.append(members[:n_val])
        train_parts.append(members[n_val:])
    return torch.cat(train_parts).sort().values, torch.cat(val_parts).sort().values
