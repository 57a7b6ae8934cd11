"""``convscope evaluate MODEL --data DIR``: a trained network scored on a folder it never saw. The
accuracy is what loading the MLflow model and predicting gives; bad input is one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from PIL import Image

from convscope.analysis.evaluate import Evaluation
from e2e_helpers import convscope

CLASSES = ("Cat", "Dog")


def _photo_folder(root: Path, per_class: int, seed: int) -> Path:
    """Cats bright on the left, dogs bright on the right, with noise: learnable in two epochs."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 90, (40, 48, 3), dtype=np.uint8)
            pixels[:, :24] += 150 if k == 0 else 0
            pixels[:, 24:] += 150 if k == 1 else 0
            Image.fromarray(pixels).save(root / name / f"{name.lower()}{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    data = _photo_folder(root / "train", 60, seed=0)
    runs = root / "runs"
    done = convscope("train", "--data", str(data), "--preset", "tiny", "--image-size", "32", "--epochs", "2",
                     "--batch-size", "32", "--no-tensorboard", "--no-visuals", "--runs-dir", str(runs), "--quiet")
    assert done.returncode == 0, done.stderr
    (run,) = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}").search_runs(["1"])
    test = _photo_folder(root / "test", 25, seed=1)
    (test / "Dog" / "broken.jpg").write_bytes(b"not a jpeg")
    return runs, run.info.run_id, test


@pytest.mark.slow
def test_evaluate_prints_what_the_loaded_model_predicts_and_logs_it(trained: tuple[Path, str, Path]) -> None:
    runs, run_id, test = trained
    done = convscope("evaluate", run_id, "--data", str(test), "--runs-dir", str(runs))
    assert done.returncode == 0, done.stderr
    line = done.stdout.splitlines()[0]
    assert "test accuracy" in line and "95% interval" in line and "on 50 photos" in line and "1 unreadable" in line
    printed = float(line.split("test accuracy ")[1].split()[0])

    files = sorted(p for p in test.rglob("*.png"))
    uri = f"sqlite:///{runs / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    finally:
        mlflow.set_tracking_uri("")
    predicted = model.predict(pd.DataFrame({"image": [p.read_bytes() for p in files]}))
    truth = [p.parent.name for p in files]
    assert printed == pytest.approx(np.mean(predicted.idxmax(axis=1).to_numpy() == np.array(truth)), abs=1e-4)

    client = MlflowClient(uri)
    (evaluation,) = client.search_runs(["1"], "tags.`convscope.kind` = 'evaluation'")
    assert evaluation.data.metrics["test/accuracy"] == pytest.approx(printed, abs=1e-4)
    assert evaluation.data.tags["convscope.evaluated_model"] == f"runs:/{run_id}/model"
    logged = {a.path for a in client.list_artifacts(evaluation.info.run_id, "figures")}
    assert {"figures/test_confusion_matrix.png", "figures/test_most_confidently_wrong.png"} <= logged, logged
    assert "data/skipped_files.csv" in {a.path for a in client.list_artifacts(evaluation.info.run_id, "data")}
    named = done.stdout.split("  in it: ")[1].splitlines()[0]
    logged |= {a.path for a in client.list_artifacts(evaluation.info.run_id, "evaluation")}
    assert [path for path in named.replace(",", " ").split() if "/" in path and path not in logged] == [], named


@pytest.mark.slow
def test_bad_input_is_one_line_and_exit_2(trained: tuple[Path, str, Path], tmp_path: Path) -> None:
    runs, run_id, test = trained
    one_class = tmp_path / "one"
    (one_class / "Cat").mkdir(parents=True)
    (one_class / "Cat" / "a.png").write_bytes((test / "Cat" / "cat000.png").read_bytes())
    other = _photo_folder(tmp_path / "other", 1, seed=2)
    (other / "Dog").rename(other / "Fox")
    unrelated = tmp_path / "unrelated"  # e.g. --data /tmp: folders, some empty, none a class of the model's
    for name in ("a", "b", "c", "d", "e", "f", "g"):
        (unrelated / name).mkdir(parents=True)
    cases = {
        "no such run": ([f"{'0' * 32}", "--data", str(test)], "no MLflow model there"),
        "no such study": (["nosuchstudy", "--data", str(test)], "models:/nosuchstudy@champion"),
        "no folder": ([run_id, "--data", str(tmp_path / "missing")], "no such folder"),
        "one class": ([run_id, "--data", str(one_class)], "found 1 class folder"),
        "other classes": ([run_id, "--data", str(other)], "missing Dog; unknown to the model Fox"),
        "unrelated folders": ([run_id, "--data", str(unrelated)],
                              "not the model's classes (Cat, Dog): missing Cat, Dog; unknown to the model a, b, c, d, e "
                              "and 2 more"),
    }
    for label, (argv, needle) in cases.items():
        done = convscope("evaluate", *argv, "--runs-dir", str(runs), "--no-log")
        assert done.returncode == 2, (label, done.stdout, done.stderr)
        assert needle in done.stderr and "Traceback" not in done.stderr, (label, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, (label, done.stderr)


def test_the_interval_and_the_confusion_matrix() -> None:
    labels = np.array([0] * 50 + [1] * 50)
    probabilities = np.zeros((100, 2))
    probabilities[np.arange(100), labels] = 0.9
    probabilities[np.arange(100), 1 - labels] = 0.1
    probabilities[[0, 1, 60]] = [[0.2, 0.8], [0.4, 0.6], [0.95, 0.05]]  # three wrong
    evaluation = Evaluation(list(CLASSES), [f"f{i}" for i in range(100)], labels, probabilities)
    assert evaluation.accuracy == 0.97
    low, high = evaluation.interval()
    assert 0.91 < low < 0.97 < high < 0.995  # Wilson: asymmetric, inside [0, 1]
    assert evaluation.confusion().tolist() == [[48, 2], [1, 49]]
    assert evaluation.most_confidently_wrong() == [60, 0, 1]
    assert evaluation.per_class() == {"Cat": 0.96, "Dog": 0.98}
