"""A seeded, offline two-class image set that needs spatial features.

Every image is smooth coloured clutter plus one Gabor patch (a grating under a
Gaussian window) at a random place, with random phase, frequency, size and
colour. Class 0 ("horizontal") has stripes near 0°, class 1 ("vertical") near
90°. Because phase and position are random, the class mean images are equal:
a linear model on raw pixels stays near chance (below 65%, see the tests),
while a small CNN learns oriented edge detectors and gets above 90%.
"""

from __future__ import annotations

import math

import torch

CLASS_NAMES = ("horizontal", "vertical")
GENERATOR_VERSION = "gabor-v1"


def make_synthetic(
    count: int, image_size: int = 64, seed: int = 0, *, jitter_degrees: float = 20.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` images (uint8, N×3×S×S) and labels (int64, balanced, shuffled).

    Deterministic for a given (count, image_size, seed).
    """
    if count < 2:
        raise ValueError(f"the synthetic set needs at least 2 images (got {count})")
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 2
    labels = labels[torch.randperm(count, generator=gen)]
    chunks = [_draw(labels[i : i + CHUNK], image_size, gen, jitter_degrees) for i in range(0, count, CHUNK)]
    return torch.cat(chunks), labels.long()


CHUNK = 256  # images drawn at a time: keeps the float work in cache


def _draw(labels: torch.Tensor, size: int, gen: torch.Generator, jitter_degrees: float) -> torch.Tensor:
    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=gen)

    coords = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    n = len(labels)

    # Clutter: a random colour, a random linear shading, and blurred noise.
    base = uniform(0.25, 0.75, n, 3, 1, 1)
    slope = uniform(-0.25, 0.25, n, 3, 2, 1, 1) / size
    shading = slope[:, :, 0] * (yy - size / 2) + slope[:, :, 1] * (xx - size / 2)
    noise = torch.randn(n, 3, size // 4, size // 4, generator=gen)
    noise = torch.nn.functional.interpolate(noise, size=(size, size), mode="bilinear", align_corners=False)
    image = base + shading + 0.08 * noise

    # The class signal: an oriented Gabor patch.
    angle = labels.float() * (math.pi / 2) + torch.deg2rad(uniform(-jitter_degrees, jitter_degrees, n))
    frequency = uniform(0.12, 0.25, n)  # cycles per pixel
    phase = uniform(0, 2 * math.pi, n)
    sigma = uniform(0.09, 0.16, n) * size
    margin = 0.2 * size
    cy = uniform(margin, size - margin, n)
    cx = uniform(margin, size - margin, n)
    dy = yy[None] - cy[:, None, None]
    dx = xx[None] - cx[:, None, None]
    # angle 0 → stripes run horizontally (intensity varies along y).
    along = dy * torch.cos(angle)[:, None, None] + dx * torch.sin(angle)[:, None, None]
    grating = torch.cos(2 * math.pi * frequency[:, None, None] * along + phase[:, None, None])
    window = torch.exp(-(dy**2 + dx**2) / (2 * sigma[:, None, None] ** 2))
    colour = uniform(0.15, 0.3, n, 3, 1, 1) * torch.where(torch.rand(n, 3, 1, 1, generator=gen) < 0.5, -1.0, 1.0)
    image = image + colour * (grating * window)[:, None]

    return (image.clamp(0, 1) * 255).round().to(torch.uint8)
