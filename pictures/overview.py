"""Each conv layer as a picture a person reads at a glance: a few probes × a few fixed channels.

MLflow shows a logged image as a thumbnail whose longest side is 256 px (even in its
full-screen view), centred in a square box below the run's params, inside a chart card
of fixed height: only a *wide* picture (about 2.5 : 1, so ~100 px tall at 256 px wide)
stays whole in the card. TensorBoard shows the same picture at full size. So:

- one row per probe image (:data:`OVERVIEW_PROBES`, taken round-robin over the
  classes), the probe itself in the first column, so every row says what it is;
- then a fixed set of channels of the layer, chosen once per run by
  :func:`select_channels` and kept in the same column every epoch, so a step slider
  shows the same channels learning;
- maps larger than 3×3 are drawn as maps, upscaled nearest-neighbour to tiles of at
  least :data:`MIN_TILE_PX`; maps of 3×3 and smaller carry no picture worth the name,
  so each (probe, channel) is one cell of *channel strength* (its mean activation);
- every channel is scaled on its own over the shown probes, from 0 (dark: the channel
  is off) to its largest value (bright), so a column compares probes with each other;
- a header strip names the columns (``input`` and the channel numbers, which are the
  tile positions of the same channels in the full all-channel grid).

Everything is tensor work plus :func:`torchvision.utils.make_grid`; the header is
drawn once per layer and cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor
from torchvision.utils import make_grid

from convscope.pictures.render import _lut, _to_index, _upscale, label_font

#: Width : height of every per-epoch picture: MLflow's 256-px-wide thumbnail is then ~100 px tall.
WIDTH_RATIO = 2.5
#: Probe rows shown per layer.
OVERVIEW_PROBES = 4
#: Channel columns for maps larger than :data:`SMALL_MAP_SIDE`.
MAP_CHANNELS = 10
#: Channel columns for maps of :data:`SMALL_MAP_SIDE` or smaller (channel strengths).
STRENGTH_CHANNELS = 18
#: Maps this small (in their shorter side) or smaller are shown as channel strengths.
SMALL_MAP_SIDE = 3
#: Smallest tile side (px) of a map and of the probe image.
MIN_TILE_PX = 28
#: Width (px) of one channel-strength cell.
STRENGTH_CELL_PX = 16
#: Gap (px) between tiles, and between the probe column and the channels.
TILE_GAP = 2
INPUT_GAP = 6
#: Height (px) of the header strip with the column names.
HEADER_PX = 14


def is_small_map(height: int, width: int) -> bool:
    """Whether maps of this size are drawn as channel strengths rather than as maps."""
    return min(height, width) <= SMALL_MAP_SIDE


def channel_budget(height: int, width: int) -> int:
    """How many channels the overview of maps of this size shows."""
    return STRENGTH_CHANNELS if is_small_map(height, width) else MAP_CHANNELS


def select_channels(activation: Tensor, count: int) -> tuple[int, ...]:
    """The ``count`` channels with the largest mean activation over the probes and positions of
    ``activation`` (P, C, h, w), most active first; ties go to the lower channel index."""
    strength = torch.nan_to_num(activation.detach().float()).mean(dim=(0, 2, 3)).tolist()
    order = sorted(range(len(strength)), key=lambda channel: (-strength[channel], channel))
    return tuple(order[: max(1, count)])


def select_rows(labels: Sequence[int], limit: int = OVERVIEW_PROBES) -> tuple[int, ...]:
    """Up to ``limit`` probe indices taken round-robin over the label values (unlabelled probes,
    ``-1``, count as one more group), returned in probe order."""
    groups: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        groups.setdefault(int(label), []).append(index)
    queues = [groups[label] for label in sorted(groups, key=lambda label: (label < 0, label))]
    chosen: list[int] = []
    depth = 0
    while len(chosen) < min(limit, len(labels)):
        for queue in queues:
            if depth < len(queue) and len(chosen) < limit:
                chosen.append(queue[depth])
        depth += 1
    return tuple(sorted(chosen))


def _unit_per_channel(values: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Scale every channel (dim 1) to [0, 1] over ``dims``: from 0 (or its minimum, if negative)
    to its maximum; an all-zero channel stays 0."""
    low = values.amin(dim=dims, keepdim=True).clamp(max=0.0)
    span = values.amax(dim=dims, keepdim=True) - low
    return torch.where(span > 0, (values - low) / span.clamp_min(1e-30), torch.zeros_like(values))


def _probe_tiles(images: Tensor, side: int) -> Tensor:
    """(R, 3, H, W) uint8 probe images resized to (R, 3, side, side) uint8."""
    resized = F.interpolate(images.float(), size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8)


@lru_cache(maxsize=64)
def _header(labels: tuple[str, ...], widths: tuple[int, ...], gaps: tuple[int, ...], font_px: int) -> Tensor:
    """(3, HEADER_PX, W) uint8 white strip with each label over its column (``gaps[i]`` px before
    column ``i``); a label wider than its column and the gap after it is left out."""
    total = sum(widths) + sum(gaps)
    canvas = Image.new("RGB", (total, HEADER_PX), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = label_font(font_px)
    x = 0
    for label, width, gap in zip(labels, widths, gaps):
        x += gap
        if draw.textlength(label, font=font) <= width + TILE_GAP:
            draw.text((x, HEADER_PX - font_px - 2), label, fill=(0, 0, 0), font=font)
        x += width
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1)


def _grid(tiles: Tensor, nrow: int) -> Tensor:
    """``make_grid`` with black ``TILE_GAP`` padding, also around a single tile (which ``make_grid``
    returns bare: an overview of one probe and one channel must line up like any other)."""
    if tiles.shape[0] == 1:
        return torch.nn.functional.pad(tiles[0], (TILE_GAP,) * 4, value=0)
    return make_grid(tiles, nrow=nrow, padding=TILE_GAP, pad_value=0)


def layer_overview(
    activation: Tensor,
    images: Tensor,
    channels: Sequence[int],
    rows: Sequence[int],
    *,
    colormap: str = "viridis",
) -> np.ndarray:
    """The overview picture of one layer (see the module docstring).

    Args:
        activation: (P, C, h, w) activations of the layer for all probes.
        images: (P, 3, H, W) uint8 probe images.
        channels: channel indices to show, in column order (from :func:`select_channels`).
        rows: probe indices to show, in row order (from :func:`select_rows`).
        colormap: a matplotlib colormap name.

    Returns:
        (H, W, 3) uint8: the header strip above one row per probe (the probe image, then one
        tile or strength cell per channel).
    """
    if activation.dim() != 4 or images.dim() != 4 or activation.shape[0] != images.shape[0]:
        raise ValueError(f"layer_overview needs (P, C, h, w) activations and (P, 3, H, W) images, "
                         f"got {tuple(activation.shape)} and {tuple(images.shape)}")
    if not channels or not rows:
        raise ValueError("layer_overview needs at least one channel and one probe row")
    _, c, h, w = (int(size) for size in activation.shape)
    if max(channels) >= c or min(channels) < 0:
        raise ValueError(f"channels {tuple(channels)} out of range for a layer of {c} channels")
    row_index = torch.tensor(list(rows), dtype=torch.long)
    values = torch.nan_to_num(activation.detach().float().cpu()[row_index][:, list(channels)])  # (R, K, h, w)
    lut = _lut(colormap)
    if is_small_map(h, w):
        side = MIN_TILE_PX
        # each channel scaled over the probes; one probe alone has nothing to compare with: then the
        # cells compare the channels with each other
        strength = _unit_per_channel(values.mean(dim=(2, 3)), dims=(0,) if len(rows) > 1 else (0, 1))  # (R, K)
        cells = lut[_to_index(strength)]  # (R, K, 3)
        tiles = cells[..., None, None].expand(-1, -1, -1, side, STRENGTH_CELL_PX)
        tile_w = STRENGTH_CELL_PX
    else:
        scale = max(1, -(-MIN_TILE_PX // min(h, w)))
        unit = _unit_per_channel(values, dims=(0, 2, 3))
        tiles = _upscale(lut[_to_index(unit)].permute(0, 1, 4, 2, 3).contiguous(), scale)  # (R, K, 3, h', w')
        side, tile_w = h * scale, w * scale
    r, k = len(rows), len(channels)
    block = _grid(tiles.reshape(r * k, 3, side, tile_w), nrow=k)
    probes = _grid(_probe_tiles(images.cpu()[row_index], side), nrow=1)
    gap = torch.full((3, block.shape[1], INPUT_GAP), 255, dtype=torch.uint8)
    body = torch.cat([probes, gap, block], dim=2)
    header = _header(
        ("input", *(str(channel) for channel in channels)),
        (side, *([tile_w] * k)),
        (TILE_GAP, 2 * TILE_GAP + INPUT_GAP, *([TILE_GAP] * (k - 1))),
        HEADER_PX - 3 if tile_w >= 20 else HEADER_PX - 5,
    )
    if header.shape[2] < body.shape[2]:
        header = F.pad(header, (0, body.shape[2] - header.shape[2]), value=255)
    picture = torch.cat([header[:, :, : body.shape[2]], body], dim=1)
    return np.ascontiguousarray(picture.permute(1, 2, 0).numpy())
