"""Reading runs back from MLflow for comparison: activation artifacts and activation statistics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STAT_PREFIXES = ("act_mean/", "act_zero_fraction/", "act_hf_share/")


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
