"""Per-layer activation statistics: numbers, not impressions.

:func:`activation_statistics` turns probe activations (layer → (P, C, h, w),
post-ReLU) into flat metrics ready for ``Tracker.log_metrics``:

``act_mean/{layer}``
    Mean activation over probes, channels and positions.
``act_zero_fraction/{layer}``
    Fraction of exactly-zero activations (post-ReLU: units that are off). A
    value near 1 means most of the layer is dead/silent on these probes.
``act_hf_share/{layer}``
    Spatial high-frequency ("noise") energy share, in [0, 1]. For every
    (probe, channel) map: subtract the map's mean, take the 2-D FFT, and
    compare the energy |F|² at normalised radial frequency
    ``sqrt(fy² + fx²) > HF_CUTOFF`` (0.25 cycles/pixel, ``torch.fft.fftfreq``
    units) with all non-DC energy. The layer value is total HF energy / total
    non-DC energy summed over all of the layer's maps, so strong maps weigh
    more. ≈0: smooth, blob-like maps; ≈1: pixel-to-pixel alternation
    (checkerboard, salt-and-pepper). This is the number behind "the last layers
    look noisy".

    Caveats: the frequency grid depends on the map size. On a 3×3 map the
    non-DC frequencies are ±1/3 cycles/pixel, all above the cutoff, so any
    non-constant 3×3 map scores exactly 1 — that says nothing about noise,
    only that the map is tiny. Small maps (≲7×7) quantise the share coarsely.
    The FFT treats each map as periodic, so a smooth but non-periodic map (a
    ramp) leaks a few percent into HF through the wrap-around edge. The key is
    omitted (undefined, never 0) for 1×1 maps and for layers whose maps have no
    non-DC energy (all constant).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

#: Radial frequency (cycles/pixel) above which energy counts as "high frequency".
HF_CUTOFF = 0.25


def _hf_share(activation: Tensor) -> float | None:
    """HF energy / non-DC energy over all (probe, channel) maps; None when undefined."""
    h, w = int(activation.shape[-2]), int(activation.shape[-1])
    if h * w <= 1:
        return None
    maps = activation.double()
    maps = maps - maps.mean(dim=(-2, -1), keepdim=True)
    energy = torch.fft.fft2(maps).abs().square().sum(dim=tuple(range(maps.dim() - 2)))  # (h, w)
    fy = torch.fft.fftfreq(h, dtype=torch.float64)
    fx = torch.fft.fftfreq(w, dtype=torch.float64)
    radius = torch.sqrt(fy[:, None].square() + fx[None, :].square())
    non_dc = float(energy[radius > 0].sum())
    total = float(activation.double().square().sum())
    # Mean removal leaves only round-off on constant maps; treat that as "no energy".
    if not non_dc > 1e-12 * total:  # also catches NaN
        return None
    return float(energy[radius > HF_CUTOFF].sum()) / non_dc


def activation_statistics(activations: Mapping[str, Tensor]) -> dict[str, float]:
    """Metrics ``act_mean``, ``act_zero_fraction`` and ``act_hf_share`` per layer.

    Args:
        activations: layer → (P, C, h, w) tensor (any float dtype/device);
            2-D (P, C) tensors get mean and zero fraction only.

    Returns:
        ``{"act_mean/conv1": …, "act_zero_fraction/conv1": …, "act_hf_share/conv1": …, …}``
        as Python floats; see the module docstring for the meaning and caveats.
        ``act_hf_share`` is absent where undefined. Empty layers are skipped.
    """
    metrics: dict[str, float] = {}
    for name, activation in activations.items():
        if activation.numel() == 0:
            continue
        values = activation.detach().float()
        metrics[f"act_mean/{name}"] = float(values.mean())
        metrics[f"act_zero_fraction/{name}"] = float((values == 0).float().mean())
        if values.dim() >= 3:
            share = _hf_share(values)
            if share is not None:
                metrics[f"act_hf_share/{name}"] = share
    return metrics
