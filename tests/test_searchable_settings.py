"""A searchable setting is declared once: a ``SearchSpace`` field named like its run setting. Its
flag, its type and limits (the run config's), its draw, its trial record and its HParams domain
follow from that field; the kernel size is searchable that way."""

from __future__ import annotations

import optuna
import pytest

from convscope.cli.main import build_parser
from convscope.cli.search_cmd import study_space
from convscope.search.objective import trained_settings
from convscope.search.space import (
    INT_SETTINGS,
    LIMITS,
    OPTIONAL_RANGES,
    PLAIN_SETTINGS,
    WORDS,
    Choice,
    SearchSpace,
    config_from_params,
    space_from_settings,
    spec_values,
    suggest,
)
from convscope.train.config import build_config
from convscope.train.setting_values import setting_section
from convscope.train.errors import ConfigError

BASE = build_config("seed")


def test_the_kernel_size_is_searched_from_its_flag_and_reaches_the_network() -> None:
    args = build_parser().parse_args(["search", "--kernel-size", "3,5", "--depth", "2..3"])
    _, space = study_space(args)
    assert space.kernel_size == Choice((3, 5))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        config = suggest(trial, space, BASE)
        assert config.model.kernel_size == trial.params["kernel_size"]
        seen.add(config.model.kernel_size)
        study.tell(trial, 0.5)
    assert seen == {3, 5}
    assert "kernel_size" in INT_SETTINGS and LIMITS["kernel_size"][1] == "at least 1"
    assert "kernel size" in build_parser()._subparsers._group_actions[0].choices["search"].format_help()


def test_a_searched_kernel_size_is_checked_like_the_flag() -> None:
    with pytest.raises(ConfigError, match="kernel_size must be at least 1"):
        space_from_settings({"kernel_size": "0..3"})
    with pytest.raises(ConfigError, match="whole numbers"):
        space_from_settings({"kernel_size": "2.5..4"})
    with pytest.raises(ConfigError, match="largest depth that fits 64x64 inputs is 4"):  # the worst kernel decides
        space_from_settings({"kernel_size": "3,5", "depth": "5"}, BASE)


@pytest.mark.parametrize("name", PLAIN_SETTINGS)
def test_every_plain_searchable_setting_lands_in_its_run_setting(name: str) -> None:
    section = setting_section(name)
    assert section in ("model", "data", "optim"), name
    current = getattr(getattr(BASE, section), name)
    spec = getattr(SearchSpace(), name) or OPTIONAL_RANGES.get(name) or Choice(tuple(WORDS[name]))
    value = next(v for v in [*spec_values(spec), getattr(spec, "high", None)] if v is not None and v != current)
    space = space_from_settings({name: [value] if name in WORDS else value})
    params = {"depth": 2, "base_width": 8, "growth": 1.0, "dropout": 0.1, "lr": 0.01, "weight_decay": 1e-4}
    config = config_from_params({**params, name: value}, space, BASE)
    assert getattr(getattr(config, section), name) == value
    assert trained_settings(config)[section][name] == value  # what depth --study carries over
