"""``convscope compare`` end to end: two short runs, the report read back from MLflow."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from mlflow import MlflowClient

from e2e_helpers import convscope
from html_check import embedded_pngs

pytestmark = pytest.mark.slow
SHORT = ["--preset", "tiny", "--image-size", "32", "--epochs", "1", "--synthetic-size", "400",
         "--analysis-size", "80", "--quiet", "--no-tensorboard"]


def train_two(runs: Path, *extra: str) -> list[str]:
    for seed in ("1", "2"):
        done = convscope("train", "--runs-dir", str(runs), "--seed", seed, *SHORT, *extra)
        assert done.returncode == 0, done.stderr
    return []


def check_report(client: MlflowClient, experiment: str, ids: list[str], stdout: str, tmp: Path) -> None:
    found = client.get_experiment_by_name(experiment)
    compares = client.search_runs([found.experiment_id], "tags.`convscope.kind` = 'compare'")
    assert len(compares) == 1
    report = compares[0]
    assert set(report.data.tags["convscope.compared_runs"].split(",")) == set(ids)
    names = {Path(a.path).name for a in client.list_artifacts(report.info.run_id, "report")}
    assert {"report.html", "cka_within.csv", "cka_across.csv", "linear_probes.csv", "linear_probes.png"} <= names
    folder = Path(client.download_artifacts(report.info.run_id, "report", str(tmp)))
    pngs = embedded_pngs((folder / "report.html").read_text(encoding="utf-8"))
    assert len(pngs) == len([name for name in names if name.endswith(".png")])
    assert (folder / "linear_probes.png").read_bytes() in pngs
    rows = list(csv.DictReader((folder / "linear_probes.csv").open()))
    assert {row["layer"] for row in rows} >= {"conv1", "conv2", "conv3"}
    assert "report:" in stdout and "report/report.html" in stdout


def test_compare_two_runs_on_the_embedded_store(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    train_two(runs)
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("convscope")
    ids = [r.info.run_id for r in client.search_runs([experiment.experiment_id])]
    done = convscope("compare", *ids, "--runs-dir", str(runs), "--folds", "3")
    assert done.returncode == 0, done.stderr
    check_report(client, "convscope", ids, done.stdout, tmp_path / "dl")


def test_compare_against_a_tracking_server(mlflow_server: str, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    train_two(runs, "--mlflow-uri", mlflow_server, "--experiment", "cmp-http")
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("cmp-http")
    ids = [r.info.run_id for r in client.search_runs([experiment.experiment_id])]
    done = convscope("compare", *ids, "--mlflow-uri", mlflow_server, "--experiment", "cmp-http", "--folds", "3")
    assert done.returncode == 0, done.stderr
    check_report(client, "cmp-http", ids, done.stdout, tmp_path / "dl")


def test_compare_unknown_run_is_a_usage_error(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    done = convscope("compare", "0123456789abcdef", "--runs-dir", str(runs))
    assert done.returncode == 2 and "0123456789abcdef" in done.stderr and "Traceback" not in done.stderr


def test_compare_the_best_trials_of_a_study(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    study = convscope("search", "--runs-dir", str(runs), "--trials", "2", "--pruner", "none", "--preset", "tiny",
                      "--image-size", "32", "--depth", "3", "--fix", "epochs=1", "--fix", "synthetic_size=300",
                      "--fix", "analysis_size=60", "--study-name", "cmp", "--no-tensorboard", "--quiet")
    assert study.returncode == 0, study.stderr
    done = convscope("compare", "--study", "cmp", "--top", "2", "--runs-dir", str(runs), "--folds", "3")
    assert done.returncode == 0, done.stderr
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("convscope")
    trials = client.search_runs([experiment.experiment_id], "tags.`convscope.kind` = 'trial'")
    check_report(client, "convscope", [r.info.run_id for r in trials], done.stdout, tmp_path / "dl")


def test_compare_one_run_puts_its_epochs_side_by_side(tmp_path: Path) -> None:
    """One run compared with itself over time: each side-by-side picture holds its first, middle and
    last epoch, labelled; ``--epochs`` picks others."""
    import numpy as np
    from PIL import Image

    runs = tmp_path / "runs"
    done = convscope("train", "--runs-dir", str(runs), "--seed", "1", *SHORT[:5], "3", *SHORT[6:])
    assert done.returncode == 0, done.stderr
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("convscope")
    (run_id,) = [r.info.run_id for r in client.search_runs([experiment.experiment_id])]
    widths = {}
    for flag in ([], ["--epochs", "3"]):
        done = convscope("compare", run_id, "--runs-dir", str(runs), "--folds", "2", *flag)
        assert done.returncode == 0, done.stderr
        assert "side by side: " in done.stdout and "no pictures" not in done.stdout
        report = client.search_runs([experiment.experiment_id], "tags.`convscope.kind` = 'compare'",
                                    order_by=["attributes.start_time DESC"])[0]
        names = [Path(a.path).name for a in client.list_artifacts(report.info.run_id, "images")]
        (conv1,) = [n for n in names if n.startswith("side_by_side~feature_maps~conv1+") and n.endswith(".png")]
        path = client.download_artifacts(report.info.run_id, f"images/{conv1}", str(tmp_path / str(len(widths))))
        widths[tuple(flag)] = np.asarray(Image.open(path)).shape[1]
    assert widths[()] > 2.5 * widths[("--epochs", "3")]  # steps 0, 2, 3 (first, middle, last) against step 3 alone
