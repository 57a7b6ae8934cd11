"""Per-layer activation statistics: numbers, not impressions.

:func:`activation_statistics` turns probe activations (layer → (P, C, h, w),
post-ReLU) into flat metrics ready for ``Tracker.log_metrics``:

``act_mean/{layer}``
    Mean activation over all probes, channels and positions of the layer.
``act_zero_fraction/{layer}``
    Fraction of the layer's activations that are exactly zero (post-ReLU: units
    that are off), so a value near 1 means a mostly silent layer.
``act_noise/{layer}``
    Roughness of each (probe, channel) map — the sum of squared differences of
    horizontally and vertically adjacent pixels — divided by its exact
    expectation when the map's pixels are shuffled uniformly at random (the
    null, computed in closed form rather than by sampling shuffles; the ratio is
    Geary's C), averaged over the layer's maps weighted by their variance
    energy, so ≈1 means noise-like, ≈0 smooth or structured and >1 alternating
    (checkerboard); computed only for maps of at least ``MIN_NOISE_SIDE`` ×
    ``MIN_NOISE_SIDE`` (7×7) and leaving out constant maps and maps with fewer
    than two non-zero positions (a lone spot is a detection, not noise), so the
    key is absent for smaller maps or when no map remains.

:data:`METRIC_DESCRIPTIONS` holds one sentence per statistic for UIs and
reports; :func:`noise_not_available` says why ``act_noise`` is missing for a
map size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from convscope.tracking.descriptions import MIN_NOISE_SIDE

#: A map whose variance energy is below this share of its mean-square energy counts as constant.
_FLAT = 1e-8

def noise_not_available(h: int, w: int) -> str | None:
    """``"n/a (h×w)"`` when ``act_noise`` is not computed for h×w maps (a side below
    :data:`MIN_NOISE_SIDE`), else None — text for reports."""
    return f"n/a ({h}×{w})" if min(h, w) < MIN_NOISE_SIDE else None


def _noise(activation: Tensor) -> float | None:
    """Energy-weighted Geary's C of the (…, h, w) maps; None when not available.

    For one map x with n = h·w positions and m = h(w−1) + (h−1)w horizontally or
    vertically adjacent pairs (no wrap-around), D = Σ_adjacent (x_i − x_j)² and
    S = Σ (x_i − x̄)². Shuffling the pixels uniformly at random gives
    E[D] = 2·m·S / (n − 1) exactly, so C = D / E[D] = (n − 1)·D / (2·m·S) is
    the roughness relative to the map's own pixels shuffled, with no sampling.
    Maps with fewer than two non-zero positions or constant maps are left out;
    the rest are averaged with weights S, which is (n − 1)·ΣD / (2·m·ΣS).
    """
    h, w = int(activation.shape[-2]), int(activation.shape[-1])
    if noise_not_available(h, w):
        return None
    maps = activation.reshape(-1, h, w)

    def energy(x: Tensor) -> Tensor:  # per-map sum of squares
        return torch.linalg.vector_norm(x, dim=(1, 2)).square()

    rough = energy(maps[:, 1:] - maps[:, :-1]) + energy(maps[:, :, 1:] - maps[:, :, :-1])
    spread = energy(maps - maps.mean(dim=(1, 2), keepdim=True))
    keep = (torch.count_nonzero(maps, dim=(1, 2)) >= 2) & (spread > _FLAT * energy(maps))
    if not bool(keep.any()):
        return None
    n, m = h * w, h * (w - 1) + (h - 1) * w
    value = (n - 1) * float(rough[keep].double().sum()) / (2 * m * float(spread[keep].double().sum()))
    return value if math.isfinite(value) else None


def activation_statistics(activations: Mapping[str, Tensor]) -> dict[str, float]:
    """Metrics ``act_mean``, ``act_zero_fraction`` and ``act_noise`` per layer.

    Args:
        activations: layer → (P, C, h, w) tensor (any float dtype/device);
            2-D (P, C) tensors get mean and zero fraction only.

    Returns:
        ``{"act_mean/conv1": …, "act_zero_fraction/conv1": …, "act_noise/conv1": …, …}``
        as Python floats; see the module docstring for the meaning.
        ``act_noise`` is absent where not available. Empty layers are skipped.
    """
    metrics: dict[str, float] = {}
    for name, activation in activations.items():
        if activation.numel() == 0:
            continue
        values = activation.detach().float()
        metrics[f"act_mean/{name}"] = float(values.mean())
        metrics[f"act_zero_fraction/{name}"] = float((values == 0).float().mean())
        if values.dim() >= 3:
            noise = _noise(values)
            if noise is not None:
                metrics[f"act_noise/{name}"] = noise
    return metrics
