"""A trained network as an MLflow model: ``mlflow.pyfunc.load_model(uri).predict(photos)`` returns
class probabilities for raw photos, with the preprocessing inside.

Contract:
- ``predict`` takes a uint8 RGB array (N, H, W, 3) or (H, W, 3) of any size (integers 0..255 also do:
  what a JSON request to ``mlflow models serve`` carries), or a pandas DataFrame
  whose ``image`` column holds encoded images (JPEG, PNG, … bytes), and returns a DataFrame of class
  probabilities, one column per class name. An entry that is no readable image raises ValueError
  naming its row.
- The pixels a model sees are those training saw: ``train.images`` decodes and resizes, the run's
  ``Normalizer`` normalises (``prepare_photos``, shared with ``inspect`` and ``evaluate``).
- The weights and config are the run's ``model.safetensors`` and ``config.json``
  (``train.checkpoint.save_model``), carried as the model's artifacts; ``load_network`` reads them.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from convscope.train.batches import Normalizer
from convscope.train.checkpoint import CONFIG_FILE, MODEL_FILE
from convscope.train.config import from_dict
from convscope.train.images import decode_array, decode_bytes
from convscope.train.model import build_model

MODEL_ARTIFACT = "model"
"""Where a run's MLflow model lives among its artifacts: ``runs:/<run id>/model``."""
IMAGE_COLUMN = "image"


@dataclass
class Network:
    """A trained network ready to score photos: the model in eval mode, its normaliser, class names and input size."""

    model: nn.Module
    normalizer: Normalizer
    class_names: list[str]
    image_size: int
    tta: bool = False  # the run's --tta: each photo's probabilities are averaged with its mirror image's

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax class probabilities (N, classes) of uint8 N×3×S×S images (with ``tta``, the mean of
        each image's and its horizontal mirror's, as the run's val/accuracy_tta was measured)."""
        with torch.no_grad():
            inputs = self.normalizer(images)
            probabilities = self.model(inputs).float().softmax(dim=1)
            if self.tta:
                probabilities = (probabilities + self.model(inputs.flip(3)).float().softmax(dim=1)) / 2
            return probabilities


def load_network(weights: str | Path, config_file: str | Path) -> Network:
    """The network a run saved (``model.safetensors`` and ``config.json``), on the CPU, in eval mode."""
    payload = json.loads(Path(config_file).read_text())
    config = from_dict(payload["config"])
    model = build_model(config.model)
    model.load_state_dict(load_file(str(weights)))
    normalizer = Normalizer(torch.tensor(payload["normalizer"]["mean"]), torch.tensor(payload["normalizer"]["std"]))
    return Network(model.eval(), normalizer, list(payload["class_names"]), config.model.image_size, config.optim.tta)


def prepare_photos(photos: Any, image_size: int) -> torch.Tensor:
    """uint8 N×3×S×S from what ``predict`` accepts (module docstring); ValueError naming a bad entry."""
    import pandas as pd

    if isinstance(photos, pd.DataFrame):
        if IMAGE_COLUMN not in photos.columns:
            raise ValueError(f"a DataFrame of photos needs an {IMAGE_COLUMN!r} column of encoded images "
                             f"(got columns {list(photos.columns)})")
        return _from_bytes(list(photos[IMAGE_COLUMN]), image_size)
    if isinstance(photos, (list, tuple)) and all(isinstance(p, (bytes, bytearray)) for p in photos):
        return _from_bytes(list(photos), image_size)
    array = np.asarray(photos)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"photos must be uint8 RGB arrays of shape (N, H, W, 3) or (H, W, 3) "
                         f"(got shape {tuple(array.shape)})")
    if array.dtype != np.uint8:  # JSON (a served model's request) carries integers, not uint8
        if array.dtype.kind not in "iu" or array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(f"photos must be RGB arrays of 0..255 integers, uint8 (got {array.dtype})")
        array = array.astype(np.uint8)
    return torch.from_numpy(np.stack([decode_array(image, image_size) for image in array]))


def _from_bytes(items: Sequence[bytes], image_size: int) -> torch.Tensor:
    arrays = []
    for row, data in enumerate(items):
        decoded = decode_bytes(bytes(data), image_size)
        if decoded.array is None:
            raise ValueError(f"photo {row}: not a readable image ({decoded.reason}: {decoded.detail})")
        arrays.append(decoded.array)
    return torch.from_numpy(np.stack(arrays)) if arrays else torch.zeros((0, 3, image_size, image_size), dtype=torch.uint8)


def predict_frame(network: Network, photos: Any) -> Any:
    """What the MLflow model's ``predict`` returns: a DataFrame of class probabilities, a column per class."""
    import pandas as pd

    probabilities = network.probabilities(prepare_photos(photos, network.image_size)).numpy()
    return pd.DataFrame(probabilities, columns=network.class_names)


def save_mlflow_model(final_dir: Path, example: np.ndarray, destination: Path) -> Path:
    """Write the MLflow model of the network saved in ``final_dir`` into ``destination`` (which must not
    exist): the pyfunc model, its signature and an input example (``example``: uint8 N×H×W×3)."""
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    class_names = json.loads((final_dir / CONFIG_FILE).read_text())["class_names"]
    # No input schema: predict takes two forms (arrays of any size, a DataFrame of encoded images) and
    # checks them itself; MLflow's schema would have to choose one.
    signature = ModelSignature(inputs=None, outputs=Schema([ColSpec("double", name) for name in class_names]))
    mlflow.pyfunc.save_model(
        path=str(destination), python_model=str(Path(__file__).with_name("pyfunc_entry.py")),
        artifacts={"weights": str(final_dir / MODEL_FILE), "config": str(final_dir / CONFIG_FILE)},
        signature=signature, input_example=example, pip_requirements=list(_requirements()),
    )
    return destination


@functools.cache
def _requirements() -> tuple[str, ...]:
    """The model's pinned requirements: the installed versions, looked up once per process."""
    from importlib.metadata import PackageNotFoundError, version

    pinned = []
    for name in ("convscope", "torch", "numpy", "pillow", "safetensors", "pandas", "mlflow"):
        try:
            pinned.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pinned.append(name)
    return tuple(pinned)


def log_mlflow_model(tracker: Any, final_dir: Path, example: np.ndarray) -> Path:
    """Write the MLflow model of the network saved in ``final_dir`` beside it (``mlflow_model/``, replacing
    an older one) and log it as the run's ``model/`` artifacts; the folder written. The files stay on
    disk: a background tracker logs them after this returns."""
    folder = final_dir.parent / "mlflow_model"
    if folder.exists():
        shutil.rmtree(folder)
    save_mlflow_model(final_dir, example, folder)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.parent.relative_to(folder)
        tracker.log_file(path, MODEL_ARTIFACT if str(relative) == "." else f"{MODEL_ARTIFACT}/{relative}")
    return folder
