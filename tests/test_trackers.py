"""Tracker contract tests, read back through the real backends.

``TestTrackerContract`` runs each check over exactly the backends that record what it
checks (null, TensorBoard, MLflow on sqlite, MLflow over HTTP, and MLflow on sqlite
behind a ``BackgroundTracker``; see ``tracker_backends.CAPABILITIES``), in the spirit of
Optuna's storage tests. Pairs that do not apply are never generated, so nothing here is
skipped; the null tracker, which records nothing, has a test of its own.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tracker_backends import (
    BACKEND_CLASSES,
    BACKENDS,
    CAPABILITIES,
    IMAGES,
    MLFLOW_STATUS,
    READERS,
    Backend,
    MlflowBackend,
    TensorBoardBackend,
    backends_with,
    make_backend,
    small_figure,
)
from convscope.tracking.base import NullTracker, RunStatus, Tracker
from convscope.tracking.mlflow_sink import MlflowTracker
from convscope.tracking.tensorboard_sink import TensorBoardTracker


@pytest.fixture(scope="session")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """One embedded MLflow store per session (creating its schema takes seconds)."""
    root = tmp_path_factory.mktemp("mlflow_sqlite")
    return f"sqlite:///{root / 'mlflow.db'}", root / "artifacts"


@pytest.fixture
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """The backend named by ``parametrize("backend", backends_with(...), indirect=True)``."""
    return make_backend(request.param, request, tmp_path)


@pytest.fixture(params=["mlflow-sqlite", "mlflow-http"])
def mlflow_backend(request: pytest.FixtureRequest, tmp_path: Path) -> MlflowBackend:
    backend = make_backend(request.param, request, tmp_path)
    assert isinstance(backend, MlflowBackend)
    return backend


def test_capability_table_matches_readers() -> None:
    """A backend claims a capability exactly when its class implements the reader."""
    assert set(BACKEND_CLASSES) == set(CAPABILITIES)
    for name, cls in BACKEND_CLASSES.items():
        implemented = {
            cap for cap, reader in READERS.items() if getattr(cls, reader) is not getattr(Backend, reader)
        }
        assert implemented == CAPABILITIES[name], name
    with pytest.raises(ValueError, match="unknown capability"):
        backends_with("metric")


def test_null_tracker_accepts_everything(tmp_path: Path) -> None:
    path = tmp_path / "report.md"
    path.write_text("# depth study\n")
    tracker = NullTracker()
    assert isinstance(tracker, Tracker)
    assert tracker.log_params({f"p{i:03d}": i for i in range(250)} | {"long": "x" * 7000}) is None
    assert tracker.set_tags({"preset": "seed", "trial": "7"}) is None
    assert tracker.log_config({"model": {"depth": 5}}) is None
    for step, image in enumerate(IMAGES):
        assert tracker.log_metrics({"train/loss": 1.0 / (step + 1)}, step) is None
        assert tracker.log_image("feature_maps/conv1", image, step) is None
    assert tracker.log_figure("curves/loss", small_figure()) is None
    assert tracker.log_figure("weights", small_figure(), step=3) is None
    assert tracker.log_file(path, "reports") is None
    assert tracker.log_file(path) is None
    assert tracker.links() == {}
    tracker.close(RunStatus.KILLED)
    for status in RunStatus:  # closing again, with any status, is a no-op
        assert tracker.close(status) is None
    assert tracker.close() is None
    assert tracker.links() == {}


# -- the contract, per backend ----------------------------------------------------------


class TestTrackerContract:
    @pytest.mark.parametrize("backend", backends_with("metrics"), indirect=True)
    def test_metrics_at_several_steps(self, backend: Backend) -> None:
        tracker = backend.make("metrics")
        for step in range(4):
            tracker.log_metrics({"train/loss": 1.0 / (step + 1), "val/acc": 0.5 + step / 10}, step)
        tracker.close()
        loss = backend.metrics(tracker, "train/loss")
        assert loss == pytest.approx({0: 1.0, 1: 0.5, 2: 1 / 3, 3: 0.25})
        assert backend.metrics(tracker, "val/acc") == pytest.approx({s: 0.5 + s / 10 for s in range(4)})

    @pytest.mark.parametrize("backend", backends_with("images"), indirect=True)
    def test_images_per_step(self, backend: Backend) -> None:
        tracker = backend.make("images")
        for step, image in enumerate(IMAGES):
            tracker.log_image("feature_maps/conv1", image, step)
        tracker.close()
        images = backend.image(tracker, "feature_maps/conv1")
        assert sorted(images) == [0, 1, 2]
        for step, image in enumerate(IMAGES):
            np.testing.assert_array_equal(images[step], image)

    @pytest.mark.parametrize("backend", backends_with("figures"), indirect=True)
    def test_figures(self, backend: Backend) -> None:
        tracker = backend.make("figures")
        tracker.log_figure("curves/loss", small_figure())
        tracker.log_figure("weights", small_figure(), step=3)
        tracker.close()
        figures = backend.figures(tracker)
        expected_key = "curves_loss" if isinstance(backend, MlflowBackend) else "curves/loss"
        assert figures == {(expected_key, 0): (50, 100), ("weights", 3): (50, 100)}

    @pytest.mark.parametrize("backend", backends_with("files"), indirect=True)
    def test_file_artifact(self, backend: Backend, tmp_path: Path) -> None:
        path = tmp_path / "report.md"
        path.write_text("# depth study\n")
        tracker = backend.make("files")
        tracker.log_file(path, "reports")
        tracker.close()
        assert backend.file_text(tracker, "reports", "report.md") == "# depth study\n"

    @pytest.mark.parametrize("backend", backends_with("params"), indirect=True)
    def test_params_many_and_long(self, backend: Backend) -> None:
        params: dict[str, Any] = {f"p{i:03d}": i for i in range(250)}
        params["long"] = "x" * 7000
        params["layers"] = [16, 32]
        tracker = backend.make("params")
        tracker.log_params(params)
        tracker.close()
        text = backend.params_text(tracker)
        assert "p000" in text and "p249" in text and "[16, 32]" in text
        if isinstance(backend, MlflowBackend):
            stored = backend.run(tracker).data.params
            assert len(stored) == 252 and stored["p007"] == "7"
            assert stored["long"] == "x" * 6000  # MLflow's limit

    @pytest.mark.parametrize("backend", backends_with("config"), indirect=True)
    def test_config_kept_in_full(self, backend: Backend) -> None:
        config = {"model": {"depth": 5, "widths": (16, 32)}, "optim": {"lr": 0.01, "note": "a|b"}}
        tracker = backend.make("config")
        tracker.log_config(config)
        tracker.close()
        assert backend.config(tracker) == {
            "model.depth": "5", "model.widths": "16,32", "optim.lr": "0.01",
            "optim.note": "a\\|b" if isinstance(backend, TensorBoardBackend) else "a|b",
        }

    @pytest.mark.parametrize("backend", backends_with("tags"), indirect=True)
    def test_tags(self, backend: Backend) -> None:
        tracker = backend.make("tags")
        tracker.set_tags({"preset": "seed", "trial": "7"})
        tracker.close()
        text = backend.tags_text(tracker)
        assert "preset" in text and "seed" in text and "trial" in text

    @pytest.mark.parametrize("status", list(RunStatus))
    @pytest.mark.parametrize("backend", backends_with("status"), indirect=True)
    def test_closed_status(self, backend: Backend, status: RunStatus) -> None:
        tracker = backend.make(f"status-{status.value}")
        tracker.log_metrics({"loss": 1.0}, 0)
        tracker.close(status)
        assert backend.status(tracker) == (MLFLOW_STATUS[status.value], status.value)
        name = backend.run(tracker).info.run_name
        assert name == f"status-{status.value}" + ("" if status is RunStatus.FINISHED else f" ({status.value})")

    @pytest.mark.parametrize("backend", backends_with("metrics"), indirect=True)
    def test_close_is_idempotent(self, backend: Backend) -> None:
        tracker = backend.make("idempotent")
        tracker.log_metrics({"loss": 2.0}, 0)
        tracker.close(RunStatus.KILLED)
        tracker.close(RunStatus.FINISHED)  # no-op, must not raise
        assert backend.metrics(tracker, "loss") == {0: 2.0}

    @pytest.mark.parametrize("backend", backends_with("status"), indirect=True)
    def test_second_close_keeps_the_first_status(self, backend: Backend) -> None:
        tracker = backend.make("idempotent-status")
        tracker.log_metrics({"loss": 2.0}, 0)
        tracker.close(RunStatus.KILLED)
        tracker.close(RunStatus.FINISHED)  # no-op, must not raise
        assert backend.status(tracker) == ("KILLED", "killed")

    @pytest.mark.parametrize("backend", BACKENDS, indirect=True)
    def test_links(self, backend: Backend) -> None:
        tracker = backend.make("links")
        links = tracker.links()
        tracker.close()
        assert all(isinstance(v, str) and v for v in links.values())
        if isinstance(backend, TensorBoardBackend):
            assert links == {"tensorboard_dir": str(backend.root / "links")}
        elif isinstance(backend, MlflowBackend):
            run = backend.run(tracker)
            assert links["mlflow_run_id"] == run.info.run_id
            assert links["mlflow_experiment_id"] == run.info.experiment_id
            assert links["mlflow_tracking_uri"] == backend.uri
            if backend.uri.startswith("http"):
                assert links["mlflow_run_url"] == (
                    f"{backend.uri}/#/experiments/{run.info.experiment_id}/runs/"
                    f"{run.info.run_id}?workflowType=machine_learning"
                )
            else:
                assert "mlflow_run_url" not in links
        else:
            assert links == {}


# -- MLflow specifics ---------------------------------------------------------------------


class TestMlflowTracker:
    def test_experiment_kind_tag(self, mlflow_backend: MlflowBackend) -> None:
        client = mlflow_backend.client
        tracker = mlflow_backend.tracker("kind")
        tracker.close()
        tags = client.get_experiment(tracker.experiment_id).tags
        assert tags["mlflow.experimentKind"] == "custom_model_development"
        # an existing experiment lacking the tag gets it
        name = f"bare-{uuid.uuid4().hex[:8]}"
        eid = client.create_experiment(name)
        assert "mlflow.experimentKind" not in client.get_experiment(eid).tags
        MlflowTracker(mlflow_backend.uri, name, "r").close()
        assert client.get_experiment(eid).tags["mlflow.experimentKind"] == "custom_model_development"

    def test_artifact_location_on_creation(self, mlflow_backend: MlflowBackend) -> None:
        tracker = mlflow_backend.tracker("where")
        tracker.close()
        location = mlflow_backend.client.get_experiment(tracker.experiment_id).artifact_location
        if mlflow_backend.artifact_root is None:
            assert location.startswith("mlflow-artifacts:")  # proxied by the server
        else:
            assert location == (mlflow_backend.artifact_root / mlflow_backend.experiment).as_uri()

    def test_parent_and_child_runs(self, mlflow_backend: MlflowBackend) -> None:
        parent = mlflow_backend.tracker("study")
        children = [
            mlflow_backend.tracker(f"trial-{i}", parent_run_id=parent.run_id, tags={"trial": str(i)})
            for i in range(2)
        ]
        for child in children:
            child.close(RunStatus.PRUNED)
        parent.close()
        client = mlflow_backend.client
        found = client.search_runs(
            [parent.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}'"
        )
        assert {r.info.run_id for r in found} == {c.run_id for c in children}
        child = client.get_run(children[1].run_id)
        assert child.data.tags["mlflow.runName"] == "trial-1 (pruned)"  # the runs table shows the name
        assert child.data.tags["trial"] == "1"
        assert "mlflow.parentRunId" not in client.get_run(parent.run_id).data.tags

    def test_resume_run(self, mlflow_backend: MlflowBackend, caplog: pytest.LogCaptureFixture) -> None:
        first = mlflow_backend.tracker("resumable")
        first.log_params({"lr": 0.1, "depth": 5})
        first.log_metrics({"loss": 1.0}, 0)
        first.close(RunStatus.KILLED)
        assert mlflow_backend.client.get_run(first.run_id).info.run_name == "resumable (killed)"
        resumed = MlflowTracker(mlflow_backend.uri, mlflow_backend.experiment, run_id=first.run_id)
        again = mlflow_backend.client.get_run(first.run_id).info
        assert again.status == "RUNNING" and again.run_name == "resumable"  # running again, no stale status
        with caplog.at_level(logging.WARNING, logger="convscope.tracking.mlflow_sink"):
            resumed.log_params({"lr": 0.1, "depth": 6, "epochs": 3})  # must not raise
        assert "depth" in caplog.text
        resumed.log_metrics({"loss": 0.5}, 1)
        resumed.close()
        run = mlflow_backend.client.get_run(first.run_id)
        assert run.data.params == {"lr": "0.1", "depth": "5", "epochs": "3"}
        assert run.info.status == "FINISHED"
        assert mlflow_backend.metrics(resumed, "loss") == {0: 1.0, 1: 0.5}

    def test_ui_url_overrides_link_base(self, mlflow_backend: MlflowBackend) -> None:
        tracker = MlflowTracker(
            mlflow_backend.uri, mlflow_backend.experiment, "ui", ui_url="http://mlflow.example:5000/"
        )
        tracker.close()
        assert tracker.links()["mlflow_run_url"].startswith(
            f"http://mlflow.example:5000/#/experiments/{tracker.experiment_id}/runs/{tracker.run_id}"
        )

    def test_close_warns_when_backend_is_gone(
        self, mlflow_backend: MlflowBackend, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        tracker = mlflow_backend.tracker("gone")

        def unreachable(*args: Any, **kwargs: Any) -> None:
            raise ConnectionError("server went away")

        monkeypatch.setattr(tracker.client, "set_tag", unreachable)
        monkeypatch.setattr(tracker.client, "set_terminated", unreachable)
        with caplog.at_level(logging.WARNING, logger="convscope.tracking.mlflow_sink"):
            tracker.close(RunStatus.FAILED)
            tracker.close(RunStatus.FAILED)
        assert caplog.text.count("server went away") == 1


@pytest.mark.parametrize(
    ("module", "factory"),
    [
        ("mlflow", lambda tmp: MlflowTracker(f"sqlite:///{tmp}/x.db", "x")),
        ("torch.utils.tensorboard", lambda tmp: TensorBoardTracker(tmp)),
    ],
)
def test_missing_backend_gives_clear_error(
    module: str, factory: Callable[[Path], Tracker], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match="pip install"):
        factory(tmp_path)

