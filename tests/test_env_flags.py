"""``CONVSCOPE_<FLAG>`` environment variables: parsed like flags, beaten by the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

import convscope.cli.main

from convscope import cli
from convscope.cli.main import build_parser
from convscope.cli.env_flags import EnvFlagError, env_argv, subcommand_parsers, with_env_flags
from convscope.cli.setting_flags import setting_layers


pytestmark = pytest.mark.usefixtures("clean_env")  # the fixture is in conftest.py


def parse(argv: list[str], environ: dict[str, str]) -> argparse.Namespace:
    """``argv`` parsed the way ``convscope`` parses it, with ``environ`` as the environment."""
    parser = build_parser()
    return parser.parse_args(with_env_flags(parser, argv, environ))


def test_env_values_reach_the_namespace_with_their_types() -> None:
    args = parse(["search"], {"CONVSCOPE_STUDY_NAME": "pets", "CONVSCOPE_TRIALS": "7",
                              "CONVSCOPE_TRIALS_PER_GPU": "2", "CONVSCOPE_STORAGE": "sqlite:///s.db",
                              "CONVSCOPE_PRUNER": "hyperband"})
    assert args.study_name == "pets" and args.storage == "sqlite:///s.db" and args.pruner == "hyperband"
    assert args.trials == 7 and isinstance(args.trials, int)
    assert args.trials_per_gpu == 2 and isinstance(args.trials_per_gpu, int)
    untouched = parse(["search"], {})
    assert (untouched.study_name, untouched.trials, untouched.trials_per_gpu) == ("convscope-study", 20, 0)


def test_env_flags_go_right_after_the_sub_command_and_the_command_line_wins() -> None:
    parser = build_parser()
    env = {"CONVSCOPE_TRIALS": "7", "CONVSCOPE_STUDY_NAME": "from-env"}
    argv = with_env_flags(parser, ["search", "--trials", "3"], env)
    assert argv[0] == "search" and argv[-2:] == ["--trials", "3"]
    assert sorted(argv[1:-2]) == sorted(["--trials=7", "--study-name=from-env"])
    args = parser.parse_args(argv)
    assert args.trials == 3 and args.study_name == "from-env"


def test_env_flags_come_before_positional_arguments() -> None:
    args = parse(["compare", "run1", "run2"], {"CONVSCOPE_TOP": "5"})
    assert args.run_ids == ["run1", "run2"] and args.top == 5


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("1", True), ("YES", True), (" on ", True),
     ("false", False), ("0", False), ("No", False), ("off", False)],
)
def test_boolean_optional_switch(value: str, expected: bool) -> None:
    args = parse(["search"], {"CONVSCOPE_TENSORBOARD": value})
    assert getattr(args, "tracking::tensorboard") is expected
    assert not hasattr(parse(["search"], {}), "tracking::tensorboard")  # unset: the config's or preset's value
    assert getattr(parse(["search", "--tensorboard"], {"CONVSCOPE_TENSORBOARD": "false"}), "tracking::tensorboard")


def test_store_true_switch() -> None:
    parser = build_parser()
    assert parse(["search"], {"CONVSCOPE_QUIET": "yes"}).quiet is True
    assert with_env_flags(parser, ["search"], {"CONVSCOPE_QUIET": "0"}) == ["search"]
    assert parse(["search"], {"CONVSCOPE_QUIET": "0"}).quiet is False


def test_repeatable_flag_splits_on_semicolons_and_newlines() -> None:
    parser = build_parser()
    argv = with_env_flags(parser, ["search", "--fix", "lr=0.1"], {"CONVSCOPE_FIX": "epochs=3;seed=1"})
    assert argv == ["search", "--fix", "epochs=3", "--fix", "seed=1", "--fix", "lr=0.1"]
    argv = with_env_flags(parser, ["search"], {"CONVSCOPE_FIX": " epochs=3\n\n synthetic_size=300 ;\n"})
    assert argv == ["search", "--fix", "epochs=3", "--fix", "synthetic_size=300"]


def test_fix_items_from_the_environment_become_the_flags_they_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVSCOPE_FIX", "epochs=3;flip=false;widths=8,16")
    args = cli.main.parse(build_parser(), ["depth", "--fix", "seed=1"])
    assert getattr(args, "optim::epochs") == 3 and getattr(args, "optim::flip") is False
    assert getattr(args, "model::widths") == [8, 16] and getattr(args, "optim::seed") == 1
    assert args.fix_labels["optim::epochs"] == "--fix epochs=3"


def test_env_beats_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "study.yaml"
    config.write_text("epochs: 9\ndata: synthetic\n")
    _, overrides, _ = setting_layers(parse(["search", "--config", str(config)], {}))
    assert overrides["optim"]["epochs"] == 9
    _, overrides, _ = setting_layers(parse(["search"], {"CONVSCOPE_CONFIG": str(config), "CONVSCOPE_EPOCHS": "4"}))
    assert overrides["optim"]["epochs"] == 4 and overrides["data"]["data"] == "synthetic"


def test_invalid_switch_value_raises_and_main_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(EnvFlagError, match="CONVSCOPE_QUIET"):
        env_argv(subcommand_parsers(build_parser())["search"], {"CONVSCOPE_QUIET": "maybe"})
    monkeypatch.setenv("CONVSCOPE_QUIET", "maybe")
    assert cli.main.main(["search", "--init-only"]) == 2
    err = capsys.readouterr().err
    assert "CONVSCOPE_QUIET" in err and "maybe" in err and "true" in err


def test_invalid_int_names_the_variable(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CONVSCOPE_TRIALS", "abc")
    monkeypatch.setenv("CONVSCOPE_TEST_SOMETHING", "1")  # test settings are not listed
    with pytest.raises(SystemExit) as raised:
        cli.main.main(["search", "--init-only"])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.strip()]  # one line, no usage block
    assert "invalid int value: 'abc' (set by CONVSCOPE_TRIALS)" in line and "see convscope search --help" in line
    assert "CONVSCOPE_TEST_SOMETHING" not in err


def test_nested_serve_service_gets_its_env_flags() -> None:
    parser = build_parser()
    env = {"CONVSCOPE_PORT": "5001", "CONVSCOPE_HOST": "0.0.0.0", "CONVSCOPE_AUTH": "true",
           "CONVSCOPE_LOGDIR": "/tb"}
    argv = with_env_flags(parser, ["serve", "mlflow", "--check"], env)
    assert argv[:2] == ["serve", "mlflow"] and argv[-1] == "--check" and "--logdir" not in argv
    args = parser.parse_args(argv)
    assert (args.service, args.port, args.host, args.auth, args.check) == ("mlflow", 5001, "0.0.0.0", True, True)
    args = parse(["serve", "tensorboard", "--port", "7000"], env)  # no --auth there: ignored
    assert (args.port, args.host, args.logdir) == (7000, "0.0.0.0", "/tb") and not hasattr(args, "auth")
    assert parse(["serve", "mlflow"], {"CONVSCOPE_AUTH": "off"}).auth is False


def test_variables_for_another_sub_command_are_ignored() -> None:
    env = {"CONVSCOPE_LOGDIR": "/tb", "CONVSCOPE_AUTH": "true", "CONVSCOPE_MLFLOW_PORT": "1234"}
    assert with_env_flags(build_parser(), ["search"], env) == ["search"]
    args = parse(["serve", "optuna-dashboard"], {"CONVSCOPE_TRIALS": "abc", "CONVSCOPE_FIX": "x=1"})
    assert args.port == 8080 and not hasattr(args, "trials")


def test_help_handler_and_unknown_commands_are_not_mapped(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = build_parser()
    env = {"CONVSCOPE_HELP": "1", "CONVSCOPE_HANDLER": "x", "CONVSCOPE_COMMAND": "train", "CONVSCOPE_SERVICE": "x"}
    assert with_env_flags(parser, ["search"], env) == ["search"]
    assert with_env_flags(parser, ["serve", "mlflow"], env) == ["serve", "mlflow"]
    assert with_env_flags(parser, ["--help"], {"CONVSCOPE_TRIALS": "3"}) == ["--help"]
    assert with_env_flags(parser, ["nosuch", "search"], {"CONVSCOPE_TRIALS": "3"}) == ["nosuch", "search"]
    assert with_env_flags(parser, [], {"CONVSCOPE_TRIALS": "3"}) == []
    monkeypatch.setenv("CONVSCOPE_STUDY_NAME", "from-os-environ")  # environ=None: os.environ
    assert with_env_flags(parser, ["search"]) == ["search", "--study-name=from-os-environ"]


def test_values_that_look_like_flags_lists_and_empty_variables() -> None:
    """A value may start with "-"; several values split like a shell; empty means unset."""
    args = parse(["search"], {"CONVSCOPE_STUDY_NAME": "-odd", "CONVSCOPE_TRIALS": "", "CONVSCOPE_QUIET": ""})
    assert (args.study_name, args.trials, args.quiet) == ("-odd", 20, False)
    assert getattr(parse(["depth"], {"CONVSCOPE_WIDTHS": "16 32"}), "model::widths") == [16, 32]


def test_an_env_flag_yields_to_a_mutually_exclusive_command_line_flag() -> None:
    """``CONVSCOPE_STUDY`` must not break ``convscope depth --widths …`` (the two exclude each other)."""
    args = parse(["depth", "--widths", "8", "16"], {"CONVSCOPE_STUDY": "pets"})
    assert getattr(args, "model::widths") == [8, 16] and args.study is None
    assert parse(["depth"], {"CONVSCOPE_STUDY": "pets"}).study == "pets"


def test_train_flags_are_named_after_the_flag_not_its_dest() -> None:
    """``convscope train --depth`` (dest ``model::depth``) reads ``CONVSCOPE_DEPTH``."""
    parser = build_parser()
    argv = with_env_flags(parser, ["train"], {"CONVSCOPE_DEPTH": "3", "CONVSCOPE_DROPOUT": "0.25"})
    assert sorted(argv[1:]) == ["--depth=3", "--dropout=0.25"]
    args = parser.parse_args(argv)
    assert (getattr(args, "model::depth"), getattr(args, "model::dropout")) == (3, 0.25)
