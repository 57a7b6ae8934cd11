"""The model family and the seed preset."""

from __future__ import annotations

import pytest
import torch

from convscope.train.config import build_config
from convscope.train.errors import ConfigError
from convscope.train.model import build_model, count_parameters, layer_table, max_depth, spatial_sizes, validate


def model_config(**model):  # type: ignore[no-untyped-def]
    return build_config("seed", {"model": model}).model


def test_seed_preset_is_the_reference_network() -> None:
    model = build_model(model_config())
    assert count_parameters(model) == 409_682
    assert list(dict(model.features.named_children())) == ["conv1", "conv2", "conv3", "conv4", "conv5"]


def test_seed_block_output_shapes() -> None:
    model = build_model(model_config()).eval()
    x = torch.zeros(2, 3, 64, 64)
    shapes = []
    for block in model.features:
        x = block(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [(16, 31, 31), (32, 15, 15), (64, 7, 7), (128, 3, 3), (256, 1, 1)]
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 2)


def test_seed_block_layout_matches_reference() -> None:
    block = build_model(model_config()).features.conv1
    assert block.conv.bias is None and block.conv.stride == (2, 2) and block.conv.padding == (0, 0)
    assert isinstance(block.norm, torch.nn.BatchNorm2d)
    assert block.drop.p == pytest.approx(0.1)


def test_widths_from_base_and_growth() -> None:
    assert model_config(depth=3, base_width=8, growth=1.5).channel_widths() == (8, 12, 18)
    assert model_config(depth=3, widths=(4, 4, 4)).channel_widths() == (4, 4, 4)


def test_too_deep_names_largest_depth_that_fits() -> None:
    with pytest.raises(ConfigError, match="largest depth that fits is 5"):
        validate(model_config(depth=7))
    assert max_depth(model_config()) == 5
    assert max_depth(model_config(padding=1)) == 6
    validate(model_config(depth=6, padding=1))


def test_widths_must_match_depth() -> None:
    with pytest.raises(ConfigError, match="--widths lists 2 widths but --depth is 3"):
        validate(model_config(depth=3, widths=(8, 16)))


@pytest.mark.parametrize(
    ("overrides", "flag"),
    [({"dropout": 1.0}, "--dropout"), ({"pool": "avg"}, "--pool"), ({"depth": 0}, "--depth"), ({"image_size": 2}, "--image-size")],
)
def test_bad_model_settings_name_the_flag(overrides: dict, flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        validate(model_config(**overrides))


def test_pooling_and_no_batch_norm() -> None:
    config = model_config(depth=2, padding=1, pool="max", batch_norm=False)
    assert spatial_sizes(config) == [16, 4]
    model = build_model(config)
    assert model.features.conv1.conv.bias is not None
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 2)


def test_layer_table_lists_every_block_and_total() -> None:
    table = layer_table(build_model(model_config()))
    assert "conv5" in table and "256x1x1" in table and "409,682" in table


def test_feature_layers_are_post_relu() -> None:
    model = build_model(model_config())
    layers = model.feature_layers()
    assert list(layers) == [f"conv{i}" for i in range(1, 6)]
    assert all(isinstance(m, torch.nn.ReLU) for m in layers.values())


def test_bypass_replaces_a_block_and_keeps_every_other_shape() -> None:
    from dataclasses import replace

    from convscope.train.model import Bypass, ConvBlock

    seed = build_config("seed").model
    full = build_model(seed)
    for blocks in [(1,), (3,), (5,), (4, 5)]:
        model = build_model(replace(seed, bypass=blocks))
        x = torch.randn(2, 3, 64, 64)
        a, b = x, x
        for (name, block_full), (_, block) in zip(full.features.named_children(), model.features.named_children()):
            a, b = block_full(a), block(b)
            assert a.shape == b.shape, name  # every block's output keeps its shape
            assert isinstance(block, Bypass) == (int(name[4:]) in blocks)
        assert list(model.feature_layers()) == [f"conv{i}" for i in range(1, 6) if i not in blocks]
        assert model(x).shape == (2, 2)
        kept = [n for n, blk in model.features.named_children() if isinstance(blk, ConvBlock)]
        # the bypass projects to the removed block's width, so every kept block has its original weights' shapes
        assert [count_parameters(getattr(model.features, n)) for n in kept] == \
            [count_parameters(getattr(full.features, n)) for n in kept]
    assert build_model(replace(seed, bypass=(1,))).first_conv() is None
    assert build_model(replace(seed, bypass=(2,))).first_conv().in_channels == 3
    with pytest.raises(ConfigError, match="--bypass 6: give distinct blocks from 1 to 5"):
        build_model(replace(seed, bypass=(6,)))
    with pytest.raises(ConfigError, match="at least one of the 5 blocks must stay"):
        build_model(replace(seed, bypass=(1, 2, 3, 4, 5)))
