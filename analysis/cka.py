"""Linear centred kernel alignment (CKA) between layer representations.

Linear CKA (Kornblith et al., 2019, "Similarity of Neural Network
Representations Revisited") compares two representations of the SAME n samples,
X (n, p) and Y (n, q), after centring every feature (column)::

    CKA(X, Y) = ||Yᵀ X||_F² / (||Xᵀ X||_F · ||Yᵀ Y||_F)

It lies in [0, 1], is 1 for identical representations and is invariant to
isotropic scaling and orthogonal transforms of either side (not to arbitrary
invertible linear maps). The same number equals ⟨K_X, K_Y⟩_F / (||K_X||_F ||K_Y||_F)
with the centred Gram matrices K = X Xᵀ (n, n); :func:`linear_cka` evaluates
whichever form is cheaper: the feature-space one (O(n·p·q)) when the layers are
narrow, the Gram one (O(n²·(p+q))) when they are wide — a flattened probe
activation has thousands of features and only a handful of rows.

Bias: the estimator is biased upwards when n is not much larger than the
feature counts. For two INDEPENDENT random representations it is about
sqrt(p·q)/n when p, q ≪ n (≈0.04 for n=500, p=q=20), and it tends to 1 when
p, q ≫ n (every centred Gram matrix then looks alike). CKA on a few probe
images is therefore only a rough picture; prefer many samples.

Arrays are converted to float64; a representation that is constant over the
samples (zero after centring) has no defined CKA and yields NaN.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from torch import Tensor


def _centred(x: np.ndarray | Tensor, what: str) -> np.ndarray:
    """(n, p) float64 copy with every column's mean removed; ValueError on bad shapes/values."""
    array = np.asarray(x.detach().cpu().numpy() if isinstance(x, Tensor) else x, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D (samples, features) array, got shape {array.shape}")
    if array.shape[0] < 2 or array.shape[1] < 1:
        raise ValueError(f"{what}: need at least 2 samples and 1 feature, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{what}: contains NaN or infinite values")
    centred = array - array.mean(axis=0, keepdims=True)
    centred[:, np.ptp(array, axis=0) == 0] = 0.0  # exactly constant, free of the mean's round-off
    return centred


def _cross(x: np.ndarray, y: np.ndarray) -> float:
    """||yᵀ x||_F² for centred x (n, p), y (n, q), by the cheaper of the two equal forms."""
    n, p = x.shape
    q = y.shape[1]
    if p * q <= n * (p + q):
        return float(np.square(y.T @ x).sum())
    return float(np.sum((x @ x.T) * (y @ y.T)))


def _cka_centred(x: np.ndarray, y: np.ndarray, norm_x: float, norm_y: float) -> float:
    denominator = norm_x * norm_y
    if denominator == 0.0:
        return float("nan")
    return float(min(1.0, max(0.0, _cross(x, y) / denominator)))  # clip float round-off only


def linear_cka(x: np.ndarray | Tensor, y: np.ndarray | Tensor) -> float:
    """Linear CKA of two representations of the same samples.

    Args:
        x: (n, p) array (or tensor), row i = sample i.
        y: (n, q) array (or tensor), same samples in the same order.

    Returns:
        CKA in [0, 1] (see the module docstring); NaN when either side is constant
        over the samples. Raises ValueError when the row counts differ, n < 2, or
        values are not finite.
    """
    xc, yc = _centred(x, "x"), _centred(y, "y")
    if xc.shape[0] != yc.shape[0]:
        raise ValueError(f"x has {xc.shape[0]} samples but y has {yc.shape[0]}; CKA needs the same samples")
    return _cka_centred(xc, yc, np.sqrt(_cross(xc, xc)), np.sqrt(_cross(yc, yc)))


def cka_matrix(reps_a: Mapping[str, np.ndarray | Tensor], reps_b: Mapping[str, np.ndarray | Tensor]) -> np.ndarray:
    """Linear CKA of every layer of ``reps_a`` against every layer of ``reps_b``.

    Both map layer name → (n, features) for the SAME n samples (pass one mapping
    twice for a within-run matrix). Returns (len(reps_a), len(reps_b)) float64,
    rows/columns in the mappings' order. Each layer is centred once.
    """
    if not reps_a or not reps_b:
        raise ValueError("cka_matrix needs at least one layer on each side")
    a = {name: _centred(value, f"layer {name!r}") for name, value in reps_a.items()}
    b = a if reps_b is reps_a else {name: _centred(value, f"layer {name!r}") for name, value in reps_b.items()}
    counts = {value.shape[0] for value in a.values()} | {value.shape[0] for value in b.values()}
    if len(counts) != 1:
        raise ValueError(f"layers disagree on the number of samples: {sorted(counts)}; CKA needs the same samples")
    norms_a = {name: np.sqrt(_cross(value, value)) for name, value in a.items()}
    norms_b = norms_a if b is a else {name: np.sqrt(_cross(value, value)) for name, value in b.items()}
    matrix = np.empty((len(a), len(b)))
    for i, (name_a, xa) in enumerate(a.items()):
        for j, (name_b, yb) in enumerate(b.items()):
            if b is a and j < i:
                matrix[i, j] = matrix[j, i]
            else:
                matrix[i, j] = _cka_centred(xa, yb, norms_a[name_a], norms_b[name_b])
    return matrix


def flatten_probe_activations(tensors: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """Probe activations layer → (P, C, h, w) as layer → (P, C·h·w) float64 arrays.

    Every spatial position of every channel is one feature, so spatial layout
    counts (as in Kornblith et al.). Raises ValueError for a non-4-D tensor.
    """
    flat: dict[str, np.ndarray] = {}
    for name, tensor in tensors.items():
        if tensor.dim() != 4:
            raise ValueError(f"layer {name!r}: expected (P, C, h, w) probe activations, "
                             f"got shape {tuple(tensor.shape)}")
        flat[name] = tensor.detach().cpu().double().reshape(tensor.shape[0], -1).numpy()
    return flat


def pooled_activations(tensors: Mapping[str, Tensor]) -> dict[str, np.ndarray]:
    """Analysis activations layer → (N, C) as float64 arrays, skipping the reserved ``labels`` entry.

    Raises ValueError for a non-2-D layer tensor.
    """
    pooled: dict[str, np.ndarray] = {}
    for name, tensor in tensors.items():
        if name == "labels":
            continue
        if tensor.dim() != 2:
            raise ValueError(f"layer {name!r}: expected (N, C) pooled activations, got shape {tuple(tensor.shape)}")
        pooled[name] = tensor.detach().cpu().double().numpy()
    return pooled
