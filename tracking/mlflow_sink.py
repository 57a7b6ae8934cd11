"""MLflow sink: one run, addressed by explicit run id through ``mlflow.MlflowClient``.

Contract (on top of ``tracking.base``):
- Never touches MLflow's fluent "active run" state, so it is safe to drive from a
  background thread and to nest under a parent run created elsewhere.
- The experiment is fetched or created (with ``artifact_location`` on creation) and
  tagged ``mlflow.experimentKind=custom_model_development`` so MLflow 3's UI opens it
  in the classic-ML view.
- ``run_id=None`` creates a run (tagged ``mlflow.runName`` and, if given,
  ``mlflow.parentRunId``); ``run_id=...`` resumes that run (status back to RUNNING, a
  status suffix dropped from its name).
- Params are stringified, sent in chunks that respect MLflow's per-request limit
  and truncated to MLflow's value-length limit; on a resumed run a param that is
  already logged is skipped (MLflow refuses to change a param).
- ``log_config`` writes the artifact ``config.yaml`` (sections in the given order, tuples
  as lists; logging it again replaces it).
- Each ``log_metrics`` call is exactly one ``log_batch`` request.
- ``close`` maps FINISHED/FAILED/KILLED onto MLflow's statuses and PRUNED onto
  FINISHED, always tags ``convscope.status`` with the ``RunStatus`` value, ends the name
  of a run that did not finish in ``STATUS_SUFFIX`` (`` (pruned)``, `` (failed)``,
  `` (killed)``: MLflow's runs table shows the name, a green tick for pruned runs too and
  one red icon for failed and killed alike), is
  idempotent and only warns (``logging``) if the backend cannot be reached, keeping the
  error in ``close_error``.
  Note that MLflow's HTTP client retries a dead server before giving up
  (``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` / ``MLFLOW_HTTP_REQUEST_TIMEOUT``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

from convscope.tracking.base import RunStatus
from convscope.tracking.secrets import mask_secrets

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
STATUS_TAG = "convscope.status"
CONFIG_ARTIFACT = "config.yaml"
STATUS_SUFFIX = {status: f" ({status.value})" for status in (RunStatus.PRUNED, RunStatus.FAILED, RunStatus.KILLED)}

_MLFLOW_STATUS = {
    RunStatus.FINISHED: "FINISHED",
    RunStatus.FAILED: "FAILED",
    RunStatus.KILLED: "KILLED",
    RunStatus.PRUNED: "FINISHED",
}

_T = TypeVar("_T")


class _StoreFaultFilter(logging.Filter):
    """Drops MLflow's own traceback of a storage fault: the error is raised to the caller as well,
    and the caller says it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        from convscope.tracking.faults import store_fault

        error = record.exc_info[1] if record.exc_info else None
        return error is None or store_fault(error) is None


_STORE_FAULT_FILTER = _StoreFaultFilter()


def hush_store_fault_tracebacks() -> None:
    """Keep MLflow's SQL store from logging a traceback for a full or read-only database (idempotent);
    every other record of it is kept."""
    logger = logging.getLogger("mlflow.store.db.utils")
    if _STORE_FAULT_FILTER not in logger.filters:
        logger.addFilter(_STORE_FAULT_FILTER)


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _without_status(name: str) -> str:
    """``name`` without a ``STATUS_SUFFIX`` it ends in."""
    for suffix in STATUS_SUFFIX.values():
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _plain(value: Any) -> Any:
    """Mappings as dicts and sequences as lists, recursively, for ``yaml.safe_dump``."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def figure_artifact_file(key: str, step: int | None = None) -> str:
    """Artifact path of a figure: ``figures/{key}.png`` or ``figures/{key}_step{step:04d}.png``
    with every ``/`` of ``key`` replaced by ``_``."""
    name = key.replace("/", "_")
    if step is not None:
        name = f"{name}_step{step:04d}"
    return f"figures/{name}.png"


class MlflowTracker:
    """A ``Tracker`` writing to one MLflow run (see the module docstring for the contract).

    Args:
        tracking_uri: ``sqlite:///...`` for the embedded store or ``http(s)://...`` for a server.
        experiment: experiment name; created if missing.
        run_name: display name of a new run (MLflow picks one if None).
        artifact_location: used only when the experiment is created; a ``file://`` URI for
            the embedded store, None for a server (its proxied artifact store is used).
        parent_run_id: makes the new run a child run of this one.
        run_id: resume this existing run instead of creating one.
        tags: extra tags for a new run (set, too, on a resumed run).
        ui_url: base URL of the MLflow UI for ``links()``; defaults to an http(s) tracking URI.

    Raises:
        ImportError: mlflow is not installed.
        ValueError: the experiment or the run to resume was deleted.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        run_name: str | None = None,
        *,
        artifact_location: str | None = None,
        parent_run_id: str | None = None,
        run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        ui_url: str | None = None,
    ) -> None:
        try:
            import mlflow
            from mlflow.entities import Metric, Param, RunTag
            from mlflow.tracking.context.registry import resolve_tags
            from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
            from mlflow.utils.validation import (
                MAX_PARAM_VAL_LENGTH,
                MAX_PARAMS_TAGS_PER_BATCH,
            )
        except ImportError as error:
            raise ImportError(
                "MlflowTracker needs the 'mlflow' package: install it with "
                "`pip install mlflow`, or run without the MLflow sink."
            ) from error

        self._Metric, self._Param, self._RunTag = Metric, Param, RunTag
        self._max_batch = MAX_PARAMS_TAGS_PER_BATCH
        self._max_param_len = MAX_PARAM_VAL_LENGTH
        self._closed = False
        self.close_error: BaseException | None = None

        hush_store_fault_tracebacks()
        if tracking_uri.startswith("sqlite:///"):
            # sqlite creates the file but not its folder.
            Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = tracking_uri
        self.client = mlflow.MlflowClient(tracking_uri=tracking_uri)

        if run_id is None:
            self.experiment_id = self._get_or_create_experiment(experiment, artifact_location)
            run_tags: dict[str, str] = resolve_tags(dict(tags or {}))
            if run_name is not None:
                run_tags[MLFLOW_RUN_NAME] = run_name
            if parent_run_id is not None:
                run_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
            run = self.client.create_run(self.experiment_id, tags=run_tags, run_name=run_name)
            self._logged_params: dict[str, str] = {}
        else:
            run = self.client.get_run(run_id)
            if run.info.lifecycle_stage == "deleted":
                raise ValueError(
                    f"MLflow run {run_id} was deleted; restore it in the MLflow UI "
                    "(or `mlflow runs restore`) or start a new run instead of resuming."
                )
            self.experiment_id = run.info.experiment_id
            self._ensure_experiment_kind(self.client.get_experiment(self.experiment_id))
            self.client.update_run(run_id, status="RUNNING", name=_without_status(run.info.run_name or run_id))
            self._logged_params = dict(run.data.params)
        self.run_id: str = run.info.run_id
        self.artifact_uri: str = run.info.artifact_uri
        if run_id is not None and tags:
            self.set_tags(tags)  # a resumed run: the new invocation's tags

        parsed = urlparse(tracking_uri)
        base = ui_url or (tracking_uri if parsed.scheme in ("http", "https") else None)
        self.run_url: str | None = (
            f"{base.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"
            "?workflowType=machine_learning"
            if base
            else None
        )

    # -- experiment ---------------------------------------------------------------------

    def _get_or_create_experiment(self, name: str, artifact_location: str | None) -> str:
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return self.client.create_experiment(
                    name,
                    artifact_location=artifact_location,
                    tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
                )
            except MlflowException:
                # Another process (a parallel trial) may have created it meanwhile.
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            raise ValueError(
                f"MLflow experiment {name!r} is deleted; restore it "
                f"(`mlflow experiments restore --experiment-id {experiment.experiment_id}`) "
                "or choose another experiment name."
            )
        self._ensure_experiment_kind(experiment)
        return experiment.experiment_id

    def _ensure_experiment_kind(self, experiment: Any) -> None:
        if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            self.client.set_experiment_tag(
                experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND
            )

    # -- Tracker protocol ---------------------------------------------------------------

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params (stringified, truncated, chunked); params logged before are skipped."""
        fresh = []
        for key, value in params.items():
            text = str(value)[: self._max_param_len]
            previous = self._logged_params.get(key)
            if previous is not None:
                if previous != text:
                    log.warning(
                        "MLflow run %s already has param %r=%r; keeping it and ignoring %r",
                        self.run_id, key, previous, text,
                    )
                continue
            fresh.append(self._Param(key, text))
        for chunk in _chunks(fresh, self._max_batch):
            self.client.log_batch(self.run_id, params=chunk, synchronous=True)
            self._logged_params.update((p.key, p.value) for p in chunk)

    def log_config(self, config: Mapping[str, Any]) -> None:
        """The complete config as the YAML artifact ``config.yaml``."""
        import yaml

        text = yaml.safe_dump(_plain(config), sort_keys=False, default_flow_style=False, allow_unicode=True)
        self.client.log_text(self.run_id, text, CONFIG_ARTIFACT)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set run tags (stringified, chunked)."""
        items = [self._RunTag(key, str(value)) for key, value in tags.items()]
        for chunk in _chunks(items, self._max_batch):
            self.client.log_batch(self.run_id, tags=chunk, synchronous=True)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log all ``metrics`` at ``step`` in one ``log_batch`` request."""
        now = int(time.time() * 1000)
        batch = [self._Metric(key, float(value), now, step) for key, value in metrics.items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch, synchronous=True)

    def log_image(self, key: str, image: np.ndarray, step: int) -> None:
        """Log a stepped image (shown with a step slider on the run page)."""
        self.client.log_image(self.run_id, image, key=key, step=step, synchronous=True)

    def log_figure(self, key: str, figure: Figure, step: int | None = None) -> None:
        """Save ``figure`` as PNG at ``figure_artifact_file(key, step)``."""
        self.client.log_figure(self.run_id, figure, artifact_file=figure_artifact_file(key, step))

    def log_file(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a local file into the run's artifacts under ``artifact_path``."""
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def links(self) -> dict[str, str]:
        """Run/experiment ids, tracking URI and, where a UI is known, the run's URL."""
        links = {
            "mlflow_run_id": self.run_id,
            "mlflow_experiment_id": self.experiment_id,
            "mlflow_tracking_uri": self.tracking_uri,
            "mlflow_artifact_uri": self.artifact_uri,
        }
        if self.run_url is not None:
            links["mlflow_run_url"] = self.run_url
        return links

    def close(self, status: RunStatus = RunStatus.FINISHED) -> None:
        """Tag ``convscope.status`` and terminate the run; no-op when already closed.

        When the store cannot be written (gone, full, read-only) it warns once and keeps the
        error in ``close_error`` (None after a clean close) instead of raising."""
        if self._closed:
            return
        self._closed = True
        status = RunStatus(status)
        try:
            end_run(self.client, self.run_id, status)
        except Exception as error:  # the backend went away: the run's other sinks still close
            self.close_error = error
            log.warning(
                "could not close MLflow run %s as %s at %s: %s",
                self.run_id, status.value, mask_secrets(self.tracking_uri), mask_secrets(str(error).strip()),
            )


def end_run(client: Any, run_id: str, status: RunStatus, tags: Mapping[str, str] | None = None) -> None:
    """End the MLflow run ``run_id`` through ``client`` as ``MlflowTracker.close`` does: ``tags``,
    then ``convscope.status``, the name's ``STATUS_SUFFIX`` and MLflow's status. Raises what the
    client raises."""
    status = RunStatus(status)
    for key, value in (tags or {}).items():
        client.set_tag(run_id, key, str(value), synchronous=True)
    client.set_tag(run_id, STATUS_TAG, status.value, synchronous=True)
    current = client.get_run(run_id).info.run_name or run_id
    wanted = _without_status(current) + STATUS_SUFFIX.get(status, "")
    if wanted != current:
        client.update_run(run_id, name=wanted)
    client.set_terminated(run_id, status=_MLFLOW_STATUS[status])


def attach_to_run(tracking_uri: str, run_id: str, files: Sequence[Path], artifact_path: str,
                  tags: Mapping[str, str]) -> None:
    """Add ``files`` under ``artifact_path`` and set ``tags`` on an existing run, leaving its status,
    name and times as they are (a report about a finished run lives with that run)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path)
    for key, value in tags.items():
        client.set_tag(run_id, key, str(value), synchronous=True)


def logged_steps(tracking_uri: str, run_id: str, key: str) -> set[int]:
    """The steps at which ``run_id`` holds metric ``key``."""
    from mlflow import MlflowClient

    return {metric.step for metric in MlflowClient(tracking_uri).get_metric_history(run_id, key)}
