"""The per-layer overview picture: fixed channels, balanced probe rows, maps vs channel strengths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convscope.pictures.overview import (
    HEADER_PX,
    INPUT_GAP,
    MAP_CHANNELS,
    MIN_TILE_PX,
    STRENGTH_CELL_PX,
    STRENGTH_CHANNELS,
    TILE_GAP,
    channel_budget,
    layer_overview,
    select_channels,
    select_rows,
)
from convscope.pictures.render import _lut

VIRIDIS = _lut("viridis").numpy()


def probe_images(count: int, size: int = 64) -> torch.Tensor:
    return torch.arange(count, dtype=torch.uint8)[:, None, None, None].mul(20).expand(count, 3, size, size).clone()


def tile(picture: np.ndarray, row: int, column: int, side: int, width: int) -> np.ndarray:
    """The pixels of channel column ``column`` (0-based, after the probe column) in probe row ``row``."""
    top = HEADER_PX + TILE_GAP + row * (side + TILE_GAP)
    left = (side + 2 * TILE_GAP) + INPUT_GAP + TILE_GAP + column * (width + TILE_GAP)
    return picture[top : top + side, left : left + width]


def test_select_channels_most_active_first_ties_to_lower_index() -> None:
    activation = torch.zeros(2, 6, 3, 3)
    activation[:, 4] = 3.0
    activation[:, 1] = 2.0
    activation[:, 5] = 2.0
    assert select_channels(activation, 3) == (4, 1, 5)
    assert select_channels(activation, 10) == (4, 1, 5, 0, 2, 3)


def test_select_rows_round_robin_over_classes_in_probe_order() -> None:
    labels = [0] * 6 + [1] * 6 + [-1]
    # rounds: (0, 6, 12), (1, 7), (2, 8), then 3 fills the eighth row
    assert select_rows(labels, 8) == (0, 1, 2, 3, 6, 7, 8, 12)
    assert select_rows(labels, 2) == (0, 6)
    assert select_rows([0, 1, 0, 1], 8) == (0, 1, 2, 3)


def test_spatial_maps_are_big_tiles_of_the_chosen_channels_scaled_per_channel() -> None:
    p, c, h = 4, 10, 7
    activation = torch.zeros(p, c, h, h)
    activation[:, 3, 2, 5] = 1.0  # channel 3: one hot spot at (2, 5) on every probe
    activation[1, 8] = 5.0  # channel 8: on for probe 1 only
    picture = layer_overview(activation, probe_images(p), channels=(3, 8, 0), rows=(0, 1, 2, 3))
    scale = -(-MIN_TILE_PX // h)
    side = h * scale
    assert side >= MIN_TILE_PX
    assert picture.shape == (HEADER_PX + TILE_GAP + p * (side + TILE_GAP),
                             side + 2 * TILE_GAP + INPUT_GAP + TILE_GAP + 3 * (side + TILE_GAP), 3)
    spot = tile(picture, 0, 0, side, side)
    bright = np.all(spot == VIRIDIS[255], axis=-1)
    assert bright.sum() == scale * scale and bright[2 * scale, 5 * scale]
    assert np.all(tile(picture, 1, 1, side, side) == VIRIDIS[255])  # channel 8, probe 1: its maximum
    assert np.all(tile(picture, 0, 1, side, side) == VIRIDIS[0])  # channel 8 is off for probe 0: dark
    assert np.all(tile(picture, 2, 2, side, side) == VIRIDIS[0])  # an all-zero channel stays dark
    assert np.all(picture[:HEADER_PX - 12] == 255)  # the header strip is white above its text
    assert (picture[:HEADER_PX] < 128).any()  # ... and has text


@pytest.mark.parametrize("h", [3, 1])
def test_small_maps_are_channel_strength_cells(h: int) -> None:
    p, c = 8, 40
    activation = torch.zeros(p, c, h, h)
    activation[:4, 7] = 10.0  # class-selective channel: on for the first four probes
    activation[:, 9] = torch.arange(p, dtype=torch.float32)[:, None, None]
    channels = select_channels(activation, channel_budget(h, h))
    assert len(channels) == STRENGTH_CHANNELS and channels[:2] == (7, 9)
    picture = layer_overview(activation, probe_images(p), channels=channels, rows=tuple(range(p)))
    side, width = MIN_TILE_PX, STRENGTH_CELL_PX
    for row in range(p):
        cell = tile(picture, row, 0, side, width)
        assert np.all(cell == VIRIDIS[255 if row < 4 else 0])  # each cell is one flat colour
        ramp = tile(picture, row, 1, side, width)
        assert np.all(ramp == VIRIDIS[round(255 * row / (p - 1))])


def test_budget_and_bad_input() -> None:
    assert channel_budget(31, 31) == MAP_CHANNELS and channel_budget(3, 3) == STRENGTH_CHANNELS
    activation = torch.rand(2, 4, 7, 7)
    with pytest.raises(ValueError, match="out of range"):
        layer_overview(activation, probe_images(2), channels=(4,), rows=(0,))
    with pytest.raises(ValueError, match="needs"):
        layer_overview(activation, probe_images(3), channels=(0,), rows=(0,))


def test_overview_is_wide_enough_to_stay_whole_in_a_chart_card() -> None:
    """About 2.5 : 1, so MLflow's 256-px-wide thumbnail is ~100 px tall, with tiles of ≥ 20 px."""
    for c, h in [(16, 31), (32, 15), (64, 7), (128, 3), (256, 1)]:
        activation = torch.rand(8, c, h, h)
        picture = layer_overview(activation, probe_images(8),
                                 select_channels(activation, channel_budget(h, h)), select_rows([0] * 4 + [1] * 4))
        height, width = picture.shape[:2]
        assert 2.4 <= width / height <= 2.8, (c, h, picture.shape)
        assert 256 / width * MIN_TILE_PX >= 19, (c, h, picture.shape)  # a tile as the thumbnail shows it
