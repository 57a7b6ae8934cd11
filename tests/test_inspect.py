"""``convscope inspect MODEL PHOTO...``: the prediction for the user's own photos and every conv layer's
pictures, drawn by the training pictures' code, as PNGs and one HTML page; ``--log`` adds them to the
model's run; bad input is one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

from convscope.pictures.overview import layer_overview
from e2e_helpers import convscope
from html_check import embedded_pngs

LAYERS = [f"conv{k}" for k in range(1, 4)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, list[Path]]:
    root = tmp_path_factory.mktemp("inspect")
    runs = root / "runs"
    done = convscope("train", "--preset", "tiny", "--image-size", "32", "--epochs", "1", "--synthetic-size", "200",
                     "--no-tensorboard", "--no-visuals", "--runs-dir", str(runs), "--quiet")
    assert done.returncode == 0, done.stderr
    (run,) = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}").search_runs(["1"])
    rng = np.random.default_rng(0)
    photos = []
    for name, size in (("holiday.jpg", (90, 120)), ("garden.png", (40, 40))):
        path = root / name
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
        photos.append(path)
    return runs, run.info.run_id, photos


@pytest.mark.slow
def test_inspect_draws_every_conv_layer_for_each_photo_and_logs_them(trained: tuple[Path, str, list[Path]],
                                                                     tmp_path: Path) -> None:
    runs, run_id, photos = trained
    out = tmp_path / "seen"
    done = convscope("inspect", run_id, *map(str, photos), "--runs-dir", str(runs), "--out", str(out), "--log")
    assert done.returncode == 0, done.stderr
    assert f"pictures: {out / 'inspection.html'}" in done.stdout
    for photo in photos:
        assert any(line.startswith(f"{photo}: ") and "(" in line for line in done.stdout.splitlines()), done.stdout
    for folder in sorted(out.iterdir()):
        if folder.is_dir():
            names = {p.name for p in folder.iterdir()}
            for layer in LAYERS:
                assert {f"feature_maps__{layer}.png", f"all_channels__{layer}.png"} <= names, (folder, names)
            assert "saliency.png" in names
    page = (out / "inspection.html").read_text()
    assert len(embedded_pngs(page)) == 2 * (2 * len(LAYERS) + 2)  # two photos: maps, channels, saliency, filters
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    (stamp,) = [a.path for a in client.list_artifacts(run_id, "inspections")]
    assert "inspection.html" in {Path(a.path).name for a in client.list_artifacts(run_id, stamp)}


@pytest.mark.slow
def test_bad_input_is_one_line_and_exit_2(trained: tuple[Path, str, list[Path]], tmp_path: Path) -> None:
    runs, run_id, photos = trained
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    cases = {
        "missing photo": ([run_id, str(tmp_path / "missing.jpg")], "no such file"),
        "not an image": ([run_id, str(text)], "not a readable image"),
        "unknown study": (["nosuchstudy", str(photos[0])], "models:/nosuchstudy@champion"),
    }
    for label, (argv, needle) in cases.items():
        done = convscope("inspect", *argv, "--runs-dir", str(runs))
        assert done.returncode == 2 and needle in done.stderr, (label, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, (label, done.stderr)


def test_an_overview_of_one_photo_lines_up_and_compares_its_channels() -> None:
    """One probe: the input tile is padded like the channel tiles (make_grid leaves one tile bare),
    and small maps' cells compare the channels (scaled over one probe, every cell would be the top)."""
    activation = torch.zeros(1, 4, 3, 3)
    activation[0, 0] = 1.0
    activation[0, 1] = 0.5
    picture = layer_overview(activation, torch.zeros(1, 3, 32, 32, dtype=torch.uint8), (0, 1, 2, 3), (0,))
    assert picture.ndim == 3 and picture.shape[2] == 3
    row = picture[picture.shape[0] // 2 + 4]  # through the cells
    colours = {tuple(pixel) for pixel in row.reshape(-1, 3).tolist()}
    assert len(colours) >= 4  # strong, middling and silent channels drawn differently
