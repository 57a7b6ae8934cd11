"""Config resolution and the generated command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from convscope.cli.main import build_parser, main
from convscope.cli.setting_flags import resolve_config
from convscope.cli.setting_flags import field_comments
from convscope.train.config import build_config, flatten, from_dict, to_dict
from convscope.train.config_sections import ModelConfig


def parse(*argv: str):  # type: ignore[no-untyped-def]
    return build_parser().parse_args(["train", *argv])


def test_flags_override_config_file_which_overrides_preset(tmp_path: Path) -> None:
    file = tmp_path / "run.yaml"
    file.write_text("preset: tiny\nmodel:\n  dropout: 0.3\nlr: 0.01\nepochs: 7\n")
    config = resolve_config(parse("--config", str(file), "--lr", "0.002", "--widths", "4", "8", "16"))
    assert config.preset == "tiny"
    assert config.model.depth == 3  # from the preset
    assert config.model.dropout == 0.3  # from the file (sectioned)
    assert config.optim.epochs == 7  # from the file (flat)
    assert config.optim.lr == 0.002  # the flag wins over the file
    assert config.model.widths == (4, 8, 16)


def test_toml_config(tmp_path: Path) -> None:
    file = tmp_path / "run.toml"
    file.write_text("[optim]\nbatch_size = 64\n[tracking]\nmlflow = false\n")
    config = resolve_config(parse("--config", str(file)))
    assert config.optim.batch_size == 64 and config.tracking.mlflow is False


def test_help_text_comes_from_dataclass_comments() -> None:
    assert field_comments(ModelConfig)["depth"] == "number of conv blocks (conv1 … convN)"
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()  # type: ignore[union-attr]
    for flag in ("--data", "--preset", "--epochs", "--image-size", "--batch-size", "--lr", "--seed", "--device",
                 "--runs-dir", "--experiment", "--quiet", "--config", "--dry-run", "--resume", "--probe"):
        assert flag in help_text
    assert "number of conv blocks" in help_text
    assert "--num-classes" not in help_text  # set from the data, not a flag


def test_config_round_trips_through_dict() -> None:
    config = build_config("tiny", {"model": {"widths": (2, 4, 8)}, "data": {"probe": ("a.png",)}})
    assert from_dict(to_dict(config)) == config
    assert flatten(config)["model.widths"] == "2,4,8"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--depth", "7", "--dry-run"], "largest depth that fits is 5"),
        (["--config", "missing.yaml"], "--config missing.yaml: no such file"),
        (["--data", "no/such/folder", "--no-mlflow", "--no-tensorboard"], "--data no/such/folder: no such folder"),
        (["--resume", "nowhere"], "--resume nowhere: not a convscope checkpoint folder"),
        (["--device", "cuda:7"], "--device cuda:7"),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_bad_config_file_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text("depht: 3\n")
    assert main(["train", "--config", str(file), "--dry-run"]) == 2
    assert "unknown setting 'depht'" in capsys.readouterr().err


def test_console_script_dry_run_prints_layer_table() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "convscope", "train", "--dry-run"], capture_output=True, text=True, check=True
    ).stdout
    assert "conv5" in out and "409,682" in out


def test_unknown_flag_is_a_usage_error() -> None:
    done = subprocess.run([sys.executable, "-m", "convscope", "train", "--bogus"], capture_output=True, text=True)
    assert done.returncode == 2 and "unrecognized arguments: --bogus" in done.stderr


def test_logged_config_yaml_reads_back_as_the_same_config(tmp_path: Path) -> None:
    """The ``config.yaml`` artifact is what ``--config`` reads; a tracking password never reaches it."""
    import yaml

    from convscope.tracking.mlflow_sink import _plain
    from convscope.train.run_record import run_config

    config = build_config("tiny", {"model": {"widths": (4, 8, 16), "dropout": 0.25}, "optim": {"lr": 0.002},
                                   "tracking": {"mlflow_uri": "postgresql://me:s3cret@db/mlflow"}})
    file = tmp_path / "config.yaml"
    file.write_text(yaml.safe_dump(_plain(run_config(config)), sort_keys=False))
    assert "s3cret" not in file.read_text()
    again = resolve_config(parse("--config", str(file)))
    assert again.model == config.model and again.optim == config.optim and again.data == config.data
    assert again.tracking.mlflow_uri == "postgresql://me:***@db/mlflow"
