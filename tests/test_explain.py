"""``convscope explain`` and ``convscope compare`` on runs with known answers: one that learned a
2-block task, one that never learned (learning rate 1e-7)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from e2e_helpers import convscope
from html_check import embedded_pngs, parse

NOT_DEFAULT = ["--no-flip", "--crop-padding", "0", "--label-smoothing", "0.05"]  # kept by every suggestion
TASK = ["--data", "synthetic-depth2", "--image-size", "32", "--preset", "tiny", "--synthetic-size", "1200",
        "--no-tensorboard"]


def _run_id(stdout: str) -> str:
    match = re.search(r"/runs/([0-9a-f]{32})", stdout)
    assert match, stdout
    return match.group(1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str]]:
    folder = tmp_path_factory.mktemp("explain") / "runs"
    learned = convscope("train", "--runs-dir", str(folder), *TASK, "--epochs", "12", "--run-name", "learned",
                        *NOT_DEFAULT)
    assert learned.returncode == 0, learned.stderr
    untrained = convscope("train", "--runs-dir", str(folder), *TASK, "--epochs", "4", "--lr", "1e-7",
                          "--run-name", "untrained")
    assert untrained.returncode == 0, untrained.stderr
    assert "note: untrained did not learn (" in untrained.stdout and "note:" not in learned.stdout
    assert f"what it learned: convscope explain {_run_id(learned.stdout)}" in learned.stdout
    opening = next(line for line in learned.stdout.splitlines() if line.startswith("run learned on "))
    assert re.fullmatch(r"run learned on \w+(:\d+)?; MLflow http://127\.0\.0\.1:5000/#/experiments/\d+/runs/[0-9a-f]{32}"
                        r"\?workflowType=machine_learning", opening), opening  # where to watch it, no TensorBoard
    yield folder, _run_id(learned.stdout), _run_id(untrained.stdout)


@pytest.mark.slow
def test_explain_answers_for_a_run_that_learned(runs: tuple[Path, str, str], tmp_path: Path) -> None:
    folder, learned, _ = runs
    done = convscope("explain", learned, "--runs-dir", str(folder))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "not enough evidence for verdicts" not in out and "Downloading artifacts" not in done.stderr
    table = {line.split()[0]: line for line in out.splitlines() if re.match(r"conv\d ", line)}
    assert set(table) == {"conv1", "conv2", "conv3"}
    assert "n/a (3×3)" in table["conv3"] and "n/a" not in table["conv1"]  # 15×15 maps have a noise value
    assert "conv2: adds class information" in out  # the task needs two blocks: conv2 makes it readable
    assert "conv3: adds no linearly readable class information" in out and "a tie with zero" in out
    assert "no ablation of this run yet: convscope depth --ablate " + learned + " --ablate-last 2" in out
    assert f"no depth study on this data yet: convscope depth --from-run {learned} --timeout " in out
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    run = client.get_run(learned)
    assert run.info.status == "FINISHED" and run.data.tags["convscope.explain"] == "explained"
    page = Path(client.download_artifacts(learned, "explain/report.html", str(tmp_path))).read_text()
    assert len(embedded_pngs(page)) == 4  # saliency and the three layer overviews
    assert parse(page).count("h2") == 5 and "How many conv layers are enough?" in page


@pytest.mark.slow
def test_explains_commands_train_the_runs_network_with_every_setting_and_its_chance_is_the_validation_splits(
        runs: tuple[Path, str, str]) -> None:
    """Each command ``explain`` prints, parsed as the command line would be, trains the run's data,
    augmentation and optimiser settings unchanged (only depth, widths, bypassed blocks, epochs and
    names may differ); the chance level printed is the validation split's."""
    import shlex

    from convscope.cli.depth_cmd import build_depth_settings
    from convscope.cli.main import build_parser
    from convscope.search.sources import run_config
    from convscope.train.config import build_config, flatten

    folder, learned, _ = runs
    done = convscope("explain", learned, "--runs-dir", str(folder))
    assert done.returncode == 0, done.stderr
    commands = re.findall(r"convscope depth [^\n]*?--timeout \d+m(?: --runs-dir \S+)?", done.stdout)
    assert len(commands) == 2 and any("--ablate " in c for c in commands), done.stdout
    trained = flatten(run_config(build_config("seed", {"tracking": {"runs_dir": str(folder)}}), learned))
    assert (trained["optim.flip"], trained["optim.crop_padding"], trained["optim.label_smoothing"]) == (False, 0, 0.05)
    may_differ = {"model.depth", "model.widths", "model.bypass", "optim.epochs", "tracking.run_name",
                  "tracking.visuals", "data.folds", "data.fold"}
    for command in commands:
        args = build_parser().parse_args(shlex.split(command)[1:])
        settings = build_depth_settings(args)
        assert settings.timeout is not None and len(settings.variants) >= 2
        for variant in settings.variants:
            differ = {key for key, value in flatten(variant.config).items() if trained.get(key) != value}
            assert differ <= may_differ, (command, {key: (trained.get(key), flatten(variant.config)[key])
                                                    for key in differ - may_differ})
    chance = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").get_run(learned).data.tags["data.val_chance"]
    assert f"(chance {float(chance):.3f})" in done.stdout


@pytest.mark.slow
def test_an_untrained_run_did_not_learn_and_gets_no_verdict(runs: tuple[Path, str, str]) -> None:
    folder, learned, untrained = runs
    done = convscope("explain", untrained, "--runs-dir", str(folder))
    assert done.returncode == 0, done.stderr
    assert "not enough evidence for verdicts: untrained did not learn" in done.stdout
    assert "adds no linearly readable" not in done.stdout and "adds little" not in done.stdout
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    assert client.get_run(untrained).data.tags["convscope.explain"] == "not enough evidence"
    compared = convscope("compare", untrained, learned, "--runs-dir", str(folder))
    assert compared.returncode == 0, compared.stderr
    assert "untrained: no verdicts: untrained did not learn" in compared.stdout, compared.stdout
    assert not any(line.startswith("untrained:") and "adds little" in line for line in compared.stdout.splitlines())
