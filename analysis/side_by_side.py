"""The same picture of several runs side by side: one layer's feature maps (or the saliency) of the
same probe photos from each run — or from several epochs of one run — in one image with each
column's run and step above it, so a depth or width study shows how a layer's pictures change. The
pictures are the runs' own, read back from MLflow; runs whose probe photos differ are said to differ."""

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
#: Epochs shown for a single run when none are asked for: its first, middle and last.
ONE_RUN_STEPS = 3


@dataclass(frozen=True)
class RunPictures:
    """One run's pictures per key and step, and the probe photos it drew them for."""

    name: str
    pictures: dict[str, dict[int, np.ndarray]]  # key -> step -> (H, W, 3) uint8
    probes: str  # the run's probe ids (tag ``probes.ids``)


def logged_steps(client: Any, run_id: str) -> dict[str, dict[int, str]]:
    """The artifact path of every ``feature_maps/*`` and ``saliency`` image ``run_id`` logged, by key and step."""
    found: dict[str, dict[int, str]] = {}
    for artifact in client.list_artifacts(run_id, "images"):
        name = Path(artifact.path).name
        parts = name.split("+")
        if len(parts) < 3 or parts[1] != "step" or not name.endswith(".png"):
            continue
        key = parts[0].replace("~", "/")
        if key.startswith(KEYS_PREFIXES):
            found.setdefault(key, {})[int(parts[2])] = artifact.path
    return found


def chosen_steps(available: Sequence[int], wanted: Sequence[int] | None, single_run: bool) -> list[int]:
    """The steps to show: ``wanted`` that were logged; else the last one, or for a single run its
    first, middle and last."""
    ordered = sorted(set(available))
    if not ordered:
        return []
    if wanted:
        return [step for step in dict.fromkeys(wanted) if step in ordered]
    if not single_run or len(ordered) == 1:
        return [ordered[-1]]
    picks = np.linspace(0, len(ordered) - 1, min(ONE_RUN_STEPS, len(ordered))).round().astype(int)
    return [ordered[i] for i in dict.fromkeys(picks.tolist())]


def run_pictures(client: Any, run_id: str, steps: Sequence[int] | None = None, single_run: bool = False) -> RunPictures:
    """Download ``run_id``'s ``feature_maps/*`` and ``saliency`` images at the steps ``chosen_steps`` picks."""
    run = client.get_run(run_id)
    pictures: dict[str, dict[int, np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, paths in logged_steps(client, run_id).items():
            for step in chosen_steps(list(paths), steps, single_run):
                local = client.download_artifacts(run_id, paths[step], tmp)
                pictures.setdefault(key, {})[step] = np.asarray(Image.open(local).convert("RGB"))
    return RunPictures(run.info.run_name or run_id, pictures, run.data.tags.get("probes.ids", ""))


def probes_problem(runs: Sequence[RunPictures]) -> str | None:
    """A sentence when the runs drew their pictures for different probe photos, else None."""
    kinds = {run.probes for run in runs}
    if len(kinds) <= 1:
        return None
    return ("the runs' probe photos differ (" + "; ".join(f"{run.name}: {run.probes or '?'}" for run in runs)
            + "): rows of the side-by-side pictures show different photos")


def stacked(cells: Sequence[tuple[str, np.ndarray]], columns: int = 3) -> np.ndarray:
    """The labelled pictures in a grid, up to ``columns`` side by side (wide: whole in MLflow's
    fixed-height cards), each under a strip with its label, on white."""
    columns = max(1, min(columns, len(cells)))
    cell_w = max(picture.shape[1] for _, picture in cells) + GAP_PX
    cell_h = max(picture.shape[0] for _, picture in cells) + LABEL_PX + GAP_PX
    grid_rows = -(-len(cells) // columns)
    canvas = Image.new("RGB", (cell_w * columns - GAP_PX, cell_h * grid_rows - GAP_PX), "white")
    draw = ImageDraw.Draw(canvas)
    font = label_font(LABEL_PX - 5)
    for index, (label, picture) in enumerate(cells):
        left, top = (index % columns) * cell_w, (index // columns) * cell_h
        draw.text((left + 2, top + 2), label, fill=(30, 30, 30), font=font)
        canvas.paste(Image.fromarray(picture), (left, top + LABEL_PX))
    return np.asarray(canvas)


def side_by_side(runs: Sequence[RunPictures]) -> dict[str, np.ndarray]:
    """Per key every run has: each run's pictures in step order, run after run, each labelled with
    its run and step."""
    keys = sorted(set.intersection(*(set(run.pictures) for run in runs))) if runs else []
    return {
        key: stacked([(f"{run.name} (step {step})", picture)
                      for run in runs for step, picture in sorted(run.pictures[key].items())])
        for key in keys
    }
