"""The tracker backends the contract tests run over, and how each one is read back.

Every backend has an explicit capability set (``CAPABILITIES``): what it records and
can be read back. Tests are generated only for the (backend, capability) pairs that
apply, via ``backends_with``, so nothing is skipped for being "not applicable"; a
reader that a backend does not have raises instead of returning a quiet ``None``.
Backends locate their run through ``tracker.links()``.
"""

from __future__ import annotations

import io
import re
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from convscope.tracking.background import BackgroundTracker
from convscope.tracking.base import NullTracker, Tracker
from convscope.tracking.mlflow_sink import MlflowTracker
from convscope.tracking.tensorboard_sink import TensorBoardTracker

RNG = np.random.default_rng(0)
IMAGES = [RNG.integers(0, 256, size=(12, 16, 3), dtype=np.uint8) for _ in range(3)]
MLFLOW_STATUS = {"finished": "FINISHED", "failed": "FAILED", "killed": "KILLED", "pruned": "FINISHED"}

# capability -> the Backend method that reads it back
READERS = {
    "metrics": "metrics",
    "images": "image",
    "figures": "figures",
    "files": "file_text",
    "params": "params_text",
    "config": "config",
    "tags": "tags_text",
    "status": "status",
}
_MLFLOW = frozenset(READERS)
CAPABILITIES: dict[str, frozenset[str]] = {
    "null": frozenset(),  # keeps nothing; see test_null_tracker_accepts_everything
    "tensorboard": frozenset({"metrics", "images", "figures", "params", "config", "tags"}),
    "mlflow-sqlite": _MLFLOW,
    "mlflow-http": _MLFLOW,
    "background-mlflow-sqlite": _MLFLOW,
}
BACKENDS = list(CAPABILITIES)  # every backend; ``links`` applies to all of them


def backends_with(capability: str) -> list[str]:
    """The backends that record ``capability``, for ``parametrize("backend", ..., indirect=True)``."""
    if capability not in READERS:
        raise ValueError(f"unknown capability {capability!r}; known: {sorted(READERS)}")
    names = [name for name, caps in CAPABILITIES.items() if capability in caps]
    assert names, f"no backend records {capability}"
    return names


def small_figure() -> Figure:
    figure = Figure(figsize=(2, 1), dpi=50)
    figure.add_subplot().plot([0, 1, 2], [2, 0, 1])
    return figure


def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


class Backend:
    """Makes trackers of one kind and reads back what they recorded.

    A reader this backend lacks raises ``NotImplementedError``; ``CAPABILITIES`` keeps
    tests from calling it (``test_capability_table_matches_readers`` checks the two agree).
    """

    name = "?"

    def make(self, run_name: str) -> Tracker:
        raise NotImplementedError

    def _lacks(self, what: str) -> NotImplementedError:
        return NotImplementedError(f"{self.name} does not record {what}")

    def metrics(self, tracker: Tracker, key: str) -> dict[int, float]:
        raise self._lacks("metrics")

    def image(self, tracker: Tracker, key: str) -> dict[int, np.ndarray]:
        raise self._lacks("images")

    def params_text(self, tracker: Tracker) -> str:
        raise self._lacks("params")

    def tags_text(self, tracker: Tracker) -> str:
        raise self._lacks("tags")

    def config(self, tracker: Tracker) -> dict[str, str]:
        """The complete config as stored, flattened to ``section.field`` → text."""
        raise self._lacks("the config")

    def figures(self, tracker: Tracker) -> dict[tuple[str, int], tuple[int, int]]:
        """(key, step) -> (height, width) of the stored figure image."""
        raise self._lacks("figures")

    def file_text(self, tracker: Tracker, artifact_path: str, name: str) -> str:
        raise self._lacks("files")

    def status(self, tracker: Tracker) -> tuple[str, str]:
        """(backend status, ``convscope.status`` tag)."""
        raise self._lacks("the run status")


class NullBackend(Backend):
    name = "null"

    def make(self, run_name: str) -> Tracker:
        return NullTracker()


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
        return self._text(tracker, "params")

    def config(self, tracker: Tracker) -> dict[str, str]:
        """The ``config`` text table read back as ``section.field`` → value."""
        rows = [line.split(" | ") for line in self._text(tracker, "config").splitlines()[2:]]
        return {row[0].removeprefix("| "): row[1].removesuffix(" |") for row in rows}

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

    def config(self, tracker: Tracker) -> dict[str, str]:
        """The ``config.yaml`` artifact read back, flattened to ``section.field`` → str(value)."""
        import yaml

        local = self.client.download_artifacts(tracker.links()["mlflow_run_id"], "config.yaml")
        loaded = yaml.safe_load(Path(local).read_text())
        return {f"{section}.{key}": ",".join(map(str, value)) if isinstance(value, list) else str(value)
                for section, values in loaded.items() for key, value in values.items()}

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


# backend name -> the class that makes and reads it (``make_backend`` builds the instance)
BACKEND_CLASSES: dict[str, type[Backend]] = {
    "null": NullBackend,
    "tensorboard": TensorBoardBackend,
    "mlflow-sqlite": MlflowBackend,
    "mlflow-http": MlflowBackend,
    "background-mlflow-sqlite": MlflowBackend,
}


def make_backend(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Build backend ``name``; MLflow ones use the ``mlflow_server``/``sqlite_store`` fixtures."""
    if name == "null":
        return NullBackend()
    if name == "tensorboard":
        return TensorBoardBackend(tmp_path / "tb")
    if name == "mlflow-http":
        return MlflowBackend(name, request.getfixturevalue("mlflow_server"), None)
    uri, artifacts = request.getfixturevalue("sqlite_store")
    return MlflowBackend(name, uri, artifacts, background=name.startswith("background"))
