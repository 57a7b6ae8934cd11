"""Running the real entry point and reading runs back through MLflow and TensorBoard."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from mlflow import MlflowClient
from safetensors.torch import load_file

CONV_LAYERS_SEED = ["conv1", "conv2", "conv3", "conv4", "conv5"]
SEED_SHAPES = {"conv1": (16, 31, 31), "conv2": (32, 15, 15), "conv3": (64, 7, 7), "conv4": (128, 3, 3), "conv5": (256, 1, 1)}
FAST = ["--synthetic-size", "512", "--batch-size", "64", "--analysis-size", "64"]


def convscope(*argv: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``convscope`` as a user would (the console script's module), capturing output."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("MLFLOW_TRACKING_URI", None) if env is None or "MLFLOW_TRACKING_URI" not in env else None
    return subprocess.run(
        [sys.executable, "-m", "convscope", *argv], capture_output=True, text=True, env=full_env, timeout=timeout
    )


@dataclass
class MlflowRun:
    client: MlflowClient
    run_id: str

    @property
    def info(self):  # type: ignore[no-untyped-def]
        return self.client.get_run(self.run_id)

    def image_steps(self, key: str) -> list[int]:
        """Steps at which ``log_image(key=...)`` stored an image (full-size PNGs only)."""
        sanitized = key.replace("/", "~")
        steps = []
        for artifact in self.client.list_artifacts(self.run_id, "images"):
            name = Path(artifact.path).name
            if name.startswith(sanitized + "+step+") and name.endswith(".png"):
                steps.append(int(name.split("+")[2]))
        return sorted(steps)

    def metric_steps(self, key: str) -> list[int]:
        return sorted(m.step for m in self.client.get_metric_history(self.run_id, key))

    def artifact_names(self, path: str) -> list[str]:
        return sorted(Path(a.path).name for a in self.client.list_artifacts(self.run_id, path))

    def download(self, path: str, dst: Path) -> Path:
        dst.mkdir(parents=True, exist_ok=True)
        return Path(self.client.download_artifacts(self.run_id, path, str(dst)))


def only_run(tracking_uri: str, experiment: str = "convscope") -> MlflowRun:
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment} in {tracking_uri}"
    runs = client.search_runs([found.experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return MlflowRun(client, runs[0].info.run_id)


def check_mlflow_run(run: MlflowRun, tmp: Path, epochs: int = 2) -> None:
    """Everything a finished seed run of ``epochs`` epochs must have logged to MLflow."""
    steps = list(range(epochs + 1))
    info = run.info
    assert info.info.status == "FINISHED"
    experiment = run.client.get_experiment(info.info.experiment_id)
    assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development"
    params = info.data.params
    # the few settings a run is compared by, named like their flags; facts are tags
    assert params == {"preset": "seed", "depth": "5", "epochs": str(epochs), "synthetic_size": "512",
                      "batch_size": "64"}, params
    assert info.data.tags["model.parameters"] == "409682" and info.data.tags["model.widths"] == "16,32,64,128,256"
    config = yaml.safe_load(run.download("config.yaml", tmp / "config").read_text())
    assert config["model"]["depth"] == 5 and config["optim"]["epochs"] == epochs and "tracking" in config
    assert info.data.tags["data.classes"] == "0:horizontal,1:vertical"
    assert "data.fingerprint" in info.data.tags and "torch.version" in info.data.tags
    for layer in CONV_LAYERS_SEED:
        assert run.image_steps(f"feature_maps/{layer}") == steps, layer
        assert run.image_steps(f"all_channels/{layer}") == steps, layer
        assert run.metric_steps(f"act_mean/{layer}") == steps
        assert run.metric_steps(f"act_zero_fraction/{layer}") == steps
    assert run.image_steps("saliency") == steps
    assert run.image_steps("filters/conv1") == steps
    assert run.metric_steps("act_noise/conv3") == steps  # 7×7 maps, the smallest that get the measure
    assert run.metric_steps("act_noise/conv4") == []  # 3×3: not available
    assert run.metric_steps("val/accuracy") == steps[1:]
    assert run.metric_steps("train/loss") == steps[1:]
    names = run.artifact_names("activations")
    for step in steps:
        assert f"epoch_{step:04d}.safetensors" in names and f"epoch_{step:04d}.json" in names
    assert "analysis.safetensors" in names
    folder = run.download("activations", tmp / "act")
    tensors = load_file(folder / "epoch_0002.safetensors")
    assert set(tensors) == set(CONV_LAYERS_SEED)
    for layer, shape in SEED_SHAPES.items():
        assert tuple(tensors[layer].shape) == (8, *shape), layer
    pooled = load_file(folder / "analysis.safetensors")
    assert tuple(pooled["conv5"].shape) == (64, 256) and tuple(pooled["labels"].shape) == (64,)
    assert "MLmodel" in run.artifact_names("model")  # an MLflow model: runs:/<id>/model
    assert {"model.safetensors", "config.json"} <= set(run.artifact_names("model/artifacts"))
    assert f"confusion_matrix_step{epochs:04d}.png" in run.artifact_names("figures")  # at the last epoch
