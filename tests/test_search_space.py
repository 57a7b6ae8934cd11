"""The search space (search/space.py): sampling with a real Optuna study, parsing, fixes."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

import convscope.cli.main

from convscope import cli
from convscope.cli.search_cmd import study_space
from convscope.search.space import (
    Choice,
    FloatRange,
    IntRange,
    SearchSpace,
    config_from_params,
    describe,
    format_spec,
    make_sampler,
    parse_spec,
    resolve,
    space_from_settings,
    suggest,
)
from convscope.train.config import build_config
from convscope.train.config_sections import RunConfig
from convscope.train.errors import ConfigError
from convscope.train.model import max_depth, validate

optuna.logging.set_verbosity(optuna.logging.WARNING)

BASE = build_config("seed")  # 64x64 inputs: the largest depth that fits is 5


def run_study(space: SearchSpace, base: RunConfig = BASE, trials: int = 20, seed: int = 0) -> list:
    """``trials`` trials of an in-memory study; returns [(trial params, RunConfig)]."""
    study = optuna.create_study(sampler=make_sampler(seed), direction="maximize")
    results = []

    def objective(trial: optuna.Trial) -> float:
        config = suggest(trial, space, base)
        results.append((dict(trial.params), config))
        return config.model.dropout - abs(config.model.depth - 3)  # something smooth to chase

    study.optimize(objective, n_trials=trials)
    return results


def test_growth_mode_produces_valid_configs_within_range() -> None:
    fits = max_depth(BASE.model)
    assert fits == 5
    for params, config in run_study(SearchSpace()):
        validate(config.model)
        assert set(params) == {"depth", "base_width", "growth", "dropout", "lr", "weight_decay"}
        assert 1 <= config.model.depth <= fits and config.model.depth == params["depth"]
        assert config.model.widths == ()
        assert 8 <= config.model.base_width <= 64 and 1.0 <= config.model.growth <= 2.0
        assert 0.0 <= config.model.dropout <= 0.5
        assert 1e-3 <= config.optim.lr <= 3e-2 and 1e-5 <= config.optim.weight_decay <= 1e-2
        # optional settings are off: the base config's values
        assert (config.optim.batch_size, config.model.image_size) == (BASE.optim.batch_size, BASE.model.image_size)


def test_per_layer_mode_samples_one_width_per_block() -> None:
    space = space_from_settings({"widths": "per-layer", "depth": "2..4", "lr": "on", "batch_size": "on"})
    for params, config in run_study(space):
        validate(config.model)
        depth = config.model.depth
        assert 2 <= depth <= 4 and len(config.model.widths) == depth
        assert set(params) == ({"depth", "dropout", "lr", "weight_decay", "batch_size"}
                               | {f"width_{i}" for i in range(1, depth + 1)})
        assert config.model.widths == tuple(params[f"width_{i}"] for i in range(1, depth + 1))
        assert set(config.model.widths) <= {8, 16, 32, 64, 128, 256}
        assert 1e-4 <= config.optim.lr <= 3e-2 and config.optim.batch_size in (32, 64, 128, 256)


def search_args(*argv: str):  # type: ignore[no-untyped-def]
    """``convscope search *argv`` parsed as the command line parses it."""
    return cli.main.parse(cli.main.build_parser(), ["search", *argv])


def fixed(*argv: str) -> tuple[RunConfig, SearchSpace]:
    """(base, space) of ``convscope search --preset tiny *argv``."""
    return study_space(search_args("--preset", "tiny", *argv))


def test_fixed_values_are_honoured_not_suggested() -> None:
    base, space = fixed("--depth", "3", "--growth", "2", "--weight-decay", "off",
                        "--fix", "dropout=0.25", "--fix", "lr=1e-3", "--fix", "epochs=3")
    for params, config in run_study(space, base, trials=5):
        assert set(params) == {"base_width"}
        assert (config.model.depth, config.model.growth, config.model.dropout) == (3, 2.0, 0.25)
        assert (config.optim.lr, config.optim.epochs) == (1e-3, 3)


def test_fixed_widths_fix_the_depth() -> None:
    base, space = fixed("--fix", "widths=16,32,64")
    assert space.widths == (16, 32, 64) and space.depth == 3
    for params, config in run_study(space, base, trials=3):
        assert set(params) == {"dropout", "lr", "weight_decay"} and config.model.widths == (16, 32, 64)
    with pytest.raises(ConfigError, match=r"--fix widths=16,32,64 fixes the depth at 3: drop --depth 2..6"):
        fixed("--depth", "2..6", "--fix", "widths=16,32,64")
    assert fixed("--widths", "16,32")[1].widths == (16, 32)  # the flag and --fix are one setting


def test_same_seed_same_sequence() -> None:
    space = space_from_settings({"widths": "per-layer"})
    first = [params for params, _ in run_study(space, seed=7)]
    again = [params for params, _ in run_study(space, seed=7)]
    other = [params for params, _ in run_study(space, seed=8)]
    assert first == again and first != other


@pytest.mark.parametrize("settings", [{}, {"widths": "per-layer", "weight_decay": "on"}])
def test_config_from_params_round_trips(settings: dict) -> None:
    space = space_from_settings(settings)
    for params, config in run_study(space, trials=12):
        assert config_from_params(params, space, BASE) == config


def test_config_from_params_reports_a_changed_space() -> None:
    with pytest.raises(ConfigError, match="do not fit this search space"):
        config_from_params({"depth": 3}, SearchSpace(), BASE)


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("2..6", IntRange(2, 6)),
        ("2..", IntRange(2, None)),
        ("8..64:log", IntRange(8, 64, log=True)),
        ("16..128:step=16", IntRange(16, 128, step=16)),
        ("0.0..0.5", FloatRange(0.0, 0.5)),
        ("0..0.3", FloatRange(0.0, 0.3)),
        ("1e-4..1e-1:log", FloatRange(1e-4, 1e-1, log=True)),
        ("32,64,128", Choice((32, 64, 128))),
        ("1e-3,1e-2", Choice((1e-3, 1e-2))),
        ("32,", Choice((32,))),
        ([16, 32], Choice((16, 32))),
        ("4", 4),
        ("0.25", 0.25),
        (3, 3),
    ],
)
def test_parse_spec(text: object, spec: object) -> None:
    parsed = parse_spec(text)  # type: ignore[arg-type]
    assert parsed == spec and type(parsed) is type(spec)
    assert parse_spec(format_spec(parsed)) == parsed


@pytest.mark.parametrize("text", ["a..b", "2..6:cubic", "x", "1,two", "0.1..:log", "inf"])
def test_parse_spec_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_spec(text)


def test_settings_are_typed_per_setting() -> None:
    space = space_from_settings({"growth": "1..3", "dropout": 0, "batch-size": [64, 128], "lr": "1e-3..1e-2:log"})
    assert space.growth == FloatRange(1.0, 3.0) and space.dropout == 0.0 and isinstance(space.dropout, float)
    assert space.batch_size == Choice((64, 128)) and space.lr == FloatRange(1e-3, 1e-2, log=True)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"depth": "2..9"}, r"^--depth 2..9: the largest depth that fits 64x64 inputs is 5 \(.*--image-size 1023"),
        ({"depth": "7"}, r"^--depth 7: the largest depth that fits 64x64 inputs is 5"),
        ({"depth": "6.."}, r"^--depth 6..: the largest depth that fits 64x64 inputs is 5"),
        ({"depth": "2.5..4"}, r"^--depth 2.5..4: depth needs whole numbers"),
        ({"depth": "6..2"}, r"^--depth 6..2: the low end is above the high end \(write 2..6\)"),
        ({"dropout": "0..1.0"}, r"^--dropout 0..1.0: dropout must be a finite number in \[0, 1\) \(got 1.0\)"),
        ({"dropout": "-0.1"}, r"^--dropout -0.1: dropout must be a finite number in \[0, 1\)"),
        ({"lr": "a..b"}, r"^--lr a..b: 'a' is not a number"),
        ({"lr": "0..1e-2:log"}, r"^--lr 0..1e-2:log: a log-scale range must start above 0"),
        ({"widths": "2..6"}, r"^--widths 2..6: use growth, per-layer"),
        ({"dept": "2..6"}, r"^--dept: not a search setting; did you mean --depth\?"),
        ({"batch_size": "1..8"}, r"^--batch-size 1..8: batch_size must be at least 2 \(BatchNorm"),
    ],
)
def test_bad_settings_name_the_flag(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        space_from_settings(settings, BASE)


def test_depth_range_closes_at_the_input_size() -> None:
    small = dataclasses.replace(BASE, model=dataclasses.replace(BASE.model, image_size=32))
    assert resolve(SearchSpace(), BASE).depth == IntRange(1, 5)
    assert resolve(SearchSpace(), small).depth == IntRange(1, max_depth(small.model)) == IntRange(1, 4)
    with pytest.raises(ConfigError, match=r"--fix depth=5: the largest depth that fits 32x32 inputs is 4"):
        fixed("--image-size", "32", "--fix", "depth=5")


def test_fix_sets_fields_in_any_section_as_their_flags_do() -> None:
    args = search_args("--fix", "epochs=3", "--fix", "image-size=32", "--fix", "optim.weight_decay=1e-3",
                       "--fix", "flip=false", "--fix", "experiment=study", "--fix", "pool=max")
    config, space = study_space(args)
    assert (config.optim.epochs, space.image_size, space.weight_decay) == (3, 32, 1e-3)
    assert (config.optim.flip, config.tracking.experiment, config.model.pool) == (False, "study", "max")
    assert study_space(search_args("--fix", "epochs=3", "--fix", "epochs=4"))[0].optim.epochs == 4  # later wins
    assert study_space(search_args("--fix", "epochs=3", "--epochs", "5"))[0].optim.epochs == 5


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["epoch=3"], r"--fix epoch: no such setting; did you mean epochs"),
        (["learning_rate=1e-3"], r"--fix learning_rate: no such setting"),
        (["epochs=0"], r"--fix epochs=0 must be at least 1"),
        (["depth=2..5"], None),  # a range is a search setting: --fix depth=2..5 is --depth 2..5
        (["lr"], r"--fix 'lr': write NAME=VALUE"),
        (["num_classes=3"], r"--fix num_classes: no such setting"),
        (["flip=maybe"], r"--fix flip=maybe: needs true or false"),
    ],
)
def test_bad_fixes_name_the_fix(items: list[str], message: str | None) -> None:
    argv = [token for item in items for token in ("--fix", item)]
    if message is None:
        assert fixed(*argv)[1].depth == IntRange(2, 5)
        return
    with pytest.raises((ConfigError, ValueError), match=message):
        fixed(*argv)


def test_image_size_can_be_searched_and_depth_fits_the_smallest() -> None:
    base, space = fixed("--image-size", "32,64")
    assert space.image_size == Choice((32, 64)) and space.depth == IntRange(1, max_depth(
        dataclasses.replace(base.model, image_size=32)))
    for params, config in run_study(space, base, trials=4):
        assert config.model.image_size == params["image_size"] in (32, 64)
        validate(config.model)


def test_the_parameter_budget_prunes_big_networks_before_they_train() -> None:
    from convscope.search.size_limit import over_budget, parameter_count

    seed = build_config("seed")
    assert parameter_count(seed) == 409_682 and over_budget(seed, 409_682) is None
    assert "409,682 parameters, over the budget of 400,000" in over_budget(seed, 400_000)
    assert over_budget(seed, None) is None
    assert fixed("--max-params", "off")[1].max_params is None
    with pytest.raises(ConfigError, match="--max-params 1..9: give one number"):
        fixed("--max-params", "1..9")


def test_an_unknown_fix_suggests_close_matches() -> None:
    with pytest.raises(ValueError, match=r"--fix weight_dacay: no such setting; did you mean weight_decay\?"):
        fixed("--fix", "weight_dacay=1e-3")


def test_describe_lists_every_parameter() -> None:
    text = describe(resolve(space_from_settings({"lr": "on"}), BASE))
    for expected in ("depth", "1 .. 5", "base_width", "growth", "dropout", "lr", "log scale", "batch_size"):
        assert expected in text
    per_layer = describe(space_from_settings({"widths": "per-layer", "dropout": 0.1}))
    assert "width_1..N" in per_layer and "fixed at 0.1" in per_layer and "largest that fits" in per_layer


def test_head_activation_and_label_smoothing_can_be_searched() -> None:
    base, space = fixed("--head", "flatten,gap", "--head-activation", "on", "--label-smoothing", "on")
    assert space.head == Choice(("flatten", "gap")) and space.head_activation == Choice((False, True))
    assert space.label_smoothing == FloatRange(0.0, 0.2)
    seen = set()
    for params, config in run_study(space, base, trials=8):
        assert {"head", "head_activation", "label_smoothing"} <= set(params)
        assert (config.model.head, config.model.head_activation) == (params["head"], params["head_activation"])
        assert config.optim.label_smoothing == params["label_smoothing"] <= 0.2
        seen.add(config.model.head)
    assert seen == {"flatten", "gap"}
    assert fixed("--head", "gap")[1].head == "gap" and fixed("--head-activation", "true")[1].head_activation is True
    with pytest.raises(ConfigError, match="--head avg: use flatten, gap"):
        fixed("--head", "avg")


def test_settings_are_checked_at_the_smallest_image_size_searched() -> None:
    with pytest.raises(ConfigError, match="crop_padding must be below"):
        fixed("--image-size", "32", "--crop-padding", "40")
    assert fixed("--image-size", "32")[0].model.image_size == 32  # a fixed size is the trials' base size
