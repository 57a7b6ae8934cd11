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


# ---------------------------------------------------------------- a task whose required depth is known

SCALE_CLASS_NAMES = ("same", "different")
SCALE_GENERATOR_VERSION = "pairs-v1"


def pair_layout(image_size: int, scale: int) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of the region pairs of ``make_scale_task``.

    A pair is two ``w×w`` squares side by side (``w = 2**(scale-1)``) with a gap of
    ``2**scale - 2`` pixels, spanning ``2**(scale+1) - 2`` pixels: more than a window of
    ``2**scale - 1`` pixels (the receptive field of ``scale - 1`` blocks of k3 s2) can
    touch at once, less than the ``2**(scale+1) - 1`` of ``scale`` blocks. Corners sit on
    the ``2**scale`` grid of the ``scale``-th block; regions of different pairs keep the
    same distance apart, so no small window sees two regions of any pairs.
    """
    if scale < 1:
        raise ValueError(f"the scale must be at least 1 (got {scale})")
    w, gap, step = 2 ** (scale - 1), 2**scale - 2, 2**scale
    span = 2 * w + gap
    boxes: list[tuple[int, int, int, int]] = []  # (y0, y1, x0, x1) inclusive, of every region
    corners: list[tuple[int, int]] = []
    for y in range(0, image_size - w, step):  # the last row and column stay unused (padding 0 drops them)
        for x in range(0, image_size - span, step):
            regions = [(y, y + w - 1, x, x + w - 1), (y, y + w - 1, x + w + gap, x + span - 1)]
            if all(_apart(r, other, gap) for r in regions for other in boxes):
                boxes += regions
                corners.append((y, x))
    if not corners:
        raise ValueError(f"images of {image_size}x{image_size} are too small for scale {scale}: "
                         f"a pair spans {span + 1} pixels")
    return corners


def _apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    """At least ``gap`` pixels between the boxes along one axis."""
    dy = max(a[0], b[0]) - min(a[1], b[1]) - 1
    dx = max(a[2], b[2]) - min(a[3], b[3]) - 1
    return max(dy, dx) >= gap


def make_scale_task(count: int, image_size: int = 32, seed: int = 0, scale: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes that only ``scale`` or more conv blocks (k3, s2, p0) can tell apart.

    Every image is the same kind of clutter (a random colour, smooth colour noise and pixel
    noise) plus pairs of small squares laid out by ``pair_layout``; each square is tinted
    red or green at random. Class 0 ("same"): the two squares of every pair share their
    tint; class 1 ("different"): they differ. Every square alone is red or green with
    probability ½ in both classes, so the class is the *relation* between two squares
    ``2**scale - 2`` pixels apart, and a network sees a relation only where one unit's
    receptive field covers both squares: after ``scale`` blocks. With fewer, the logit is
    a sum over windows that each see at most one square, and for such a sum the
    cross-entropy optimum is a constant (flipping every second square swaps the classes).
    Deterministic for a given (count, image_size, seed, scale).
    """
    if count < 2:
        raise ValueError(f"the synthetic set needs at least 2 images (got {count})")
    corners = pair_layout(image_size, scale)
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 2
    labels = labels[torch.randperm(count, generator=gen)]
    chunks = [_draw_pairs(labels[i : i + CHUNK], image_size, scale, corners, gen) for i in range(0, count, CHUNK)]
    return torch.cat(chunks), labels.long()


def _draw_pairs(labels: torch.Tensor, size: int, scale: int, corners: list[tuple[int, int]],
                gen: torch.Generator) -> torch.Tensor:
    n = len(labels)
    base = 0.3 + 0.4 * torch.rand(n, 3, 1, 1, generator=gen)
    smooth = torch.randn(n, 3, max(1, size // 4), max(1, size // 4), generator=gen)
    smooth = torch.nn.functional.interpolate(smooth, size=(size, size), mode="bilinear", align_corners=False)
    image = base + 0.06 * smooth + 0.04 * torch.randn(n, 3, size, size, generator=gen)
    w, gap = 2 ** (scale - 1), 2**scale - 2
    tint = torch.tensor([1.0, -1.0, 0.0]).view(1, 3, 1, 1)  # red (+) or green (-)
    first = torch.where(torch.rand(n, len(corners), generator=gen) < 0.5, -1.0, 1.0)
    second = first * (1 - 2 * labels.float())[:, None]  # same sign for class 0, opposite for class 1
    strength = 0.15 + 0.1 * torch.rand(n, 1, generator=gen)
    for index, (y, x) in enumerate(corners):
        for sign, left in ((first[:, index], x), (second[:, index], x + w + gap)):
            image[:, :, y : y + w, left : left + w] += (sign[:, None] * strength)[:, :, None, None] * tint
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)
