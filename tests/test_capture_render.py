"""Probe capture, activation statistics, rendering and activation artifacts.

Models are built here (tiny Conv→BN→ReLU stacks and a hand-wired detector);
nothing from ``train`` is imported.
"""

from __future__ import annotations

import json
import math

import matplotlib
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from convscope.pictures.activations import (
    FORMAT,
    load_activations,
    save_analysis_activations,
    save_probe_activations,
)
from convscope.pictures.capture import ProbeCapture, capture_pooled, capture_probes
from convscope.pictures.render import (
    SALIENCY_HEADER_PX,
    SALIENCY_PAD,
    _lut,
    confusion_matrix_figure,
    feature_map_grid,
    filter_grid,
    saliency_grid,
)
from convscope.pictures.stats import activation_statistics


def tiny_model() -> tuple[nn.Sequential, dict[str, nn.Module]]:
    """3×32×32 → conv1 (4, 15, 15) → conv2 (8, 7, 7) → 3 logits."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, stride=2, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )
    return model, {"conv1": model[2], "conv2": model[5]}


def planted_model() -> tuple[nn.Sequential, dict[str, nn.Module]]:
    """Channel 0 of conv1 fires only on bright patches; class 1's logit is its mean, class 0's minus it."""
    conv = nn.Conv2d(3, 2, 3, padding=1)
    fc = nn.Linear(2, 2)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0].fill_(1.0 / 27.0)
        conv.bias.copy_(torch.tensor([-0.5, 0.1]))
        fc.weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
        fc.bias.zero_()
    model = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc)
    return model, {"conv1": model[1]}


def bright_square_inputs(probes: int = 2, size: int = 32, square: int = 8) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    x = 0.2 * torch.rand(probes, 3, size, size, generator=generator) - 0.1
    x[:, :, :square, :square] = 1.0  # top-left corner
    return x


# ---------------------------------------------------------------- capture


def test_capture_shapes_and_targets() -> None:
    model, layers = tiny_model()
    x = torch.randn(2, 3, 32, 32)
    capture = capture_probes(model, layers, x, targets=torch.tensor([2, -1]))
    assert isinstance(capture, ProbeCapture)
    assert list(capture.activations) == ["conv1", "conv2"]
    assert capture.activations["conv1"].shape == (2, 4, 15, 15)
    assert capture.activations["conv2"].shape == (2, 8, 7, 7)
    for name in layers:
        assert capture.gradcam[name].shape == (2, 32, 32)
        assert capture.gradcam[name].dtype == torch.float32
        assert float(capture.gradcam[name].min()) >= 0.0 and float(capture.gradcam[name].max()) <= 1.0
        assert float(capture.activations[name].min()) >= 0.0  # post-ReLU
    assert capture.gradient.shape == (2, 32, 32)
    assert float(capture.gradient.min()) >= 0.0 and float(capture.gradient.max()) == pytest.approx(1.0)
    assert capture.logits.shape == (2, 3)
    assert capture.targets.dtype == torch.long
    assert capture.targets[0] == 2
    assert capture.targets[1] == capture.logits[1].argmax()
    for tensor in [capture.gradient, capture.logits, *capture.activations.values()]:
        assert tensor.device.type == "cpu" and not tensor.requires_grad


def test_capture_runs_in_eval_restores_modes_and_leaves_grads() -> None:
    model, layers = tiny_model()
    model.train()
    model[4].eval()  # a mixed state must come back exactly
    running_mean = model[1].running_mean.clone()
    for parameter in model.parameters():
        parameter.grad = torch.full_like(parameter, 7.0)
    model[8].bias.grad = None
    capture_probes(model, layers, torch.randn(3, 3, 32, 32))
    assert torch.equal(model[1].running_mean, running_mean)  # BN ran in eval mode
    assert model.training and model[1].training and not model[4].training
    assert model[8].bias.grad is None
    for name, parameter in model.named_parameters():
        if parameter.grad is not None:
            assert torch.equal(parameter.grad, torch.full_like(parameter, 7.0)), name
    assert all(not module._forward_hooks for module in model.modules())


def test_capture_restores_on_exception_and_removes_hooks() -> None:
    model, layers = tiny_model()

    class Boom(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    broken = nn.Sequential(*list(model.children())[:6], Boom())
    broken.train()
    with pytest.raises(RuntimeError, match="boom"):
        capture_probes(broken, layers, torch.randn(1, 3, 32, 32))
    assert broken.training and all(module.training for module in broken.modules())
    assert all(not module._forward_hooks for module in broken.modules())


def test_capture_works_under_inference_mode() -> None:
    model, layers = tiny_model()
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        capture = capture_probes(model, layers, x)
    assert float(capture.gradient.max()) > 0.0


def test_gradcam_and_gradient_find_the_planted_square() -> None:
    model, layers = planted_model()
    x = bright_square_inputs()
    capture = capture_probes(model, layers, x, targets=torch.tensor([1, 1]))
    cam = capture.gradcam["conv1"]
    for probe in range(2):
        row, col = divmod(int(cam[probe].argmax()), cam.shape[-1])
        assert row < 8 and col < 8, (row, col)
        assert float(cam[probe].max()) == pytest.approx(1.0)
        assert float(cam[probe, 16:, 16:].max()) < 0.05
    gradient = capture.gradient
    assert float(gradient[:, 1:7, 1:7].min()) > 0.0  # the square drives the score
    assert float(gradient[:, 16:, 16:].max()) == 0.0  # the far corner does not
    # Explaining class 0 (score = -feature): no positive evidence anywhere → all-zero CAM stays zero.
    negative = capture_probes(model, layers, x, targets=torch.tensor([0, 0]))
    assert float(negative.gradcam["conv1"].abs().max()) == 0.0


def test_capture_pooled_matches_probe_activations() -> None:
    model, layers = tiny_model()
    model.train()
    x = torch.randn(5, 3, 32, 32)
    pooled = capture_pooled(model, layers, [x[:3], x[3:]])
    assert pooled["conv1"].shape == (5, 4) and pooled["conv2"].shape == (5, 8)
    reference = capture_probes(model, layers, x).activations
    for name in layers:
        torch.testing.assert_close(pooled[name], reference[name].mean(dim=(2, 3)))
    assert model.training
    with pytest.raises(ValueError, match="no batches"):
        capture_pooled(model, layers, [])


# ---------------------------------------------------------------- statistics


def test_zero_fraction_and_mean_on_known_tensor() -> None:
    activation = torch.tensor([0.0, 0.0, 1.0, 2.0, 0.0, 3.0, 0.0, 2.0]).reshape(1, 2, 2, 2)
    stats = activation_statistics({"conv1": activation})
    assert stats["act_zero_fraction/conv1"] == pytest.approx(0.5)
    assert stats["act_mean/conv1"] == pytest.approx(1.0)


def test_noise_smooth_vs_checkerboard_and_unavailable_cases() -> None:
    size = 32
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    ramp = xs.float().expand(2, 3, size, size)
    bump = torch.exp(-((xs - 16.0) ** 2 + (ys - 16.0) ** 2) / 40.0).expand(1, 1, size, size)
    checker = ((xs + ys) % 2).float().expand(2, 3, size, size)
    stats = activation_statistics(
        {
            "ramp": ramp,
            "bump": bump,
            "checker": checker,
            "noise": torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0)),
            "tiny": torch.rand(2, 3, 1, 1),
            "flat": torch.full((2, 3, 9, 9), 2.5),
            "three": torch.rand(2, 3, 3, 3) + 0.1,
        }
    )
    assert stats["act_noise/ramp"] < 0.01  # neighbour differences: no wrap-around edge
    assert stats["act_noise/bump"] < 0.05
    assert stats["act_noise/checker"] > 1.9  # rougher than its own pixels shuffled
    assert 0.9 < stats["act_noise/noise"] < 1.1
    assert "act_noise/three" not in stats and "act_mean/three" in stats  # below MIN_NOISE_SIDE
    assert "act_noise/tiny" not in stats and "act_mean/tiny" in stats
    assert "act_noise/flat" not in stats


# ---------------------------------------------------------------- rendering


def _aspect(image: np.ndarray) -> float:
    return max(image.shape[:2]) / min(image.shape[:2])


@pytest.mark.parametrize("shape", [(8, 256, 1, 1), (8, 16, 31, 31), (1, 1, 64, 64), (20, 512, 3, 3), (32, 1, 7, 7)])
def test_feature_map_grid_named_cases(shape: tuple[int, int, int, int]) -> None:
    image = feature_map_grid(torch.rand(shape))
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert _aspect(image) <= 2.0, image.shape
    assert max(image.shape[:2]) <= 1550, image.shape


def test_feature_map_grid_aspect_sweep() -> None:
    # Corners and awkward counts of P in 1..32, C in 1..512 (an offline sweep of every
    # pair for h in 1, 3, 7, 15, 31 gave a worst aspect of 1.97, at P=1, C=2).
    for h in (1, 3):
        for probes in (1, 2, 3, 8, 32):
            for channels in (1, 2, 3, 17, 512):
                image = feature_map_grid(torch.rand(probes, channels, h, h))
                assert _aspect(image) <= 2.0, (probes, channels, h, image.shape)


def test_feature_map_grid_upscales_1x1_tiles() -> None:
    activation = torch.zeros(2, 3, 1, 1)
    activation[1, 0] = 1.0  # only probe 1, channel 0 is "on"
    image = feature_map_grid(activation, min_tile=16)
    top = _lut("viridis")[255].numpy()
    rows, cols = np.nonzero(np.all(image == top, axis=-1))
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert height >= 16 and width >= 16
    assert height * width == rows.size  # one solid tile


def test_feature_map_grid_normalises_each_map_on_its_own() -> None:
    torch.manual_seed(0)
    activation = torch.rand(2, 4, 8, 8)
    scaled = activation.clone()
    scaled[:, 1] *= 1000.0
    scaled[0, 2] += 5.0
    reference = feature_map_grid(activation)
    assert np.array_equal(reference, feature_map_grid(scaled))
    assert len(np.unique(reference.reshape(-1, 3), axis=0)) > 20


def test_filter_grid_shape_and_grayscale() -> None:
    rgb = filter_grid(torch.randn(16, 3, 3, 3), tile=24)
    assert rgb.shape == (4 * (24 + 2) + 2, 4 * (24 + 2) + 2, 3) and rgb.dtype == np.uint8
    gray = filter_grid(torch.randn(5, 4, 5, 5), tile=24)  # 5 px × 5 = 25 px tiles, 3 per row
    assert gray.shape == (2 * (25 + 2) + 2, 3 * (25 + 2) + 2, 3)
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])


def test_saliency_grid_layout_and_labels() -> None:
    probes, size = 3, 32
    images = torch.randint(0, 256, (probes, 3, size, size), dtype=torch.uint8)
    gradient = torch.rand(probes, size, size)
    cams = {"conv1": torch.rand(probes, size, size), "conv2": torch.zeros(probes, size, size)}
    plain = saliency_grid(images, gradient, cams)
    tile = 64  # 32 px upscaled ×2 to reach 64
    assert plain.shape == (
        SALIENCY_HEADER_PX + probes * (tile + SALIENCY_PAD) + SALIENCY_PAD,
        (2 + len(cams)) * (tile + SALIENCY_PAD) + SALIENCY_PAD,
        3,
    )
    assert plain.dtype == np.uint8
    assert (plain[:SALIENCY_HEADER_PX] < 100).any()  # column labels drawn
    # First column is the untouched input, upscaled nearest-neighbour.
    first = plain[SALIENCY_HEADER_PX + SALIENCY_PAD :, SALIENCY_PAD:][:tile, :tile]
    assert np.array_equal(first[::2, ::2], images[0].permute(1, 2, 0).numpy())
    labelled = saliency_grid(images, gradient, cams, class_names=["cat", "dog"], targets=torch.tensor([0, 1, 1]))
    assert labelled.shape == plain.shape and not np.array_equal(labelled, plain)
    with pytest.raises(ValueError, match="conv2"):
        saliency_grid(images, gradient, {"conv2": torch.rand(probes, 8, 8)})


def test_confusion_matrix_figure_counts() -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    figure = confusion_matrix_figure([0, 0, 1, 1, 1, 2], [0, 1, 1, 1, 0, 2], ["cat", "dog", "fox"])
    assert isinstance(figure, matplotlib.figure.Figure)
    assert plt.get_fignums() == before  # no pyplot state
    texts = [text.get_text() for text in figure.axes[0].texts]
    assert len(texts) == 9
    counts = np.array([int(text.split("\n")[0]) for text in texts]).reshape(3, 3)
    assert counts.tolist() == [[1, 1, 0], [1, 2, 0], [0, 0, 1]]
    assert texts[4].split("\n")[1] == "67%"


# ---------------------------------------------------------------- artifacts


def test_probe_activations_round_trip(tmp_path) -> None:
    activations = {"conv1": torch.rand(2, 4, 15, 15), "conv2": torch.rand(2, 8, 7, 7)}
    tensor_path, json_path = save_probe_activations(
        tmp_path / "acts", 3, activations, probe_ids=["cat_0", "dog_0"], labels=[0, 1], class_names=["cat", "dog"]
    )
    assert tensor_path.name == "epoch_0003.safetensors" and json_path.name == "epoch_0003.json"
    tensors, meta = load_activations(tensor_path)
    assert list(tensors) == ["conv1", "conv2"]
    for name, original in activations.items():
        assert tensors[name].dtype == torch.float16
        torch.testing.assert_close(tensors[name].float(), original, atol=1e-3, rtol=1e-3)
    assert meta == json.loads(json_path.read_text())
    assert meta["format"] == FORMAT and meta["kind"] == "probes" and meta["step"] == 3
    assert meta["layers"] == ["conv1", "conv2"]
    assert meta["shapes"] == {"conv1": [2, 4, 15, 15], "conv2": [2, 8, 7, 7]}
    assert meta["dtype"] == "float16"
    assert meta["probe_ids"] == ["cat_0", "dog_0"] and meta["labels"] == [0, 1]
    assert meta["class_names"] == ["cat", "dog"]
    with pytest.raises(ValueError, match="probe_ids"):
        save_probe_activations(tmp_path, 0, activations, probe_ids=["a"], labels=[0], class_names=["cat", "dog"])


def test_analysis_activations_round_trip(tmp_path) -> None:
    pooled = {"conv1": torch.rand(6, 4), "conv2": torch.rand(6, 8)}
    tensor_path, json_path = save_analysis_activations(
        tmp_path, pooled, labels=torch.tensor([0, 1, 0, 1, 1, 0]), class_names=["cat", "dog"]
    )
    assert (tensor_path.name, json_path.name) == ("analysis.safetensors", "analysis.json")
    tensors, meta = load_activations(json_path)  # either file of the pair works
    assert list(tensors) == ["conv1", "conv2", "labels"]
    assert torch.equal(tensors["conv1"], pooled["conv1"].half().float())  # stored in half precision
    assert tensors["conv2"].dtype == torch.float32 and meta["dtype"] == "float16"
    assert load_file(str(tensor_path))["conv1"].dtype == torch.float16
    assert tensors["labels"].dtype == torch.int64 and tensors["labels"].tolist() == [0, 1, 0, 1, 1, 0]
    assert meta["format"] == FORMAT and meta["kind"] == "analysis" and meta["n"] == 6
    assert meta["layers"] == ["conv1", "conv2"] and meta["shapes"] == {"conv1": [6, 4], "conv2": [6, 8]}
    assert meta["class_names"] == ["cat", "dog"]


def test_load_activations_errors_name_the_file(tmp_path) -> None:
    tensor_path, json_path = save_probe_activations(
        tmp_path, 1, {"conv1": torch.rand(1, 2, 3, 3)}, probe_ids=["p"], labels=[0], class_names=["cat", "dog"]
    )
    json_path.write_text(json.dumps({"format": "something/9"}))
    with pytest.raises(ValueError, match=r"epoch_0001\.json.*something/9"):
        load_activations(tensor_path)
    json_path.unlink()
    with pytest.raises(ValueError, match=r"epoch_0001\.json is missing"):
        load_activations(tensor_path)


def test_seed_like_net_end_to_end_shapes() -> None:
    """Five stride-2 blocks on 64×64 (spatial 31, 15, 7, 3, 1) through every renderer."""
    torch.manual_seed(0)
    widths = [3, 16, 32, 64, 128, 256]
    blocks: list[nn.Module] = []
    for cin, cout in zip(widths, widths[1:]):
        blocks += [nn.Conv2d(cin, cout, 3, 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.Dropout2d(0.1)]
    model = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(256, 64), nn.Linear(64, 2))
    layers = {f"conv{i + 1}": model[4 * i + 2] for i in range(5)}
    capture = capture_probes(model, layers, torch.randn(8, 3, 64, 64))
    assert [a.shape[-1] for a in capture.activations.values()] == [31, 15, 7, 3, 1]
    stats = activation_statistics(capture.activations)
    assert all(math.isfinite(stats[f"act_noise/conv{k}"]) for k in (1, 2, 3))  # 31, 15 and 7 px
    assert "act_noise/conv4" not in stats and "act_noise/conv5" not in stats  # 3 and 1 px
    for activation in capture.activations.values():
        assert _aspect(feature_map_grid(activation)) <= 2.0
    images = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8)
    grid = saliency_grid(images, capture.gradient, capture.gradcam, class_names=["cat", "dog"], targets=capture.targets)
    assert grid.shape[1] == 7 * (64 + SALIENCY_PAD) + SALIENCY_PAD


def test_feature_map_grid_single_probe_1x1_compares_channels() -> None:
    activation = torch.zeros(1, 4, 1, 1)
    activation[0, 2] = 3.0
    grid = feature_map_grid(activation, min_tile=16)
    colours = {tuple(grid[y, x]) for y in range(grid.shape[0]) for x in range(grid.shape[1])}
    assert len(colours) >= 2  # the strong channel stands out instead of every tile being the low end


@pytest.mark.parametrize("c, h", [(16, 31), (64, 7), (128, 3), (256, 1)])
def test_wide_layouts_for_chart_cards(c: int, h: int) -> None:
    """``width_ratio`` lays grids out wide (MLflow keeps only wide thumbnails whole in a card)."""
    grid = feature_map_grid(torch.rand(1, c, h, h), min_tile=16, width_ratio=2.5)
    assert 1.7 <= grid.shape[1] / grid.shape[0] <= 3.6, grid.shape
    square = feature_map_grid(torch.rand(1, c, h, h), min_tile=16)
    assert square.shape[1] / square.shape[0] < grid.shape[1] / grid.shape[0]
    filters = filter_grid(torch.rand(16, 3, 3, 3), width_ratio=2.5)
    assert filters.shape[1] / filters.shape[0] >= 2.0
