"""Four training ingredients as run settings: the head (``--head flatten|gap``), a ReLU inside it
(``--head-activation``), label smoothing of the training loss and flip test-time augmentation.
Their defaults are the network and the training as they were."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import convscope.cli.main

from convscope import cli
from convscope.cli.env_flags import with_env_flags
from convscope.cli.main import build_parser
from convscope.cli.setting_flags import resolve_config
from e2e_helpers import convscope, only_run
from convscope.train.config import build_config, from_dict, to_dict
from convscope.train.errors import ConfigError
from convscope.train.loop import evaluate, train_one_epoch
from convscope.train.step import Stepper, flip_tta_probabilities, training_loss
from convscope.train.model import build_model, count_parameters, layer_table, validate

pytestmark = pytest.mark.usefixtures("clean_env")  # the fixture is in conftest.py

NEW_MODEL_KEYS = ("head", "head_activation")
NEW_OPTIM_KEYS = ("label_smoothing", "tta")


def small(**model):  # type: ignore[no-untyped-def]
    """2 blocks of 4 and 8 channels at 3x16x16 (maps 7x7, then 3x3), a hidden head layer of 5, 2 classes."""
    return build_config("seed", {"model": {"widths": (4, 8), "image_size": 16, "head_hidden": 5, **model}}).model


def head_types(config) -> list[type]:  # type: ignore[no-untyped-def]
    return [type(layer) for layer in build_model(config).head]


# ---------------------------------------------------------------- the head

SMALL_FEATURES = (3 * 4 * 9 + 2 * 4) + (4 * 8 * 9 + 2 * 8)  # conv weights (no bias) + BatchNorm weight and bias


def test_flatten_head_parameters_are_unchanged() -> None:
    assert count_parameters(build_model(small())) == SMALL_FEATURES + (8 * 3 * 3 * 5 + 5) + (5 * 2 + 2)
    seed = build_model(build_config("seed").model)
    assert count_parameters(seed) == 409_682
    assert [type(layer) for layer in seed.head] == [nn.Flatten, nn.Linear, nn.Linear]
    # the state-dict keys of checkpoints saved before these settings existed
    assert {k for k in seed.state_dict() if k.startswith("head.")} == {"head.1.weight", "head.1.bias",
                                                                        "head.2.weight", "head.2.bias"}


def test_gap_head_parameters_by_hand() -> None:
    gap = build_model(small(head="gap"))
    assert count_parameters(gap) == SMALL_FEATURES + (8 * 5 + 5) + (5 * 2 + 2)
    assert [type(layer) for layer in gap.head] == [nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear, nn.Linear]
    assert gap.head[2].in_features == 8  # one value per channel of the last block, whatever the map size
    no_hidden = build_model(small(head="gap", head_hidden=0))
    assert count_parameters(no_hidden) == SMALL_FEATURES + (8 * 2 + 2)
    # the seed's last map is 1x1: pooling it changes nothing in size, so the count is the reference's
    assert count_parameters(build_model(build_config("seed", {"model": {"head": "gap"}}).model)) == 409_682


def test_head_activation_inserts_a_relu_and_no_parameters() -> None:
    plain, relu = build_model(small()), build_model(small(head_activation=True))
    assert head_types(small()) == [nn.Flatten, nn.Linear, nn.Linear]
    assert head_types(small(head_activation=True)) == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear]
    assert head_types(small(head="gap", head_activation=True)) == [nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear,
                                                                   nn.ReLU, nn.Linear]
    assert count_parameters(relu) == count_parameters(plain)
    # nothing to put it between
    assert head_types(small(head_activation=True, head_hidden=0)) == [nn.Flatten, nn.Linear]
    assert count_parameters(build_model(build_config("seed", {"model": {"head_activation": True}}).model)) == 409_682


def test_head_activation_changes_the_output() -> None:
    torch.manual_seed(0)
    plain = build_model(small()).eval()
    relu = build_model(small(head_activation=True)).eval()
    relu.load_state_dict({k.replace("head.2.", "head.3."): v for k, v in plain.state_dict().items()})
    x = torch.randn(8, 3, 16, 16)
    hidden = plain.head[1](plain.head[0](plain.features(x)))
    assert (hidden < 0).any()  # some hidden units are negative, so the ReLU must matter
    assert torch.allclose(relu(x), plain.head[2](hidden.clamp_min(0)))
    assert not torch.allclose(relu(x), plain(x))


def test_gap_head_takes_any_input_size_with_the_same_weights() -> None:
    model = build_model(small(head="gap")).eval()
    for side in (16, 40):
        assert model(torch.randn(2, 3, side, side)).shape == (2, 2)
    flat = build_model(small()).eval()
    with pytest.raises(RuntimeError):
        flat(torch.randn(2, 3, 40, 40))  # the flatten head is sized by --image-size


def table_rows(table: str) -> set[tuple[str, ...]]:
    """``layer_table``'s head rows as (label, output, params)."""
    return {(" ".join(line.split()[:2]), *line.split()[2:]) for line in table.splitlines() if line.startswith("head.")}


def test_layer_table_rows_for_both_heads() -> None:
    gap = build_model(small(head="gap", head_activation=True))
    table = layer_table(gap)
    assert table_rows(table) == {("head.0 AdaptiveAvgPool2d", "8x1x1", "0"), ("head.1 Flatten", "8", "0"),
                                 ("head.2 Linear", "5", "45"), ("head.3 ReLU", "5", "0"), ("head.4 Linear", "2", "12")}
    assert table.splitlines()[-1].split() == ["total", f"{count_parameters(gap):,}"]
    flat = layer_table(build_model(small()))
    assert table_rows(flat) == {("head.0 Flatten", "72", "0"), ("head.1 Linear", "5", "365"),
                                ("head.2 Linear", "2", "12")}
    assert flat.splitlines()[-1].split() == ["total", f"{SMALL_FEATURES + 8 * 9 * 5 + 5 + 12:,}"]


def test_validate_refuses_an_unknown_head() -> None:
    from dataclasses import replace

    with pytest.raises(ConfigError, match="--head must be one of flatten, gap"):
        validate(replace(small(), head="avg"))


# ---------------------------------------------------------------- label smoothing

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
LABELS = torch.tensor([0, 2])


def smoothed_by_hand(logits: list[list[float]], labels: list[int], eps: float) -> float:
    """Mean over rows of -Σ_k q_k log softmax_k with q = (1-eps)·onehot + eps/K."""
    total = 0.0
    for row, label in zip(logits, labels):
        log_z = math.log(sum(math.exp(v) for v in row))
        k = len(row)
        total += -sum(((1 - eps) * (i == label) + eps / k) * (v - log_z) for i, v in enumerate(row))
    return total / len(labels)


def test_smoothed_training_loss_matches_the_hand_computed_value() -> None:
    smoothed = training_loss(0.1)(LOGITS, LABELS).item()
    plain = training_loss(0.0)(LOGITS, LABELS).item()
    assert smoothed == pytest.approx(smoothed_by_hand(LOGITS.tolist(), LABELS.tolist(), 0.1), rel=1e-6)
    assert plain == pytest.approx(smoothed_by_hand(LOGITS.tolist(), LABELS.tolist(), 0.0), rel=1e-6)
    assert smoothed != pytest.approx(plain, rel=1e-3)
    assert training_loss().label_smoothing == 0.0  # the default is plain cross-entropy


def test_smoothing_reaches_the_training_step_but_not_evaluation() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    inputs, labels = torch.randn(6, 3, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        logits = model(inputs)
    expected = smoothed_by_hand(logits.tolist(), labels.tolist(), 0.2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)
    stepper = Stepper(model, optimizer, scheduler, torch.device("cpu"), label_smoothing=0.2)
    fit = train_one_epoch(stepper, [(inputs, labels)], progress=False)
    assert fit.loss == pytest.approx(expected, rel=1e-5)
    val, _ = evaluate(model, [(inputs, labels)], torch.device("cpu"))
    assert val.loss == pytest.approx(nn.functional.cross_entropy(logits, labels).item(), rel=1e-5)
    assert val.loss != pytest.approx(expected, rel=1e-3)


# ---------------------------------------------------------------- test-time augmentation

def test_tta_is_the_mean_of_the_two_views_softmax() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 5, 3)).eval()  # position-dependent: not flip-invariant
    x = torch.randn(7, 3, 4, 5)
    with torch.no_grad():
        manual = (model(x).softmax(1) + model(torch.flip(x, dims=[3])).softmax(1)) / 2
        tta = flip_tta_probabilities(model, x)
        assert torch.allclose(tta, manual, atol=1e-6)
        assert torch.allclose(flip_tta_probabilities(model, x, model(x)), manual, atol=1e-6)
        assert not torch.allclose(tta, model(x).softmax(1), atol=1e-3)
    labels = manual.argmax(1).clone()
    labels[:3] = (labels[:3] + 1) % 3  # some right, some wrong
    stats, _ = evaluate(model, [(x[:4], labels[:4]), (x[4:], labels[4:])], torch.device("cpu"), tta=True)
    assert stats.tta_accuracy == pytest.approx(4 / 7)
    assert stats.tta_loss == pytest.approx(-manual[torch.arange(7), labels].log().mean().item(), rel=1e-5)
    with torch.no_grad():
        plain = nn.functional.cross_entropy(model(x), labels).item()
    assert stats.loss == pytest.approx(plain, rel=1e-5)  # the plain numbers are still the plain ones
    off, _ = evaluate(model, [(x, labels)], torch.device("cpu"))
    assert off.tta_accuracy is None and off.tta_loss is None and off.loss == pytest.approx(plain, rel=1e-5)


def test_tta_of_a_flip_invariant_model_is_the_plain_prediction() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    x, labels = torch.randn(9, 3, 6, 6), torch.randint(0, 3, (9,))
    with torch.no_grad():
        assert torch.allclose(flip_tta_probabilities(model, x), model(x).softmax(1), atol=1e-6)
    stats, _ = evaluate(model, [(x, labels)], torch.device("cpu"), tta=True)
    assert stats.tta_accuracy == stats.accuracy
    assert stats.tta_loss == pytest.approx(stats.loss, rel=1e-5)


def test_tensorboard_describes_the_tta_metrics(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing import plugin_event_accumulator

    from convscope.tracking.descriptions import SCALAR_DESCRIPTIONS
    from convscope.tracking.tensorboard_sink import TensorBoardTracker

    tracker = TensorBoardTracker(tmp_path / "tb")
    tracker.log_metrics({"val/accuracy": 0.5, "val/accuracy_tta": 0.6, "val/loss_tta": 0.7}, step=1)
    tracker.close()
    events = plugin_event_accumulator.EventAccumulator(str(tmp_path / "tb")).Reload()
    for tag in ("val/accuracy_tta", "val/loss_tta"):
        description = events.SummaryMetadata(tag).summary_description
        assert description == SCALAR_DESCRIPTIONS[tag] and "mirror" in description
    assert events.SummaryMetadata("val/accuracy").summary_description == ""


# ---------------------------------------------------------------- settings

def parse(*argv: str):  # type: ignore[no-untyped-def]
    return build_parser().parse_args(["train", *argv])


def test_defaults_are_todays_behaviour_and_old_configs_load() -> None:
    config = build_config("seed")
    assert (config.model.head, config.model.head_activation) == ("flatten", False)
    assert (config.optim.label_smoothing, config.optim.tta) == (0.0, False)
    saved = to_dict(config)
    for key in NEW_MODEL_KEYS:
        del saved["model"][key]
    for key in NEW_OPTIM_KEYS:
        del saved["optim"][key]
    assert from_dict(saved) == config  # a checkpoint written before these settings existed


def test_flags_config_file_and_environment(tmp_path: Path) -> None:
    config = resolve_config(parse("--head", "gap", "--head-activation", "--label-smoothing", "0.1", "--tta"))
    assert (config.model.head, config.model.head_activation) == ("gap", True)
    assert (config.optim.label_smoothing, config.optim.tta) == (0.1, True)
    file = tmp_path / "run.yaml"
    file.write_text("model: {head: gap}\noptim: {label_smoothing: 0.05}\ntta: true\n")
    from_file = resolve_config(parse("--config", str(file)))
    assert (from_file.model.head, from_file.optim.label_smoothing, from_file.optim.tta) == ("gap", 0.05, True)
    parser = build_parser()
    env = {"CONVSCOPE_HEAD": "gap", "CONVSCOPE_LABEL_SMOOTHING": "0.2", "CONVSCOPE_HEAD_ACTIVATION": "true"}
    from_env = resolve_config(parser.parse_args(with_env_flags(parser, ["train"], env)))
    assert (from_env.model.head, from_env.model.head_activation, from_env.optim.label_smoothing) == ("gap", True, 0.2)
    help_text = parser._subparsers._group_actions[0].choices["train"].format_help()  # type: ignore[union-attr]
    for flag in ("--head ", "--head-activation", "--label-smoothing", "--tta"):
        assert flag in help_text


@pytest.mark.parametrize(("argv", "needles"), [
    (["--label-smoothing", "1.0"], ("--label-smoothing", "[0, 1)", "got 1.0")),
    (["--label-smoothing", "-0.1"], ("--label-smoothing", "[0, 1)")),
    (["--label-smoothing", "nan"], ("--label-smoothing", "finite")),
    (["--head", "avg"], ("--head", "flatten, gap", "'avg'")),
    (["--fix", "head=avg"], ("--fix head=avg", "flatten, gap")),
])
def test_bad_values_are_one_line_naming_the_flag(argv: list[str], needles: tuple[str, ...],
                                                 capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    assert cli.main.main(["train", "--preset", "tiny", "--image-size", "32", "--quiet", *argv,
                          "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    assert not (runs / "mlflow.db").exists()


def test_a_config_file_value_out_of_range_names_its_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="label_smoothing.*in \\[0, 1\\)"):
        build_config("seed", {"optim": {"label_smoothing": 1.5}})
    with pytest.raises(ConfigError, match="head.*one of flatten, gap"):
        build_config("seed", {"model": {"head": "mean"}})


# ---------------------------------------------------------------- end to end

def test_train_with_every_ingredient_logs_the_tta_metrics(tmp_path: Path) -> None:
    """The seed preset needs 63 pixels for its 5 blocks: the tiny one (3 blocks) trains at 32."""
    runs = tmp_path / "runs"
    done = convscope("train", "--preset", "tiny", "--synthetic-size", "256", "--batch-size", "64",
                     "--analysis-size", "32", "--image-size", "32", "--epochs", "1", "--head", "gap",
                     "--head-activation", "--label-smoothing", "0.1", "--tta", "--no-tensorboard", "--quiet",
                     "--runs-dir", str(runs))
    assert done.returncode == 0, done.stderr
    assert "flip-TTA accuracy" in done.stdout
    run = only_run(f"sqlite:///{runs / 'mlflow.db'}")
    assert run.metric_steps("val/accuracy_tta") == [1]
    assert run.metric_steps("val/loss_tta") == [1]
    assert run.metric_steps("val/accuracy") == [1]
    metrics = run.info.data.metrics
    assert 0.0 <= metrics["val/accuracy_tta"] <= 1.0 and metrics["val/loss_tta"] > 0
    params = run.info.data.params
    assert (params["head"], params["head_activation"], params["label_smoothing"], params["tta"]) == \
        ("gap", "True", "0.1", "True")
