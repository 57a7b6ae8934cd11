"""Linear probes: how much class information a layer makes linearly available.

A linear probe is a standardised, L2-regularised logistic regression
(``StandardScaler`` → ``LogisticRegression(C=PROBE_C)``) trained on a layer's
features — here the channel-pooled (N, C) activations of the analysis set — and
scored by stratified k-fold cross-validation. Its accuracy, compared with
:func:`chance_accuracy` and with the previous layer's, tells whether a layer
adds class information a linear read-out can use; :func:`probe_curve` does
that for every layer of a run, with the uncertainty of each gain: every layer is scored
on the same folds, so a gain's standard error is that of the paired per-fold differences.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from convscope.analysis.verdicts import standard_error

#: Inverse L2 regularisation strength of the probe (sklearn's default).
PROBE_C = 1.0
#: lbfgs iterations; standardised features converge far sooner.
PROBE_MAX_ITER = 2000


def _as_array(values: np.ndarray | Tensor) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)


def chance_accuracy(labels: np.ndarray | Tensor) -> float:
    """Accuracy of always predicting the majority class: its share of ``labels``."""
    y = _as_array(labels).reshape(-1)
    if y.size == 0:
        raise ValueError("chance_accuracy got no labels")
    _, counts = np.unique(y, return_counts=True)
    return float(counts.max() / y.size)


def probe_folds(labels: np.ndarray | Tensor, folds: int = 5) -> int:
    """Folds actually used: ``folds`` reduced to the smallest class count.

    Raises ValueError when fewer than two classes are present or a class has a
    single sample (no stratified split can then test every class).
    """
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    _, counts = np.unique(_as_array(labels).reshape(-1), return_counts=True)
    if counts.size < 2:
        raise ValueError("a linear probe needs at least two classes in the labels")
    if counts.min() < 2:
        raise ValueError(f"the smallest class has {counts.min()} sample; cross-validation needs at least 2 per class")
    return int(min(folds, counts.min()))


def fold_accuracies(
    features: np.ndarray | Tensor,
    labels: np.ndarray | Tensor,
    *,
    folds: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """Per-fold test accuracies of a linear probe on ``features``.

    Args:
        features: (N, C) array or tensor, one row per sample.
        labels: (N,) integer class labels.
        folds: stratified folds, reduced to the smallest class count when it is
            smaller (see :func:`probe_folds`); shuffled with ``seed``.
        seed: seed of the fold shuffle (the probe itself is deterministic).

    Returns:
        (folds,) accuracies, in fold order (the same folds for the same labels and seed).
        Raises ValueError for mismatched shapes, non-finite features or labels
        that cannot be stratified.
    """
    x = np.asarray(_as_array(features), dtype=np.float64)
    y = _as_array(labels).reshape(-1)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"features must be (N, C) with N = {y.shape[0]} labels, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values")
    splitter = StratifiedKFold(n_splits=probe_folds(y, folds), shuffle=True, random_state=seed)
    probe = Pipeline([
        ("scale", StandardScaler()),
        ("logreg", LogisticRegression(C=PROBE_C, max_iter=PROBE_MAX_ITER)),
    ])
    return np.asarray(cross_val_score(probe, x, y, cv=splitter, scoring="accuracy"), dtype=np.float64)


def linear_probe_accuracy(
    features: np.ndarray | Tensor, labels: np.ndarray | Tensor, *, folds: int = 5, seed: int = 0,
) -> tuple[float, float]:
    """(mean, std with ddof=0) of :func:`fold_accuracies`."""
    scores = fold_accuracies(features, labels, folds=folds, seed=seed)
    return float(scores.mean()), float(scores.std())


@dataclass
class ProbeCurve:
    """Linear-probe accuracy per layer; ``gain[i] = mean[i] - mean[i-1]``, ``gain[0] = mean[0] - chance``.

    ``gain_se[i]``: standard error of the gain over the folds, paired by fold (for the first
    layer, of its accuracy: chance is fixed)."""

    layers: list[str]
    mean: np.ndarray  # (L,) cross-validated accuracy
    std: np.ndarray  # (L,) its std over folds
    gain: np.ndarray  # (L,) what each layer adds over the previous one (the first: over chance)
    chance: float
    n: int  # samples
    folds: int  # folds actually used
    gain_se: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (L,) standard error of each gain


def probe_curve(
    features: Mapping[str, np.ndarray | Tensor], labels: np.ndarray | Tensor, *, folds: int = 5, seed: int = 0,
) -> ProbeCurve:
    """:func:`fold_accuracies` of every layer (layer → (N, C), in order) on the same folds."""
    if not features:
        raise ValueError("probe_curve needs at least one layer")
    scores = np.stack([fold_accuracies(x, labels, folds=folds, seed=seed) for x in features.values()])  # (L, F)
    chance = chance_accuracy(labels)
    mean = scores.mean(axis=1)
    gain = np.diff(mean, prepend=chance)
    paired = np.diff(scores, axis=0, prepend=scores[:1] * 0 + chance)  # first row: accuracy − chance per fold
    gain_se = np.array([standard_error(row.tolist()) for row in paired])
    return ProbeCurve(list(features), mean, scores.std(axis=1), gain, chance, len(labels),
                      probe_folds(labels, folds), gain_se)
