"""Reading runs back from MLflow for comparison: activation artifacts and activation statistics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STAT_PREFIXES = ("act_mean/", "act_zero_fraction/", "act_noise/")


@dataclass(frozen=True)
class FetchedRun:
    run_id: str
    name: str
    activations: Path  # local folder with the run's ``activations/`` artifacts
    stats: dict[str, dict[str, float]]  # statistic -> layer -> last logged value


def fetch_run(tracking_uri: str, run_id: str, destination: Path) -> FetchedRun:
    """Download ``activations/`` of ``run_id`` (embedded store or tracking server alike).

    Raises ValueError naming the run when it does not exist or has no activation artifacts.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        raise ValueError(f"run {run_id}: not found in {tracking_uri} ({str(error).splitlines()[0]})") from None
    if not client.list_artifacts(run_id, "activations"):
        raise ValueError(f"run {run_id} ({run.info.run_name}): has no activations/ artifacts; "
                         "train it with the per-epoch visuals on (no --no-visuals)")
    destination.mkdir(parents=True, exist_ok=True)
    folder = Path(client.download_artifacts(run_id, "activations", str(destination)))
    stats: dict[str, dict[str, float]] = {}
    for key, value in run.data.metrics.items():
        for prefix in STAT_PREFIXES:
            if key.startswith(prefix):
                stats.setdefault(prefix.rstrip("/"), {})[key[len(prefix):]] = value
    return FetchedRun(run_id, run.info.run_name or run_id, folder, stats)


@dataclass(frozen=True)
class RunRecord:
    """What a verdict about one run needs besides its activations: its learning curve and facts."""

    run_id: str
    name: str
    status: str
    experiment_id: str
    params: dict[str, str]
    tags: dict[str, str]
    curve: tuple[float, ...]  # val/accuracy after every epoch (steps 1, 2, …)
    val_images: int  # 0 when the run did not record it
    seconds: float = 0.0  # from start to end (0 while it runs)

    @property
    def val_chance(self) -> float | None:
        """Chance level on the validation split (the commonest class's share); None for runs that did
        not record it."""
        text = self.tags.get("data.val_chance", "")
        try:
            return float(text)
        except ValueError:
            return None


def run_record(tracking_uri: str, run_id: str) -> RunRecord:
    """The run's params, tags and validation-accuracy history; ValueError naming the run if it is missing."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        raise ValueError(f"run {run_id}: not found in {tracking_uri} ({str(error).splitlines()[0]})") from None
    history = sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, "val/accuracy"))
    by_step = {step: value for step, _, value in history if step >= 1}  # the latest value of a step wins (resume)
    images = run.data.tags.get("data.val_images", "")
    return RunRecord(run_id, run.info.run_name or run_id, run.info.status, run.info.experiment_id,
                     dict(run.data.params), dict(run.data.tags), tuple(by_step[s] for s in sorted(by_step)),
                     int(images) if images.isdigit() else 0,
                     max(0.0, ((run.info.end_time or 0) - (run.info.start_time or 0)) / 1000.0))


def latest_images(tracking_uri: str, run_id: str, keys: list[str], destination: Path) -> dict[str, Path]:
    """The highest-step full-resolution PNG of every image key in ``keys`` the run logged, downloaded."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    best: dict[str, tuple[int, str]] = {}
    for artifact in client.list_artifacts(run_id, "images"):
        name = artifact.path.rsplit("/", 1)[-1]
        if not name.endswith(".png") or "+step+" not in name:
            continue
        key, _, rest = name.partition("+step+")
        key = key.replace("~", "/")
        step = int(rest.split("+", 1)[0]) if rest.split("+", 1)[0].isdigit() else -1
        if key in keys and step > best.get(key, (-2, ""))[0]:
            best[key] = (step, artifact.path)
    destination.mkdir(parents=True, exist_ok=True)
    return {key: Path(client.download_artifacts(run_id, path, str(destination))) for key, (_, path) in best.items()}


def study_results(tracking_uri: str, experiment_id: str, kind: str,
                  tags: dict[str, str] | None = None) -> list[tuple[str, dict]]:
    """(parent run id, its ``depth/results.json``) of every finished ``kind`` study (``depth-study``,
    ``ablate-study``) in the experiment whose tags match ``tags``, newest first."""
    import json
    import tempfile

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    query = " and ".join([f"tags.`convscope.kind` = '{kind}'", "attributes.status = 'FINISHED'",
                          *(f"tags.`{key}` = '{value}'" for key, value in (tags or {}).items())])
    found = []
    for run in client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"], max_results=50):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = client.download_artifacts(run.info.run_id, "depth/results.json", tmp)
                found.append((run.info.run_id, json.loads(Path(path).read_text(encoding="utf-8"))))
            except Exception:  # a study from before results.json was written
                continue
    return found
