"""Where runs are stored: the embedded default under one folder, or URLs.

Embedded default (no server): ``<runs>/mlflow.db`` (MLflow sqlite store) with
artifacts in ``<runs>/mlartifacts``, TensorBoard events in
``<runs>/tensorboard/<experiment>/<run>``. ``--mlflow-uri`` or
``MLFLOW_TRACKING_URI`` replaces the MLflow store (e.g. a tracking server that
proxies artifacts).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tracking.base import FanOut, Tracker

DEFAULT_UI_HOST = "127.0.0.1"
DEFAULT_MLFLOW_PORT = 5000
DEFAULT_TENSORBOARD_PORT = 6006


@dataclass(frozen=True)
class Stores:
    runs_dir: Path
    mlflow_uri: str
    artifact_location: str | None  # only for the embedded store; a server decides its own
    ui_url: str | None  # where `convscope ui` (or the server) shows MLflow runs

    @property
    def tensorboard_root(self) -> Path:
        return self.runs_dir / "tensorboard"

    def tensorboard_dir(self, experiment: str, run_name: str) -> Path:
        return self.tensorboard_root / experiment / run_name

    def checkpoint_dir(self, experiment: str, run_name: str) -> Path:
        return self.runs_dir / "checkpoints" / experiment / run_name

    @property
    def embedded(self) -> bool:
        return self.artifact_location is not None


def without_password(url: str) -> str:
    """``url`` with the password of its user-info (``scheme://user:secret@host``) masked as ``***``."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def resolve_stores(runs_dir: str | Path, mlflow_uri: str = "") -> Stores:
    """Flag, then ``MLFLOW_TRACKING_URI``, then the embedded sqlite store under ``runs_dir``."""
    root = Path(runs_dir).expanduser().resolve()
    uri = mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri:
        ui = uri.rstrip("/") if uri.startswith(("http://", "https://")) else None
        return Stores(root, uri, None, ui)
    return Stores(
        root,
        f"sqlite:///{root / 'mlflow.db'}",
        (root / "mlartifacts").as_uri(),
        f"http://{DEFAULT_UI_HOST}:{DEFAULT_MLFLOW_PORT}",
    )


def open_tracker(
    stores: Stores,
    experiment: str,
    run_name: str,
    *,
    mlflow: bool = True,
    tensorboard: bool = True,
    parent_run_id: str | None = None,
    resume_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    tensorboard_dir: Path | None = None,
    hparams: Mapping[str, Any] | None = None,
) -> Tracker:
    """The sinks asked for, fanned out, behind one background worker.

    The caller owns the returned tracker and must ``close`` it with a status.
    ``tensorboard_dir`` overrides where the TensorBoard run goes (a study puts its
    trials under one folder); ``hparams`` are written through TensorBoard's hparams plugin.
    """
    from tracking.background import BackgroundTracker

    sinks: list[Tracker] = []
    if mlflow:
        from tracking.mlflow_sink import MlflowTracker

        with first_open_lock(stores):
            mlflow_sink = MlflowTracker(
                stores.mlflow_uri,
                experiment,
                run_name,
                artifact_location=stores.artifact_location,
                parent_run_id=parent_run_id,
                run_id=resume_run_id,
                tags=tags,
                ui_url=stores.ui_url,
            )
        sinks.append(mlflow_sink)
    if tensorboard:
        from tracking.tensorboard_sink import TensorBoardTracker

        log_dir = tensorboard_dir or stores.tensorboard_dir(experiment, run_name)
        sinks.append(TensorBoardTracker(log_dir, hparams=hparams) if hparams else TensorBoardTracker(log_dir))
    return BackgroundTracker(FanOut(sinks))


@contextmanager
def first_open_lock(stores: Stores) -> Iterator[None]:
    """Serialise opening the embedded MLflow store across processes: two processes creating
    ``mlflow.db`` at once race in MLflow's schema migration. A no-op for a server URI."""
    if not stores.embedded:
        yield
        return
    stores.runs_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (a single process per runs folder is safe anyway)
        yield
        return
    with open(stores.runs_dir / ".mlflow-open.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
