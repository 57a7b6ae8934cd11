"""Render captures as images a tracking UI can show.

Every image function returns a ``numpy.ndarray`` of shape (H, W, 3), dtype
uint8 (the ``Tracker.log_image`` convention); the confusion matrix is a
``matplotlib.figure.Figure`` built without pyplot (``Tracker.log_figure``).

Design constraints: MLflow shows each image as a card about 200 px wide, so grids are laid out near-square (long side /
short side ≤ 2), tiny maps are upscaled with nearest-neighbour, and no image is
wider/taller than about :data:`MAX_GRID_SIDE` px unless the maps themselves
force it. Everything here is cheap tensor/numpy work plus
:func:`torchvision.utils.make_grid`; nothing touches pyplot state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont
from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix
from torch import Tensor
from torchvision.utils import make_grid

#: Long-side budget (px) for feature-map grids; tiles shrink towards the map size to fit.
MAX_GRID_SIDE = 1500
#: Aspect ratio (long / short) under which probes stay one block per row.
_PREFERRED_ASPECT = 1.5
#: Height (px) of the column-label strip on top of :func:`saliency_grid`.
SALIENCY_HEADER_PX = 16
#: Padding (px) between saliency tiles (make_grid's ``padding``).
SALIENCY_PAD = 2
_FILTER_PAD = 2


@lru_cache(maxsize=16)
def _lut(name: str) -> Tensor:
    """256-entry uint8 RGB lookup table (256, 3) for a matplotlib colormap name."""
    try:
        cmap = colormaps[name]
    except KeyError as error:
        raise ValueError(f"unknown matplotlib colormap {name!r}; try 'viridis', 'magma' or 'jet'") from error
    table = cmap(np.linspace(0.0, 1.0, 256))[:, :3]
    return torch.from_numpy(np.round(table * 255.0).astype(np.uint8))


def _to_index(unit: Tensor) -> Tensor:
    """Map values in [0, 1] to LUT indices 0..255 (long)."""
    return (unit.clamp(0, 1) * 255.0).round().long()


def _upscale(x: Tensor, scale: int) -> Tensor:
    """Nearest-neighbour integer upscale of the last two dims."""
    if scale == 1:
        return x
    return x.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)


def _to_hwc(grid: Tensor) -> np.ndarray:
    """(3, H, W) uint8 tensor → contiguous (H, W, 3) uint8 array."""
    return np.ascontiguousarray(grid.permute(1, 2, 0).numpy())


def _grid_size(n: int, nrow: int, tile_h: int, tile_w: int, pad: int) -> tuple[int, int]:
    """(height, width) that ``make_grid(n images, nrow, padding=pad)`` produces."""
    if n == 1:  # make_grid returns a single image unpadded
        return tile_h, tile_w
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    return rows * (tile_h + pad) + pad, cols * (tile_w + pad) + pad


def _column_options(n: int) -> list[int]:
    """Column counts worth trying for n items: the smallest per row count (no wasted rows)."""
    return sorted({math.ceil(n / rows) for rows in range(1, n + 1)})


def _aspect(size: tuple[int, int], width_ratio: float = 1.0) -> float:
    """How far a (height, width) is from ``width_ratio`` : 1, as a ratio ≥ 1 (1 = exactly that shape)."""
    shape = size[1] / size[0] / width_ratio
    return max(shape, 1.0 / shape)


def _feature_pads(tile: int) -> tuple[int, int]:
    """(padding between channel tiles, separator between probe blocks) for a tile size."""
    return (1 if tile < 32 else 2), max(4, tile // 3)


@lru_cache(maxsize=256)
def _feature_layout(
    p: int, c: int, h: int, w: int, min_tile: int, max_side: int, width_ratio: float = 1.0
) -> tuple[int, int, int]:
    """Choose (scale, channel columns, probe-block columns) for :func:`feature_map_grid`.

    Largest scale ≤ ceil(min_tile / min(h, w)) whose best layout fits
    ``max_side`` (scale 1 always accepted). Probe blocks stay one per row
    (reading order top-to-bottom) unless that cannot get the aspect under
    ``_PREFERRED_ASPECT``; then blocks are also tiled in columns.
    """
    start = max(1, math.ceil(min_tile / max(1, min(h, w))))
    best: tuple[int, int, int] = (1, 1, 1)
    for scale in range(start, 0, -1):
        tile_h, tile_w = h * scale, w * scale
        pad, sep = _feature_pads(min(tile_h, tile_w))
        candidates: list[tuple[float, int, int, tuple[int, int]]] = []
        for probe_cols in _column_options(p):
            for cols in _column_options(c):
                block = _grid_size(c, cols, tile_h, tile_w, pad)
                size = _grid_size(p, probe_cols, block[0], block[1], sep)
                candidates.append((_aspect(size, width_ratio), probe_cols, cols, size))
        one_column = min((cand for cand in candidates if cand[1] == 1), key=lambda cand: cand[0])
        choice = one_column if one_column[0] <= _PREFERRED_ASPECT else min(candidates, key=lambda cand: cand[0])
        best = (scale, choice[2], choice[1])
        if max(choice[3]) <= max_side:
            break
    return best


def feature_map_grid(
    activation: Tensor,
    *,
    min_tile: int = 16,
    colormap: str = "viridis",
    max_side: int = MAX_GRID_SIDE,
    width_ratio: float = 1.0,
) -> np.ndarray:
    """Every channel of every probe as one near-square colourised grid.

    Args:
        activation: (P, C, h, w) activations of one layer.
        min_tile: smallest tile side in px; maps smaller than this are
            upscaled nearest-neighbour by an integer factor. Shrunk (never
            below the map size) when the image would exceed ``max_side``.
        colormap: a matplotlib colormap name.
        max_side: long-side budget in px (exceeded only when even unscaled
            maps do not fit).
        width_ratio: the width : height the layout aims at (1 = near-square).

    Each (probe, channel) map is min–max normalised on its own (a constant map
    renders as the colormap's low end). Exception: 1×1 maps, which are always
    constant, are normalised per channel across the probes instead, so the grid
    shows which probes switch each channel on (with a single probe: across its
    channels, so the grid shows which channels are on). Each probe's channels form one
    block (row-major, channel 0 top-left, thin dark gaps); blocks are stacked
    top to bottom in probe order, separated by white bands; when that would be
    too tall/wide (few channels, many probes) blocks also wrap into columns,
    still in row-major probe order. Long side / short side ≤ 2 for square
    maps and any P ≤ 32, C ≤ 512 (checked exhaustively for h = 1, 3, 7, 15, 31).
    """
    if activation.dim() != 4 or activation.shape[0] < 1 or activation.shape[1] < 1:
        raise ValueError(f"feature_map_grid needs (P, C, h, w) with P, C ≥ 1, got {tuple(activation.shape)}")
    p, c, h, w = (int(size) for size in activation.shape)
    values = torch.nan_to_num(activation.detach().float().cpu())
    dims = ((0, 2, 3) if p > 1 else (1, 2, 3)) if h * w == 1 else (2, 3)
    low = values.amin(dim=dims, keepdim=True)
    span = values.amax(dim=dims, keepdim=True) - low
    unit = torch.where(span > 0, (values - low) / span.clamp_min(1e-30), torch.zeros_like(values))
    scale, cols, probe_cols = _feature_layout(p, c, h, w, int(min_tile), int(max_side), float(width_ratio))
    pad, sep = _feature_pads(min(h, w) * scale)
    rgb = _upscale(_lut(colormap)[_to_index(unit)].permute(0, 1, 4, 2, 3).contiguous(), scale)  # (P, C, 3, H, W)
    blocks = torch.stack([make_grid(rgb[i], nrow=cols, padding=pad, pad_value=0) for i in range(p)])
    return _to_hwc(make_grid(blocks, nrow=probe_cols, padding=sep, pad_value=255))


def filter_grid(weight: Tensor, *, tile: int = 24, width_ratio: float = 1.0) -> np.ndarray:
    """First-layer filters as a near-square grid of small images.

    Args:
        weight: conv weight (O, I, kh, kw). With I == 3 each filter is shown in
            RGB; otherwise as the grayscale mean over input channels.
        tile: minimum tile side in px (nearest-neighbour integer upscale).
        width_ratio: the width : height of the layout (1: ceil(sqrt(O)) filters per row).

    Each filter is min–max normalised on its own over all its values (so
    colour balance within a filter is kept); constant filters render black.
    Filters are laid out row-major, ceil(sqrt(O · width_ratio)) per row, on a gray background.
    """
    if weight.dim() != 4:
        raise ValueError(f"filter_grid needs a conv weight (O, I, kh, kw), got shape {tuple(weight.shape)}")
    values = torch.nan_to_num(weight.detach().float().cpu())
    if values.shape[1] != 3:
        values = values.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    low = values.amin(dim=(1, 2, 3), keepdim=True)
    span = values.amax(dim=(1, 2, 3), keepdim=True) - low
    unit = torch.where(span > 0, (values - low) / span.clamp_min(1e-30), torch.zeros_like(values))
    scale = max(1, math.ceil(tile / max(values.shape[2], values.shape[3])))
    pixels = _upscale((unit * 255.0).round().to(torch.uint8), scale)
    nrow = min(values.shape[0], math.ceil(math.sqrt(values.shape[0] * width_ratio)))
    return _to_hwc(make_grid(pixels, nrow=nrow, padding=_FILTER_PAD, pad_value=128))


def _overlay(images: Tensor, heat: Tensor, lut: Tensor, alpha: float) -> Tensor:
    """Blend a (P, H, W) [0, 1] heat map, colourised with ``lut``, onto (P, 3, H, W) uint8."""
    colour = lut[_to_index(heat)].permute(0, 3, 1, 2).float()
    return ((1.0 - alpha) * images.float() + alpha * colour).round().clamp(0, 255).to(torch.uint8)


def label_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's default font, at ``size`` px when FreeType is available."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError):  # old Pillow / no FreeType: bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> str:
    """Truncate ``text`` (with an ellipsis) so it renders within ``width`` px."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def saliency_grid(
    images: Tensor,
    gradient: Tensor,
    gradcam: Mapping[str, Tensor],
    *,
    class_names: Sequence[str] | None = None,
    targets: Tensor | None = None,
    min_tile: int = 64,
    alpha: float = 0.5,
    colormap: str = "jet",
) -> np.ndarray:
    """Probe images next to their gradient saliency and per-layer Grad-CAM.

    Args:
        images: original probe images (P, 3, H, W) uint8.
        gradient: (P, H, W) in [0, 1] (``ProbeCapture.gradient``).
        gradcam: layer → (P, H, W) in [0, 1] (``ProbeCapture.gradcam``), in column order.
        class_names: names for ``targets``; with ``targets``, each row's first
            tile is labelled with the explained class (its index if no names).
        targets: (P,) explained class per probe (``ProbeCapture.targets``).
        min_tile: tiles are upscaled nearest-neighbour to at least this many px.
        alpha: weight of the heat colour in the overlays.
        colormap: heat colormap for the overlays.

    Returns:
        (SALIENCY_HEADER_PX + P·(T+2) + 2, (2+L)·(T+2) + 2, 3) uint8, T the tile
        side: a white header strip with the column labels ("input", "gradient",
        then the layer names) above one row per probe.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (P, 3, H, W) uint8, got shape {tuple(images.shape)}")
    p, _, h, w = (int(size) for size in images.shape)
    maps = {"gradient": gradient, **dict(gradcam)}
    for name, heat in maps.items():
        if tuple(heat.shape) != (p, h, w):
            raise ValueError(f"{name} map has shape {tuple(heat.shape)}, expected {(p, h, w)} to match the images")
    lut = _lut(colormap)
    base = images.detach().cpu()
    if base.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (the original pixels), got {base.dtype}")
    columns = [base] + [_overlay(base, heat.detach().float().cpu(), lut, alpha) for heat in maps.values()]
    scale = max(1, math.ceil(min_tile / min(h, w)))
    tiles = _upscale(torch.stack(columns, dim=1), scale)  # (P, 2+L, 3, H', W')
    tile_h, tile_w = int(tiles.shape[-2]), int(tiles.shape[-1])
    ncols = len(columns)
    grid = make_grid(tiles.flatten(0, 1), nrow=ncols, padding=SALIENCY_PAD, pad_value=255)
    canvas = Image.new("RGB", (grid.shape[2], SALIENCY_HEADER_PX + grid.shape[1]), (255, 255, 255))
    canvas.paste(Image.fromarray(_to_hwc(grid)), (0, SALIENCY_HEADER_PX))
    draw = ImageDraw.Draw(canvas)
    font = label_font(SALIENCY_HEADER_PX - 5)
    for j, label in enumerate(["input", *maps]):
        x = SALIENCY_PAD + j * (tile_w + SALIENCY_PAD)
        draw.text((x + 2, 2), _fit(draw, str(label), font, tile_w - 4), fill=(0, 0, 0), font=font)
    if targets is not None:
        labels = [int(t) for t in targets.reshape(-1).tolist()]
        if len(labels) != p:
            raise ValueError(f"targets has {len(labels)} entries for {p} probes")
        for i, target in enumerate(labels):
            text = class_names[target] if class_names is not None and 0 <= target < len(class_names) else str(target)
            text = _fit(draw, text, font, tile_w - 6)
            y = SALIENCY_HEADER_PX + SALIENCY_PAD + i * (tile_h + SALIENCY_PAD)
            box = draw.textbbox((SALIENCY_PAD + 2, y + 1), text, font=font)
            draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(0, 0, 0))
            draw.text((SALIENCY_PAD + 2, y + 1), text, fill=(255, 255, 255), font=font)
    return np.asarray(canvas).copy()


def pad_to_width_ratio(image: np.ndarray, width_ratio: float, fill: int = 255) -> np.ndarray:
    """``image`` (H, W, 3) padded on the right with ``fill`` until W ≥ ``width_ratio`` · H, so
    every picture of a set shows at the same scale in a thumbnail of fixed width."""
    height, width = image.shape[:2]
    missing = math.ceil(width_ratio * height) - width
    if missing <= 0:
        return image
    return np.pad(image, ((0, 0), (0, missing), (0, 0)), constant_values=fill)


def _as_numpy(values: Sequence[int] | np.ndarray | Tensor) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def confusion_matrix_figure(
    y_true: Sequence[int] | np.ndarray | Tensor,
    y_pred: Sequence[int] | np.ndarray | Tensor,
    class_names: Sequence[str],
) -> Figure:
    """Confusion matrix as a pyplot-free ``Figure``.

    Rows are true classes, columns predictions, both indexed 0..K-1 in
    ``class_names`` order. Each cell reads ``"{count}\\n{row %}"``; colour is
    the row-normalised rate (per-class recall on the diagonal), so imbalanced
    classes stay readable. The title gives n and accuracy.
    """
    names = [str(name) for name in class_names]
    if not names:
        raise ValueError("class_names is empty; pass one name per class index")
    true, pred = _as_numpy(y_true).reshape(-1), _as_numpy(y_pred).reshape(-1)
    if true.shape != pred.shape:
        raise ValueError(f"y_true has {true.size} entries but y_pred has {pred.size}")
    counts = confusion_matrix(true, pred, labels=np.arange(len(names)))
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 1.6 + 1.1 * len(names)
    figure = Figure(figsize=(max(3.6, size), max(3.2, size - 0.4)), layout="constrained")
    axes = figure.add_subplot()
    display = ConfusionMatrixDisplay(rates, display_labels=names)
    display.plot(
        ax=axes,
        cmap="Blues",
        colorbar=False,
        values_format=".0%",
        im_kw={"vmin": 0.0, "vmax": 1.0},
        xticks_rotation=45 if len(names) > 4 else "horizontal",
    )
    for (i, j), text in np.ndenumerate(display.text_):
        text.set_text(f"{counts[i, j]}\n{rates[i, j]:.0%}")
        text.set_color("white" if rates[i, j] >= 0.5 else "#08306b")  # contrast with vmin=0, vmax=1
        text.set_fontsize(11)
    total = int(counts.sum())
    accuracy = float(np.trace(counts)) / total if total else float("nan")
    axes.set_title(f"n = {total}, accuracy = {accuracy:.1%}")
    return figure
