"""Every run setting is checked against its type and range before anything heavy: one line on
stderr naming the flag (or the config file's key, the ``--fix``, the environment variable, the
checkpoint file), exit 2, no traceback and no MLflow run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import convscope.cli.main

from convscope import cli
from e2e_helpers import convscope
from convscope.train.config_file import load_config_file
from convscope.train.config import build_config, from_dict, to_dict
from convscope.train.config_sections import RunConfig
from convscope.train.setting_values import check_values
from convscope.train.errors import ConfigError

TRAIN = ["train", "--preset", "tiny", "--image-size", "32", "--synthetic-size", "200", "--no-mlflow",
         "--no-tensorboard", "--quiet"]
TRACKED = ["train", "--preset", "tiny", "--image-size", "32", "--synthetic-size", "200", "--no-tensorboard",
           "--quiet", "--epochs", "1"]  # MLflow on: a run must not be opened


pytestmark = pytest.mark.usefixtures("clean_env")  # the fixture is in conftest.py


def fails_cleanly(argv: list[str], needles: tuple[str, ...], capsys: pytest.CaptureFixture[str], runs: Path) -> str:
    """``convscope *argv`` exits 2 with one stderr line holding every needle, and opened no MLflow store."""
    assert cli.main.main([*argv, "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    assert not (runs / "mlflow.db").exists() and not (runs / "mlruns").exists()
    return err


FLAG_CASES = [
    (["--epochs", "0"], ("--epochs", "at least 1", "got 0")),
    (["--epochs", "-1"], ("--epochs", "at least 1")),
    (["--batch-size", "0"], ("--batch-size", "at least 2")),
    (["--batch-size", "1"], ("--batch-size", "BatchNorm")),
    (["--lr", "nan"], ("--lr", "finite", "above 0")),
    (["--lr", "-1"], ("--lr", "above 0")),
    (["--lr", "inf"], ("--lr", "finite")),
    (["--weight-decay", "-1"], ("--weight-decay", "at least 0")),
    (["--weight-decay", "nan"], ("--weight-decay", "finite")),
    (["--dropout", "1"], ("--dropout", "[0, 1)")),
    (["--val-fraction", "0"], ("--val-fraction", "(0, 1)")),
    (["--val-fraction", "1.5"], ("--val-fraction", "(0, 1)")),
    (["--folds", "1"], ("--folds", "at least 2")),
    (["--folds", "3", "--fold", "3"], ("--fold", "between 0 and 2")),
    (["--fold", "-1"], ("--fold", "at least 0")),
    (["--fold", "1"], ("--fold", "needs --folds")),
    (["--synthetic-size", "1"], ("--synthetic-size", "at least 2")),
    (["--probes-per-class", "-1"], ("--probes-per-class", "at least 0")),
    (["--analysis-size", "-1"], ("--analysis-size", "at least 0")),
    (["--patience", "-1"], ("--patience", "at least 0")),
    (["--crop-padding", "-1"], ("--crop-padding", "at least 0")),
    (["--crop-padding", "40"], ("--crop-padding", "below --image-size")),
    (["--image-size", "0"], ("--image-size", "at least 1")),
    (["--head-hidden", "-1"], ("--head-hidden", "at least 0")),
    (["--memory-fraction", "0"], ("--memory-fraction", "(0, 1]")),
    (["--memory-fraction", "1.5"], ("--memory-fraction", "(0, 1]")),
    (["--growth", "0"], ("--growth", "above 0")),
    (["--base-width", "0"], ("--base-width", "at least 1")),
    (["--widths", "8", "0", "16"], ("--widths", "at least 1")),
    (["--kernel-size", "0"], ("--kernel-size", "at least 1")),
    (["--stride", "0"], ("--stride", "at least 1")),
    (["--padding", "-1"], ("--padding", "at least 0")),
    (["--data-seed", "-2"], ("--data-seed", "-1")),
    (["--seed", "-1"], ("--seed", "from 0 to 4294967295")),
    (["--schedule", "linear"], ("--schedule", "onecycle")),
    (["--precision", "fp16"], ("--precision", "bf16")),
    (["--pool", "avg"], ("--pool", "max")),
    (["--data", ""], ("--data", "non-empty")),
    (["--depth", "50"], ("--depth 50", "largest depth that fits is 4")),
]


@pytest.mark.parametrize(("flags", "needles"), FLAG_CASES, ids=[" ".join(c[0]) for c in FLAG_CASES])
def test_bad_flag_values(flags: list[str], needles: tuple[str, ...], capsys: pytest.CaptureFixture[str],
                         tmp_path: Path) -> None:
    fails_cleanly([*TRACKED, *flags], needles, capsys, tmp_path / "runs")


FILE_CASES = [
    ("a.yaml", "model: {depth: three}\n", ("model.depth", "an integer", "'three'")),
    ("a.yaml", "optim: {lr: fast}\n", ("optim.lr", "a number", "'fast'")),
    ("a.yaml", "optim: {epochs: 0}\n", ("optim.epochs", "at least 1")),
    ("a.yaml", "optim: {epochs: 2.5}\n", ("optim.epochs", "an integer", "2.5")),
    ("a.yaml", "optim: {epochs: [1, 2]}\n", ("optim.epochs", "an integer", "[1, 2]")),
    ("a.yaml", "optim: {flip: maybe}\n", ("optim.flip", "true or false", "'maybe'")),
    ("a.yaml", "optim: {flip: 1}\n", ("optim.flip", "true or false")),
    ("a.yaml", "model: {widths: [8, x, 16]}\n", ("model.widths", "integers", "'x'")),
    ("a.yaml", "model: {dropout: 1.0}\n", ("model.dropout", "[0, 1)")),
    ("a.yaml", "batch_size: 0\n", ("optim.batch_size", "at least 2")),  # a flat key
    ("a.yaml", "model: {depht: 3}\n", ("model.depht", "unknown setting")),
    ("a.yaml", "model: 3\n", ("model", "mapping")),
    ("a.yaml", "optim: {lr:}\n", ("optim.lr", "a number", "None")),
    ("a.toml", "[model]\ndepth = \"three\"\n", ("model.depth", "an integer")),
    ("a.toml", "[optim]\nlr = -0.1\n", ("optim.lr", "above 0")),
    ("a.toml", "[model]\ndepth = 2\nwidths = \"8,x\"\n", ("model.widths", "integers")),
    ("a.toml", "[data]\nval_fraction = [0.1]\n", ("data.val_fraction", "a number")),
]


@pytest.mark.parametrize(("name", "text", "needles"), FILE_CASES, ids=[c[1].strip() for c in FILE_CASES])
def test_bad_config_file_values(name: str, text: str, needles: tuple[str, ...], capsys: pytest.CaptureFixture[str],
                                tmp_path: Path) -> None:
    file = tmp_path / name
    file.write_text(text)
    fails_cleanly([*TRACKED, "--config", str(file)], (str(file), *needles), capsys, tmp_path / "runs")


COMMON = ["--image-size", "32", "--no-tensorboard", "--fix", "synthetic_size=100"]
FIX_CASES = [
    (["depth", "--max-depth", "2", "--folds", "2", *COMMON, "--fix", "epochs=0"], ("--fix epochs=0", "at least 1")),
    (["depth", "--max-depth", "2", "--folds", "2", *COMMON, "--fix", "batch_size=1"], ("--fix batch_size=1",)),
    (["depth", "--max-depth", "2", "--folds", "2", *COMMON, "--fix", "memory_fraction=2"], ("memory_fraction",)),
    (["depth", "--max-depth", "2", "--folds", "2", *COMMON, "--fix", "flip=maybe"], ("--fix flip=maybe",)),
    (["depth", "--max-depth", "2", "--folds", "2", *COMMON, "--epochs", "0"], ("--epochs", "at least 1")),
    (["search", "--trials", "1", *COMMON, "--fix", "epochs=0"], ("--fix epochs=0", "at least 1")),
    (["search", "--trials", "1", *COMMON, "--fix", "lr=nan"], ("--fix lr=nan",)),
    (["search", "--trials", "1", *COMMON, "--fix", "crop_padding=40"], ("crop_padding", "below")),
]


@pytest.mark.parametrize(("argv", "needles"), FIX_CASES, ids=[" ".join(c[0][-2:]) for c in FIX_CASES])
def test_bad_fix_values(argv: list[str], needles: tuple[str, ...], capsys: pytest.CaptureFixture[str],
                        tmp_path: Path) -> None:
    fails_cleanly(argv, needles, capsys, tmp_path / "runs")


ENV_CASES = [
    ("train", {"CONVSCOPE_EPOCHS": "0"}, ("CONVSCOPE_EPOCHS", "at least 1")),
    ("train", {"CONVSCOPE_LR": "nan"}, ("CONVSCOPE_LR", "finite")),
    ("train", {"CONVSCOPE_BATCH_SIZE": "1"}, ("CONVSCOPE_BATCH_SIZE", "at least 2")),
    ("train", {"CONVSCOPE_WIDTHS": "8 0 16"}, ("CONVSCOPE_WIDTHS", "at least 1")),
    ("depth", {"CONVSCOPE_EPOCHS": "0"}, ("--epochs", "at least 1")),  # depth's own --epochs flag
]


@pytest.mark.parametrize(("command", "env", "needles"), ENV_CASES, ids=[f"{c[0]} {c[1]}" for c in ENV_CASES])
def test_bad_env_values(command: str, env: dict[str, str], needles: tuple[str, ...], monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    argv = TRACKED if command == "train" else ["depth", "--max-depth", "2", "--folds", "2", *COMMON]
    fails_cleanly(argv, needles, capsys, tmp_path / "runs")


def checkpoint_folder(tmp_path: Path, config: str | None = None, state: bytes | None = None) -> Path:
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "config.json").write_text(config if config is not None else
                                         json.dumps({"config": to_dict(build_config("tiny")), "epoch": 1}))
    (folder / "state.pt").write_bytes(state if state is not None else b"not a torch file")
    (folder / "model.safetensors").write_bytes(b"not safetensors either")
    return folder


@pytest.mark.parametrize(("config", "needles"), [
    ("{not json", ("config.json", "damaged")),
    ("[1, 2]", ("config.json", "no run config")),
    (json.dumps({"config": {"optim": {"epochs": "x"}}}), ("config.json", "optim.epochs", "an integer")),
    (json.dumps({"config": {"optim": {"lr": -1}}}), ("config.json", "optim.lr", "above 0")),
    (None, ("state.pt", "damaged")),  # a good config.json, a corrupt state.pt
], ids=["bad-json", "not-a-mapping", "bad-type", "bad-range", "corrupt-state"])
def test_corrupt_checkpoint(config: str | None, needles: tuple[str, ...], capsys: pytest.CaptureFixture[str],
                            tmp_path: Path) -> None:
    folder = checkpoint_folder(tmp_path, config)
    fails_cleanly([*TRACKED, "--resume", str(folder)], (f"--resume {folder}", *needles), capsys, tmp_path / "runs")


def test_corrupt_model_file_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import torch

    folder = checkpoint_folder(tmp_path)
    torch.save({"epoch": 1}, folder / "state.pt")
    fails_cleanly([*TRACKED, "--resume", str(folder)], ("model.safetensors", "damaged"), capsys, tmp_path / "runs")


@pytest.mark.parametrize("argv", [
    [*TRACKED, "--epochs", "0"],
    [*TRACKED, "--lr", "nan"],
    [*TRACKED, "--depth", "50"],
    ["depth", "--max-depth", "2", "--folds", "2", *COMMON, "--fix", "epochs=0"],
], ids=["epochs", "lr", "depth", "depth-fix"])
def test_console_script_exits_2_without_a_traceback(argv: list[str], tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    done = convscope(*argv, "--runs-dir", str(runs), timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (runs / "mlflow.db").exists()


def test_console_script_bad_config_file(tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text("model: {depth: \"three\"}\n")
    done = convscope(*TRACKED, "--config", str(file), "--runs-dir", str(tmp_path / "runs"), timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (f"convscope train: error: --config {file}: model.depth must be an integer "
                                   "(got 'three')")


# ---------------------------------------------------------------- good values still work


def test_good_file_values_are_typed(tmp_path: Path) -> None:
    yaml_file = tmp_path / "good.yaml"
    yaml_file.write_text("optim: {lr: 1, weight_decay: 0, epochs: 2}\nmodel: {widths: [8, 16, 32], dropout: 0}\n"
                         "data: {val_fraction: 1e-1, probe: one.png}\n")  # YAML reads 1e-1 as text
    preset, overrides = load_config_file(yaml_file)
    config = build_config(preset or "tiny", overrides)
    assert config.optim.lr == 1.0 and isinstance(config.optim.lr, float)
    assert config.optim.weight_decay == 0.0 and isinstance(config.model.dropout, float)
    assert config.model.widths == (8, 16, 32) and config.data.val_fraction == 0.1
    assert config.data.probe == ("one.png",)  # one file, not its characters
    toml_file = tmp_path / "good.toml"
    toml_file.write_text("[model]\ndepth = 2\nwidths = \"8, 16\"\nbypass = 2\n")
    _, overrides = load_config_file(toml_file)
    config = build_config("tiny", overrides)
    assert config.model.widths == (8, 16) and config.model.bypass == (2,)
    toml_file.write_text("[model]\ndepth = 2\nwidths = \"8 16\"\n")
    assert build_config("tiny", load_config_file(toml_file)[1]).model.widths == (8, 16)


def test_good_values_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "good.yaml"
    file.write_text("optim: {lr: 1, epochs: 1, batch_size: 2}\nmodel: {depth: 3}\n")
    assert cli.main.main(["train", "--config", str(file), "--dry-run", "--preset", "tiny", "--folds", "0",
                            "--crop-padding", "0", "--memory-fraction", "1"]) == 0
    assert "conv3" in capsys.readouterr().out


def test_edge_values_are_accepted() -> None:
    config = build_config("tiny", {"optim": {"epochs": 1, "batch_size": 2, "patience": 0, "crop_padding": 0,
                                             "weight_decay": 0},
                                   "data": {"folds": 2, "fold": 1, "synthetic_size": 2, "probes_per_class": 0,
                                            "analysis_size": 0, "memory_fraction": 1.0, "data_seed": -1},
                                   "model": {"dropout": 0.0, "head_hidden": 0}})
    assert isinstance(config, RunConfig)
    assert from_dict(to_dict(config)) == config  # checkpoints and config.json round-trip


def test_check_values_catches_what_replace_lets_through() -> None:
    import dataclasses

    config = build_config("tiny")
    bad = dataclasses.replace(config, optim=dataclasses.replace(config.optim, epochs="3"))
    with pytest.raises(ConfigError, match=r"--epochs / optim.epochs must be an integer \(got '3'\)"):
        check_values(bad)
    with pytest.raises(ConfigError, match="--lr / optim.lr must be a finite number above 0"):
        check_values(dataclasses.replace(config, optim=dataclasses.replace(config.optim, lr=float("nan"))))


def test_choices_match_their_users() -> None:
    from convscope.pictures import epoch_visuals
    from convscope.train import loop, model
    from convscope.train import setting_values as values

    assert values.POOLS == model.POOLS
    assert values.SCHEDULES == loop.SCHEDULES and values.PRECISIONS == loop.PRECISIONS
    assert values.VISUAL_EPOCHS == ("auto", *epoch_visuals.PICTURE_MODES)
