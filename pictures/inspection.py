"""What a trained network does with one photo of yours: its prediction and every conv layer's
feature maps, saliency and Grad-CAM, drawn by the very code that draws the training pictures
(``pictures.epoch_visuals``), written as PNGs and one self-contained HTML page.

Each photo is its own probe set; its pictures go to ``<out>/<photo number>/`` through a
``FolderSink`` (a Tracker that writes images as files), so nothing here draws differently from a
training run's ``feature_maps/convK``, ``all_channels/convK``, ``saliency`` and ``filters/conv1``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from convscope.pictures import html_report as h
from convscope.pictures.epoch_visuals import EpochVisuals, Probes
from convscope.tracking.base import NullTracker


class FolderSink(NullTracker):
    """A Tracker that writes every image to ``folder/<key>.png`` (``/`` in a key becomes ``__``)
    and keeps the metrics; everything else it drops."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.images: dict[str, Path] = {}
        self.metrics: dict[str, float] = {}
        folder.mkdir(parents=True, exist_ok=True)

    def log_image(self, key: str, image: np.ndarray, step: int) -> None:
        path = self.folder / f"{key.replace('/', '__')}.png"
        Image.fromarray(np.ascontiguousarray(image)).save(path)
        self.images[key] = path

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.metrics.update({key: float(value) for key, value in metrics.items()})


@dataclass
class PhotoInspection:
    """One photo's prediction and pictures."""

    photo: str
    probabilities: dict[str, float]
    pictures: dict[str, Path] = field(default_factory=dict)  # key (feature_maps/conv1, …) -> PNG
    noise: dict[str, float] = field(default_factory=dict)  # act_noise per layer, where defined

    @property
    def predicted(self) -> str:
        return max(self.probabilities, key=self.probabilities.__getitem__)


def inspect_photo(network: Any, image: torch.Tensor, name: str, out: Path) -> PhotoInspection:
    """Draw what ``network`` (a ``train.mlflow_model.Network``) does with ``image`` (uint8 3×S×S)."""
    model = network.model
    batch = image.unsqueeze(0)
    probabilities = network.probabilities(batch)[0].tolist()
    probes = Probes(network.normalizer(batch), batch, torch.tensor([-1]), (name,))
    sink = FolderSink(out)
    with tempfile.TemporaryDirectory(prefix="convscope-inspect-") as scratch:
        visuals = EpochVisuals(sink, model.feature_layers(), probes, network.class_names, Path(scratch),
                               first_conv=model.first_conv())
        visuals.log(model, step=0)
    noise = {key.split("/", 1)[1]: value for key, value in sink.metrics.items() if key.startswith("act_noise/")}
    return PhotoInspection(name, dict(zip(network.class_names, probabilities)), dict(sink.images), noise)


def inspection_page(model: str, inspections: Sequence[PhotoInspection]) -> str:
    """One self-contained HTML page: per photo, the prediction, then every picture embedded."""
    body = [h.heading(1, f"What {model} does with your photos"),
            h.paragraph("Each photo's prediction, then for every conv layer the same pictures a training run logs: "
                        "the layer's most active channels (maps of 3×3 and smaller drawn as channel strengths), "
                        "every channel at full resolution, gradient saliency and Grad-CAM.", "muted")]
    for number, seen in enumerate(inspections, start=1):
        shown = ", ".join(f"{name} {p:.3f}" for name, p in sorted(seen.probabilities.items(), key=lambda kv: -kv[1]))
        body += [h.heading(2, f"{number}. {Path(seen.photo).name}"),
                 h.paragraph(f"predicted: {seen.predicted} ({shown})", "lead")]
        order = sorted(seen.pictures, key=lambda key: (not key.startswith("feature_maps"), key))
        for key in order:
            body.append(h.figure(seen.pictures[key].read_bytes(), key, key, pixels=True))
    return h.page(f"convscope inspect: {model}", body)
