"""The ``act_noise`` measure: its null, its size limit, what it leaves out, and where it is described."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from convscope.analysis.compare import RunActivations, compare_runs
from convscope.analysis.compare_report import comparison_figures, probe_map_sizes, write_report
from convscope.analysis.fetch import STAT_PREFIXES
from convscope.pictures.stats import MIN_NOISE_SIDE, activation_statistics, noise_not_available
from convscope.tracking.descriptions import METRIC_DESCRIPTIONS

SIZES = (7, 9, 15, 31)


def noise(stack: torch.Tensor) -> float | None:
    """``act_noise`` of one layer holding ``stack`` (…, h, w), or None when the key is absent."""
    return activation_statistics({"layer": stack}).get("act_noise/layer")


def gaussian_bump(size: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    centre, sigma = (size - 1) / 2, size / 4
    return torch.exp(-((xs - centre) ** 2 + (ys - centre) ** 2) / (2 * sigma**2))


def smooth_field(size: int, gen: torch.Generator, maps: int = 16) -> torch.Tensor:
    """Post-ReLU white noise blurred by a Gaussian of σ = max(1.5, size/8) px: a smooth random texture."""
    sigma = max(1.5, size / 8)
    radius = int(3 * sigma) + 1
    taps = torch.exp(-torch.arange(-radius, radius + 1).float() ** 2 / (2 * sigma**2))
    taps = taps / taps.sum()
    white = torch.randn(maps, 1, size + 2 * radius, size + 2 * radius, generator=gen)
    blurred = F.conv2d(F.conv2d(white, taps.view(1, 1, 1, -1)), taps.view(1, 1, -1, 1))
    return torch.relu(blurred).reshape(4, maps // 4, size, size)


@pytest.mark.parametrize("size", SIZES)
def test_noise_is_about_one_and_smooth_maps_are_low(size: int) -> None:
    gen = torch.Generator().manual_seed(size)
    uniform = noise(torch.rand(4, 8, size, size, generator=gen))
    relu_noise = noise(torch.relu(torch.randn(4, 8, size, size, generator=gen)))  # half the pixels off
    bump = noise(gaussian_bump(size).expand(2, 3, size, size))
    field = noise(smooth_field(size, gen))
    assert uniform is not None and relu_noise is not None and bump is not None and field is not None
    assert 0.8 < uniform < 1.2 and 0.8 < relu_noise < 1.2
    assert bump < 0.3 and field < 0.3
    assert min(uniform, relu_noise) > max(bump, field)


def test_the_null_is_the_exact_mean_over_pixel_shuffles() -> None:
    """Averaged over many random shuffles of one map, the measure is 1 (the closed form is exact)."""
    gen = torch.Generator().manual_seed(0)
    size = 7
    image = gaussian_bump(size).flatten()
    image[3] = 0.0  # any values will do; a bump is far from shuffled
    order = torch.argsort(torch.rand(20000, size * size, generator=gen), dim=1)
    shuffled = image[order].reshape(-1, 1, size, size)  # equal weights: every copy has the same energy
    assert noise(shuffled) == pytest.approx(1.0, abs=0.004)  # n/(n-1) = 49/48 would be off by 0.02
    assert noise(image.reshape(1, 1, size, size)) < 0.3


def test_checkerboard_is_rougher_than_shuffled_and_a_ramp_has_no_edge_leak() -> None:
    ys, xs = torch.meshgrid(torch.arange(15), torch.arange(15), indexing="ij")
    checker, ramp = noise(((xs + ys) % 2).float()[None]), noise(xs.float()[None])
    assert checker is not None and ramp is not None
    assert checker > 1.9 and ramp < 0.02


@pytest.mark.parametrize("h, w", [(1, 1), (3, 3), (5, 5), (6, 9), (31, 5)])
def test_small_maps_get_no_value_and_say_so(h: int, w: int) -> None:
    stats = activation_statistics({"small": torch.rand(2, 3, h, w) + 0.1})
    assert "act_noise/small" not in stats and "act_mean/small" in stats
    assert noise_not_available(h, w) == f"n/a ({h}×{w})"


def test_minimum_side_is_seven() -> None:
    assert MIN_NOISE_SIDE == 7
    assert noise_not_available(3, 3) == "n/a (3×3)"
    assert noise_not_available(7, 7) is None and noise_not_available(7, 12) is None
    assert noise(torch.rand(2, 3, 7, 7) + 0.1) is not None


def test_lone_spots_and_flat_maps_are_left_out() -> None:
    size = 9
    spots = torch.zeros(2, 4, size, size)
    spots[:, :, 4, 4] = 5.0  # one active position per map: a detection, not texture
    smooth = gaussian_bump(size).expand(2, 4, size, size)
    assert noise(spots) is None
    assert noise(torch.zeros(2, 4, size, size)) is None
    assert noise(torch.full((2, 4, size, size), 3.0)) is None
    assert noise(torch.cat([smooth, spots], dim=1)) == pytest.approx(noise(smooth), rel=1e-6)
    two = spots.clone()
    two[:, :, 0, 0] = 5.0  # two active positions: counted
    assert noise(two) is not None and noise(torch.cat([smooth, two], dim=1)) > noise(smooth) + 0.1


def test_strong_maps_weigh_more_and_the_result_is_deterministic() -> None:
    size = 15
    gen = torch.Generator().manual_seed(1)
    rough = torch.rand(1, 1, size, size, generator=gen)
    smooth = gaussian_bump(size)[None, None]
    strong_rough = noise(torch.cat([10 * rough, 0.1 * smooth], dim=1))
    strong_smooth = noise(torch.cat([0.1 * rough, 10 * smooth], dim=1))
    assert strong_rough is not None and strong_smooth is not None
    assert strong_rough > 0.8 and strong_smooth < 0.3
    stack = torch.rand(8, 16, size, size, generator=gen)
    assert noise(stack) == noise(stack.clone())
    assert noise(stack.flip(0, 1)) == pytest.approx(noise(stack), rel=1e-9)  # map order does not matter


def test_every_logged_statistic_has_a_description() -> None:
    assert {prefix.rstrip("/") for prefix in STAT_PREFIXES} == set(METRIC_DESCRIPTIONS)
    assert "7×7" in METRIC_DESCRIPTIONS["act_noise"] and "shuffled" in METRIC_DESCRIPTIONS["act_noise"]


def test_tensorboard_tags_carry_the_description_once(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing import event_accumulator, plugin_event_accumulator
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    from convscope.tracking.tensorboard_sink import TensorBoardTracker

    tracker = TensorBoardTracker(tmp_path / "tb")
    tracker.log_metrics({"act_noise/conv1": 0.9, "act_mean/conv1": 0.5, "train/loss": 1.0}, step=0)
    tracker.log_metrics({"act_noise/conv1": 0.7, "act_mean/conv1": 0.4, "train/loss": 0.8}, step=1)
    tracker.close()

    migrated = plugin_event_accumulator.EventAccumulator(str(tmp_path / "tb")).Reload()
    assert migrated.SummaryMetadata("act_noise/conv1").summary_description == METRIC_DESCRIPTIONS["act_noise"]
    assert migrated.SummaryMetadata("act_mean/conv1").summary_description == METRIC_DESCRIPTIONS["act_mean"]
    assert migrated.SummaryMetadata("act_noise/conv1").plugin_data.plugin_name == "scalars"
    assert migrated.SummaryMetadata("train/loss").summary_description == ""
    legacy = event_accumulator.EventAccumulator(str(tmp_path / "tb")).Reload()
    for tag, values in {"act_noise/conv1": [0.9, 0.7], "train/loss": [1.0, 0.8]}.items():
        events = legacy.Scalars(tag)
        assert [e.step for e in events] == [0, 1]
        assert all(math.isclose(e.value, v, rel_tol=1e-6) for e, v in zip(events, values))
    (path,) = (tmp_path / "tb").glob("events.out.tfevents.*")
    described = [value.tag for event in LegacyEventFileLoader(str(path)).Load()
                 for value in event.summary.value if value.metadata.summary_description]
    assert sorted(described) == ["act_mean/conv1", "act_noise/conv1"]  # the first value of each only


def test_compare_report_says_why_noise_is_missing(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    probes = {"conv1": torch.rand(4, 2, 9, 9, generator=gen), "conv2": torch.rand(4, 2, 3, 3, generator=gen)}
    run = RunActivations("x", "run x", probes, stats={"act_noise": {"conv1": 0.95}, "act_mean": {"conv1": 0.5,
                                                                                                 "conv2": 0.5}})
    assert probe_map_sizes([run]) == {"x": {"conv1": (9, 9), "conv2": (3, 3)}}
    c = compare_runs([run])
    figures = comparison_figures(c)
    sized = write_report(c, tmp_path / "sized", figures, map_sizes=probe_map_sizes([run]))[0].read_text("utf-8")
    plain = write_report(c, tmp_path / "plain", figures)[0].read_text("utf-8")
    assert "n/a (3×3)" in sized and "0.95" in sized
    assert "n/a (3×3)" not in plain and "n/a" in plain
