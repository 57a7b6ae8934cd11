"""The one tracking contract every sink implements.

A ``Tracker`` receives everything a run produces: params, the complete config, tags,
metrics, images, figures and files. Images are part of the protocol, so no caller ever reaches
into a backend client. Whoever opens a tracker closes it, exactly once, with a
``RunStatus``; ``close`` must flush anything buffered and must not raise for a
backend that already went away (the run's other sinks still need closing). A sink
that could not write its end (the store went away, is full or read-only) may say so
in an attribute ``close_error`` (None when it closed cleanly); ``tracking.lifecycle``
reads it to tell the user.

Conventions shared by all sinks:
- ``step`` is the epoch; step 0 is the state before training.
- ``key`` uses ``/`` to group (``feature_maps/conv3``); sinks keep it verbatim.
- images are ``numpy.ndarray`` of shape (H, W, 3), dtype uint8.
- figures are ``matplotlib.figure.Figure`` objects built without pyplot.
- ``log_params`` takes the few settings people compare runs by (a tracking UI shows
  them beside every chart); ``log_config`` takes the complete resolved config once,
  as nested sections (``{"model": {"depth": 5, ...}, ...}``), kept in full
  (MLflow: the ``config.yaml`` artifact; TensorBoard: the ``config`` text).
- ``log_file`` copies a local file into the run's artifacts under
  ``artifact_path`` (a folder); sinks without an artifact store ignore it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure


class RunStatus(str, enum.Enum):
    """How a run ended; each sink maps it onto its own vocabulary."""

    FINISHED = "finished"
    FAILED = "failed"
    KILLED = "killed"
    PRUNED = "pruned"


@runtime_checkable
class Tracker(Protocol):
    """What a run logs to. See the module docstring for the contract."""

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_config(self, config: Mapping[str, Any]) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_image(self, key: str, image: np.ndarray, step: int) -> None: ...

    def log_figure(self, key: str, figure: Figure, step: int | None = None) -> None: ...

    def log_file(self, path: str | Path, artifact_path: str | None = None) -> None: ...

    def links(self) -> dict[str, str]:
        """Where this run can be found (e.g. ``mlflow_run_id``, ``tensorboard_dir``)."""
        ...

    def close(self, status: RunStatus = RunStatus.FINISHED) -> None: ...


class NullTracker:
    """Accepts everything and keeps nothing."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_config(self, config: Mapping[str, Any]) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_image(self, key: str, image: np.ndarray, step: int) -> None:
        pass

    def log_figure(self, key: str, figure: Figure, step: int | None = None) -> None:
        pass

    def log_file(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def links(self) -> dict[str, str]:
        return {}

    def close(self, status: RunStatus = RunStatus.FINISHED) -> None:
        pass


class FanOut:
    """Sends every call to each sink in order; ``close`` closes all of them even if one fails."""

    def __init__(self, sinks: Sequence[Tracker]) -> None:
        self.sinks = list(sinks)

    def log_params(self, params: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            sink.log_params(params)

    def log_config(self, config: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            sink.log_config(config)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for sink in self.sinks:
            sink.set_tags(tags)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for sink in self.sinks:
            sink.log_metrics(metrics, step)

    def log_image(self, key: str, image: np.ndarray, step: int) -> None:
        for sink in self.sinks:
            sink.log_image(key, image, step)

    def log_figure(self, key: str, figure: Figure, step: int | None = None) -> None:
        for sink in self.sinks:
            sink.log_figure(key, figure, step)

    def log_file(self, path: str | Path, artifact_path: str | None = None) -> None:
        for sink in self.sinks:
            sink.log_file(path, artifact_path)

    def links(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for sink in self.sinks:
            merged.update(sink.links())
        return merged

    @property
    def close_error(self) -> BaseException | None:
        """The first sink's ``close_error`` (see the module docstring), None when all closed cleanly."""
        return next((error for sink in self.sinks if (error := getattr(sink, "close_error", None)) is not None), None)

    def close(self, status: RunStatus = RunStatus.FINISHED) -> None:
        errors: list[BaseException] = []
        for sink in self.sinks:
            try:
                sink.close(status)
            except Exception as error:  # keep closing the others
                errors.append(error)
        if errors:
            raise errors[0]
