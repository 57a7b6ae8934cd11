"""The same picture of several runs side by side: one layer's feature maps (or the saliency) of the
same probe photos from each run, in one image with each run's name above its picture, so a
depth or width study shows how a layer's pictures change. The pictures are the runs' own, read back
from MLflow at each run's last step; runs whose probe photos differ are said to differ."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from convscope.pictures.render import label_font

KEYS_PREFIXES = ("feature_maps/", "saliency")
LABEL_PX = 18
GAP_PX = 6


@dataclass(frozen=True)
class RunPictures:
    """One run's latest picture per key, and the probe photos it drew them for."""

    name: str
    pictures: dict[str, np.ndarray]  # key -> (H, W, 3) uint8
    steps: dict[str, int]
    probes: str  # the run's probe ids (tag ``probes.ids``)


def run_pictures(client: Any, run_id: str) -> RunPictures:
    """Download ``run_id``'s latest ``feature_maps/*`` and ``saliency`` images from MLflow."""
    run = client.get_run(run_id)
    latest: dict[str, tuple[int, str]] = {}
    for artifact in client.list_artifacts(run_id, "images"):
        name = Path(artifact.path).name
        parts = name.split("+")
        if len(parts) < 3 or parts[1] != "step" or not name.endswith(".png"):
            continue
        key, step = parts[0].replace("~", "/"), int(parts[2])
        if key.startswith(KEYS_PREFIXES) and step >= latest.get(key, (-1, ""))[0]:
            latest[key] = (step, artifact.path)
    pictures, steps = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, (step, path) in latest.items():
            local = client.download_artifacts(run_id, path, tmp)
            pictures[key] = np.asarray(Image.open(local).convert("RGB"))
            steps[key] = step
    return RunPictures(run.info.run_name or run_id, pictures, steps, run.data.tags.get("probes.ids", ""))


def probes_problem(runs: Sequence[RunPictures]) -> str | None:
    """A sentence when the runs drew their pictures for different probe photos, else None."""
    kinds = {run.probes for run in runs}
    if len(kinds) <= 1:
        return None
    return ("the runs' probe photos differ (" + "; ".join(f"{run.name}: {run.probes or '?'}" for run in runs)
            + "): rows of the side-by-side pictures show different photos")


def stacked(rows: Sequence[tuple[str, np.ndarray]], columns: int = 3) -> np.ndarray:
    """The labelled pictures in a grid, up to ``columns`` side by side (wide: whole in MLflow's
    fixed-height cards), each under a strip with its label, on white."""
    columns = max(1, min(columns, len(rows)))
    cell_w = max(picture.shape[1] for _, picture in rows) + GAP_PX
    cell_h = max(picture.shape[0] for _, picture in rows) + LABEL_PX + GAP_PX
    grid_rows = -(-len(rows) // columns)
    canvas = Image.new("RGB", (cell_w * columns - GAP_PX, cell_h * grid_rows - GAP_PX), "white")
    draw = ImageDraw.Draw(canvas)
    font = label_font(LABEL_PX - 5)
    for index, (label, picture) in enumerate(rows):
        left, top = (index % columns) * cell_w, (index // columns) * cell_h
        draw.text((left + 2, top + 2), label, fill=(30, 30, 30), font=font)
        canvas.paste(Image.fromarray(picture), (left, top + LABEL_PX))
    return np.asarray(canvas)


def side_by_side(runs: Sequence[RunPictures]) -> dict[str, np.ndarray]:
    """Per key every run has: the runs' pictures stacked, each labelled with its run and step."""
    keys = sorted(set.intersection(*(set(run.pictures) for run in runs))) if runs else []
    return {key: stacked([(f"{run.name} (step {run.steps[key]})", run.pictures[key]) for run in runs]) for key in keys}
