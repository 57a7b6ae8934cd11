"""Tracker contract tests, read back through the real backends.

``TestTrackerContract`` runs once per backend (null, TensorBoard, MLflow on sqlite,
MLflow over HTTP, and MLflow on sqlite behind a ``BackgroundTracker``), in the
spirit of Optuna's storage tests: what a backend cannot record is skipped, never
silently passed. Backends locate their run through ``tracker.links()``.
"""

from __future__ import annotations

import io
import logging
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from tracking.background import BackgroundTracker
from tracking.base import FanOut, NullTracker, RunStatus, Tracker
from tracking.mlflow_sink import MlflowTracker
from tracking.servers import (
    TENSORBOARD_IMAGE_SAMPLES,
    group_members,
    mlflow_server_command,
    start_process_group,
    stop_process_group,
    tensorboard_command,
)
from tracking.tensorboard_sink import TensorBoardTracker

RNG = np.random.default_rng(0)
IMAGES = [RNG.integers(0, 256, size=(12, 16, 3), dtype=np.uint8) for _ in range(3)]
MLFLOW_STATUS = {"finished": "FINISHED", "failed": "FAILED", "killed": "KILLED", "pruned": "FINISHED"}


def small_figure() -> Figure:
    figure = Figure(figsize=(2, 1), dpi=50)
    figure.add_subplot().plot([0, 1, 2], [2, 0, 1])
    return figure


# -- backends -------------------------------------------------------------------------


class Backend:
    """Makes trackers of one kind and reads what they recorded; ``None`` = not recorded."""

    name = "null"

    def make(self, run_name: str) -> Tracker:
        return NullTracker()

    def metrics(self, tracker: Tracker, key: str) -> dict[int, float] | None:
        return None

    def image(self, tracker: Tracker, key: str) -> dict[int, np.ndarray] | None:
        return None

    def params_text(self, tracker: Tracker) -> str | None:
        return None

    def tags_text(self, tracker: Tracker) -> str | None:
        return None

    def figures(self, tracker: Tracker) -> dict[tuple[str, int], tuple[int, int]] | None:
        """(key, step) -> (height, width) of the stored figure image."""
        return None

    def file_text(self, tracker: Tracker, artifact_path: str, name: str) -> str | None:
        return None

    def status(self, tracker: Tracker) -> tuple[str, str] | None:
        """(backend status, ``convscope.status`` tag)."""
        return None


def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


class TensorBoardBackend(Backend):
    name = "tensorboard"

    def __init__(self, root: Path) -> None:
        self.root = root

    def make(self, run_name: str) -> Tracker:
        return TensorBoardTracker(self.root / run_name)

    def _acc(self, tracker: Tracker) -> Any:
        from tensorboard.backend.event_processing import event_accumulator as ea

        guidance = {ea.IMAGES: 0, ea.SCALARS: 0, ea.TENSORS: 0}  # 0 = keep all
        return ea.EventAccumulator(tracker.links()["tensorboard_dir"], size_guidance=guidance).Reload()

    def metrics(self, tracker: Tracker, key: str) -> dict[int, float]:
        return {e.step: e.value for e in self._acc(tracker).Scalars(key)}

    def image(self, tracker: Tracker, key: str) -> dict[int, np.ndarray]:
        return {e.step: _decode(e.encoded_image_string) for e in self._acc(tracker).Images(key)}

    def _text(self, tracker: Tracker, tag: str) -> str:
        events = self._acc(tracker).Tensors(f"{tag}/text_summary")
        return "\n".join(v.decode() for e in events for v in e.tensor_proto.string_val)

    def params_text(self, tracker: Tracker) -> str:
        return self._text(tracker, "config")

    def tags_text(self, tracker: Tracker) -> str:
        return self._text(tracker, "tags")

    def figures(self, tracker: Tracker) -> dict[tuple[str, int], tuple[int, int]]:
        acc = self._acc(tracker)
        return {
            (tag, e.step): (e.height, e.width)
            for tag in acc.Tags()["images"]
            for e in acc.Images(tag)
        }


class MlflowBackend(Backend):
    def __init__(self, name: str, uri: str, artifact_root: Path | None, background: bool = False):
        import mlflow

        self.name, self.uri, self.artifact_root, self.background = name, uri, artifact_root, background
        self.experiment = f"exp-{uuid.uuid4().hex[:10]}"
        self.client = mlflow.MlflowClient(uri)

    def tracker(self, run_name: str, **kwargs: Any) -> MlflowTracker:
        location = None
        if self.artifact_root is not None:
            location = (self.artifact_root / self.experiment).as_uri()
        return MlflowTracker(
            self.uri, self.experiment, run_name, artifact_location=location, **kwargs
        )

    def make(self, run_name: str) -> Tracker:
        tracker = self.tracker(run_name)
        return BackgroundTracker(tracker, maxsize=2) if self.background else tracker

    def run(self, tracker: Tracker) -> Any:
        return self.client.get_run(tracker.links()["mlflow_run_id"])

    def metrics(self, tracker: Tracker, key: str) -> dict[int, float]:
        history = self.client.get_metric_history(tracker.links()["mlflow_run_id"], key)
        return {m.step: m.value for m in history}

    def image(self, tracker: Tracker, key: str) -> dict[int, np.ndarray]:
        run_id = tracker.links()["mlflow_run_id"]
        pattern = re.compile(re.escape(key.replace("/", "~")) + r"\+step\+(\d+)\+.*[0-9a-f]\.png$")
        found = {}
        for info in self.client.list_artifacts(run_id, "images"):
            match = pattern.search(info.path)
            if match:
                local = self.client.download_artifacts(run_id, info.path)
                found[int(match.group(1))] = _decode(Path(local).read_bytes())
        return found

    def params_text(self, tracker: Tracker) -> str:
        return repr(self.run(tracker).data.params)

    def tags_text(self, tracker: Tracker) -> str:
        return repr(self.run(tracker).data.tags)

    def figures(self, tracker: Tracker) -> dict[tuple[str, int], tuple[int, int]]:
        run_id = tracker.links()["mlflow_run_id"]
        found = {}
        for info in self.client.list_artifacts(run_id, "figures"):
            match = re.fullmatch(r"figures/(.+?)(?:_step(\d{4}))?\.png", info.path)
            assert match, info.path
            image = _decode(Path(self.client.download_artifacts(run_id, info.path)).read_bytes())
            found[(match.group(1), int(match.group(2) or 0))] = image.shape[:2]
        return found

    def file_text(self, tracker: Tracker, artifact_path: str, name: str) -> str:
        run_id = tracker.links()["mlflow_run_id"]
        listed = [info.path for info in self.client.list_artifacts(run_id, artifact_path)]
        assert f"{artifact_path}/{name}" in listed
        local = self.client.download_artifacts(run_id, f"{artifact_path}/{name}")
        return Path(local).read_text()

    def status(self, tracker: Tracker) -> tuple[str, str]:
        run = self.run(tracker)
        return run.info.status, run.data.tags.get("convscope.status", "")


@pytest.fixture(scope="session")
def sqlite_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """One embedded MLflow store per session (creating its schema takes seconds)."""
    root = tmp_path_factory.mktemp("mlflow_sqlite")
    return f"sqlite:///{root / 'mlflow.db'}", root / "artifacts"


BACKENDS = ["null", "tensorboard", "mlflow-sqlite", "mlflow-http", "background-mlflow-sqlite"]


def make_backend(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if name == "null":
        return Backend()
    if name == "tensorboard":
        return TensorBoardBackend(tmp_path / "tb")
    if name == "mlflow-http":
        return MlflowBackend(name, request.getfixturevalue("mlflow_server"), None)
    uri, artifacts = request.getfixturevalue("sqlite_store")
    return MlflowBackend(name, uri, artifacts, background=name.startswith("background"))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return make_backend(request.param, request, tmp_path)


@pytest.fixture(params=["mlflow-sqlite", "mlflow-http"])
def mlflow_backend(request: pytest.FixtureRequest, tmp_path: Path) -> MlflowBackend:
    backend = make_backend(request.param, request, tmp_path)
    assert isinstance(backend, MlflowBackend)
    return backend


def recorded(value: Any, backend: Backend, what: str) -> Any:
    if value is None:
        pytest.skip(f"{backend.name} does not record {what}")
    return value


# -- the contract, per backend ----------------------------------------------------------


class TestTrackerContract:
    def test_metrics_at_several_steps(self, backend: Backend) -> None:
        tracker = backend.make("metrics")
        for step in range(4):
            tracker.log_metrics({"train/loss": 1.0 / (step + 1), "val/acc": 0.5 + step / 10}, step)
        tracker.close()
        loss = recorded(backend.metrics(tracker, "train/loss"), backend, "metrics")
        assert loss == pytest.approx({0: 1.0, 1: 0.5, 2: 1 / 3, 3: 0.25})
        assert backend.metrics(tracker, "val/acc") == pytest.approx({s: 0.5 + s / 10 for s in range(4)})

    def test_images_per_step(self, backend: Backend) -> None:
        tracker = backend.make("images")
        for step, image in enumerate(IMAGES):
            tracker.log_image("feature_maps/conv1", image, step)
        tracker.close()
        images = recorded(backend.image(tracker, "feature_maps/conv1"), backend, "images")
        assert sorted(images) == [0, 1, 2]
        for step, image in enumerate(IMAGES):
            np.testing.assert_array_equal(images[step], image)

    def test_figures(self, backend: Backend) -> None:
        tracker = backend.make("figures")
        tracker.log_figure("curves/loss", small_figure())
        tracker.log_figure("weights", small_figure(), step=3)
        tracker.close()
        figures = recorded(backend.figures(tracker), backend, "figures")
        expected_key = "curves_loss" if isinstance(backend, MlflowBackend) else "curves/loss"
        assert figures == {(expected_key, 0): (50, 100), ("weights", 3): (50, 100)}

    def test_file_artifact(self, backend: Backend, tmp_path: Path) -> None:
        path = tmp_path / "report.md"
        path.write_text("# depth study\n")
        tracker = backend.make("files")
        tracker.log_file(path, "reports")
        tracker.close()
        text = recorded(backend.file_text(tracker, "reports", "report.md"), backend, "files")
        assert text == "# depth study\n"

    def test_params_many_and_long(self, backend: Backend) -> None:
        params: dict[str, Any] = {f"p{i:03d}": i for i in range(250)}
        params["long"] = "x" * 7000
        params["layers"] = [16, 32]
        tracker = backend.make("params")
        tracker.log_params(params)
        tracker.close()
        text = recorded(backend.params_text(tracker), backend, "params")
        assert "p000" in text and "p249" in text and "[16, 32]" in text
        if isinstance(backend, MlflowBackend):
            stored = backend.run(tracker).data.params
            assert len(stored) == 252 and stored["p007"] == "7"
            assert stored["long"] == "x" * 6000  # MLflow's limit

    def test_tags(self, backend: Backend) -> None:
        tracker = backend.make("tags")
        tracker.set_tags({"preset": "seed", "trial": "7"})
        tracker.close()
        text = recorded(backend.tags_text(tracker), backend, "tags")
        assert "preset" in text and "seed" in text and "trial" in text

    @pytest.mark.parametrize("status", list(RunStatus))
    def test_closed_status(self, backend: Backend, status: RunStatus) -> None:
        tracker = backend.make(f"status-{status.value}")
        tracker.log_metrics({"loss": 1.0}, 0)
        tracker.close(status)
        closed = recorded(backend.status(tracker), backend, "the run status")
        assert closed == (MLFLOW_STATUS[status.value], status.value)

    def test_close_is_idempotent(self, backend: Backend) -> None:
        tracker = backend.make("idempotent")
        tracker.log_metrics({"loss": 2.0}, 0)
        tracker.close(RunStatus.KILLED)
        tracker.close(RunStatus.FINISHED)  # no-op, must not raise
        assert recorded(backend.metrics(tracker, "loss"), backend, "metrics") == {0: 2.0}
        if backend.status(tracker) is not None:
            assert backend.status(tracker) == ("KILLED", "killed")

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
        assert child.data.tags["mlflow.runName"] == "trial-1"
        assert child.data.tags["trial"] == "1"
        assert "mlflow.parentRunId" not in client.get_run(parent.run_id).data.tags

    def test_resume_run(self, mlflow_backend: MlflowBackend, caplog: pytest.LogCaptureFixture) -> None:
        first = mlflow_backend.tracker("resumable")
        first.log_params({"lr": 0.1, "depth": 5})
        first.log_metrics({"loss": 1.0}, 0)
        first.close(RunStatus.KILLED)
        resumed = MlflowTracker(mlflow_backend.uri, mlflow_backend.experiment, run_id=first.run_id)
        assert mlflow_backend.client.get_run(first.run_id).info.status == "RUNNING"
        with caplog.at_level(logging.WARNING, logger="tracking.mlflow_sink"):
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
        with caplog.at_level(logging.WARNING, logger="tracking.mlflow_sink"):
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


# -- FanOut and BackgroundTracker ---------------------------------------------------------


class Recorder(NullTracker):
    """Records calls; optionally slow, failing or blocking."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None,
                 gate: threading.Event | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.delay, self.fail_on, self.gate = delay, fail_on, gate
        self.started = threading.Event()

    def _record(self, *call: Any) -> None:
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        time.sleep(self.delay)
        if call[0] == self.fail_on:
            raise RuntimeError(f"{call[0]} exploded")
        self.calls.append(call)

    def log_metrics(self, metrics: Any, step: int) -> None:
        self._record("log_metrics", dict(metrics), step)

    def log_image(self, key: str, image: Any, step: int) -> None:
        self._record("log_image", key, step)

    def close(self, status: RunStatus = RunStatus.FINISHED) -> None:
        self._record("close", status)


def test_fanout_closes_every_sink_even_if_one_raises() -> None:
    first, broken, last = Recorder(), Recorder(fail_on="close"), Recorder()
    with pytest.raises(RuntimeError, match="close exploded"):
        FanOut([first, broken, last]).close(RunStatus.KILLED)
    assert first.calls == [("close", RunStatus.KILLED)]
    assert last.calls == [("close", RunStatus.KILLED)]


class TestBackgroundTracker:
    def test_order_is_kept_and_close_flushes(self) -> None:
        inner = Recorder(delay=0.01)
        bg = BackgroundTracker(inner, maxsize=4)
        for step in range(5):
            bg.log_metrics({"loss": step}, step)
            bg.submit(lambda s=step: bg.inner.log_image("maps", None, s))
        bg.close(RunStatus.PRUNED)
        expected: list[tuple[Any, ...]] = []
        for step in range(5):
            expected += [("log_metrics", {"loss": step}, step), ("log_image", "maps", step)]
        assert inner.calls == expected + [("close", RunStatus.PRUNED)]
        assert not bg._thread.is_alive()

    def test_flush_waits_for_pending_calls(self) -> None:
        inner = Recorder(delay=0.02)
        bg = BackgroundTracker(inner)
        for step in range(5):
            bg.log_metrics({"m": 1.0}, step)
        bg.flush()
        assert [c[2] for c in inner.calls] == [0, 1, 2, 3, 4]
        bg.close()

    def test_failures_are_counted_and_later_jobs_still_run(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        inner = Recorder(fail_on="log_image")
        bg = BackgroundTracker(inner)

        def render_and_crash() -> None:
            raise ValueError("bad activations")

        with caplog.at_level(logging.WARNING, logger="tracking.background"):
            bg.submit(render_and_crash)
            bg.log_image("feature_maps/conv1", None, 2)
            bg.log_metrics({"loss": 0.1}, 3)
            bg.flush()
        assert bg.errors == 2
        assert "render_and_crash" in caplog.text and "bad activations" in caplog.text
        assert "log_image('feature_maps/conv1', step=2)" in caplog.text
        assert inner.calls == [("log_metrics", {"loss": 0.1}, 3)]
        bg.close()
        assert inner.calls[-1] == ("close", RunStatus.FINISHED)

    def test_back_pressure_blocks_the_caller(self) -> None:
        gate = threading.Event()
        inner = Recorder(gate=gate)
        bg = BackgroundTracker(inner, maxsize=1)
        bg.log_metrics({"m": 0}, 0)
        assert inner.started.wait(5)  # the worker holds call 0; call 1 fills the queue
        bg.log_metrics({"m": 1}, 1)
        third = threading.Thread(target=bg.log_metrics, args=({"m": 2}, 2))
        third.start()
        third.join(0.3)
        assert third.is_alive(), "a full queue must block the caller"
        gate.set()
        third.join(5)
        assert not third.is_alive()
        bg.close()
        assert [c[2] for c in inner.calls if c[0] == "log_metrics"] == [0, 1, 2]

    def test_jobs_may_log_to_the_tracker_itself(self) -> None:
        inner = Recorder()
        bg = BackgroundTracker(inner, maxsize=1)
        for step in range(3):  # would deadlock on the full queue if re-enqueued
            bg.submit(lambda s=step: bg.log_image("maps", None, s))
        bg.close()
        assert [c[2] for c in inner.calls if c[0] == "log_image"] == [0, 1, 2]

    def test_close_is_idempotent_and_later_calls_raise(self) -> None:
        inner = Recorder()
        bg = BackgroundTracker(inner)
        bg.close(RunStatus.FAILED)
        bg.close(RunStatus.FINISHED)
        assert inner.calls == [("close", RunStatus.FAILED)]
        with pytest.raises(RuntimeError, match="closed"):
            bg.log_metrics({"m": 1}, 0)

    def test_close_after_keyboard_interrupt(self) -> None:
        inner = Recorder(delay=0.01)
        bg = BackgroundTracker(inner, maxsize=2)
        try:
            for step in range(1000):
                bg.log_metrics({"m": step}, step)
                if step == 5:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            bg.close(RunStatus.KILLED)
        assert [c[2] for c in inner.calls[:-1]] == list(range(6))
        assert inner.calls[-1] == ("close", RunStatus.KILLED)

    def test_links_delegate(self, tmp_path: Path) -> None:
        bg = BackgroundTracker(TensorBoardTracker(tmp_path))
        assert bg.links() == {"tensorboard_dir": str(tmp_path)}
        bg.close()


# -- servers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "timeout"),
    [("sleep 300 & sleep 300", 10.0), ("trap '' TERM; sleep 300 & sleep 300", 0.5)],
    ids=["sigterm", "sigkill-when-term-ignored"],
)
def test_stop_process_group_kills_children(script: str, timeout: float, tmp_path: Path) -> None:
    proc = start_process_group(["bash", "-c", script], tmp_path / "log.txt")
    deadline = time.monotonic() + 5
    while len(group_members(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    members = group_members(proc.pid)
    assert len(members) >= 2, members
    stop_process_group(proc, timeout=timeout)
    assert proc.returncode is not None
    assert group_members(proc.pid) == []
    for pid in members:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().split(")")[-1].split()[0] == "Z"


def test_server_commands() -> None:
    tb = tensorboard_command("runs/tb", "127.0.0.1", 6006)
    assert Path(tb[0]).name == "tensorboard" or tb[:3] == [sys.executable, "-m", "tensorboard"]
    assert tb[tb.index("--samples_per_plugin") + 1] == f"images={TENSORBOARD_IMAGE_SAMPLES}"
    assert TENSORBOARD_IMAGE_SAMPLES > 0
    ml = mlflow_server_command("sqlite:///db", "127.0.0.1", 5000, artifacts_destination="/a")
    assert "server" in ml and ml[ml.index("--artifacts-destination") + 1] == "/a"
    assert "--serve-artifacts" in ml
    assert "--no-serve-artifacts" in mlflow_server_command("sqlite:///db", "h", 1, serve_artifacts=False)
    with pytest.raises(ValueError, match="ui_only"):
        mlflow_server_command("sqlite:///db", "h", 1, ui_only=True, artifacts_destination="/a")
