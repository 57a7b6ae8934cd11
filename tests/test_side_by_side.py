"""Several runs' pictures of one layer side by side, labelled, and a sentence when their probe photos differ."""

from __future__ import annotations

import numpy as np

from convscope.analysis.side_by_side import LABEL_PX, RunPictures, probes_problem, side_by_side, stacked


def _run(name: str, probes: str, colour: int, keys: tuple[str, ...] = ("feature_maps/conv1", "saliency")) -> RunPictures:
    pictures = {key: np.full((40, 100, 3), colour, np.uint8) for key in keys}
    return RunPictures(name, pictures, dict.fromkeys(keys, 3), probes)


def test_the_runs_pictures_sit_side_by_side_under_their_names() -> None:
    runs = [_run("depth3", "p1,p2", 10), _run("depth5", "p1,p2", 200, ("feature_maps/conv1",))]
    pictures = side_by_side(runs)
    assert set(pictures) == {"feature_maps/conv1"}  # only what every run has
    picture = pictures["feature_maps/conv1"]
    assert picture.shape[0] == 40 + LABEL_PX and picture.shape[1] > 200  # one row of two: wide
    left, right = picture[LABEL_PX + 20, 50], picture[LABEL_PX + 20, picture.shape[1] - 50]
    assert tuple(left) == (10, 10, 10) and tuple(right) == (200, 200, 200)
    assert (picture[:LABEL_PX, :100] < 128).any()  # a label above each picture
    assert probes_problem(runs) is None


def test_more_runs_wrap_and_different_probes_are_said() -> None:
    runs = [_run(f"r{i}", "a" if i < 3 else "b", 50 * i) for i in range(4)]
    assert stacked([(run.name, run.pictures["saliency"]) for run in runs]).shape[0] > 2 * 40  # two rows of cells
    problem = probes_problem(runs)
    assert problem is not None and "probe photos differ" in problem and "r3: b" in problem
