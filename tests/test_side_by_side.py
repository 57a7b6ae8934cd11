"""Several runs' (or one run's epochs') pictures of one layer side by side, labelled, and a sentence
when their probe photos differ."""

from __future__ import annotations

import numpy as np
import pytest

from convscope.analysis.side_by_side import LABEL_PX, RunPictures, chosen_steps, probes_problem, side_by_side, stacked
from convscope.cli.compare_cmd import parse_epochs
from convscope.train.errors import ConfigError


def _run(name: str, probes: str, colour: int, keys: tuple[str, ...] = ("feature_maps/conv1", "saliency"),
         steps: tuple[int, ...] = (3,)) -> RunPictures:
    pictures = {key: {step: np.full((40, 100, 3), colour + step, np.uint8) for step in steps} for key in keys}
    return RunPictures(name, pictures, probes)


def test_the_runs_pictures_sit_side_by_side_under_their_names() -> None:
    runs = [_run("depth3", "p1,p2", 10), _run("depth5", "p1,p2", 200, ("feature_maps/conv1",))]
    pictures = side_by_side(runs)
    assert set(pictures) == {"feature_maps/conv1"}  # only what every run has
    picture = pictures["feature_maps/conv1"]
    assert picture.shape[0] == 40 + LABEL_PX and picture.shape[1] > 200  # one row of two: wide
    left, right = picture[LABEL_PX + 20, 50], picture[LABEL_PX + 20, picture.shape[1] - 50]
    assert tuple(left) == (13, 13, 13) and tuple(right) == (203, 203, 203)
    assert (picture[:LABEL_PX, :100] < 128).any()  # a label above each picture
    assert probes_problem(runs) is None


def test_one_runs_epochs_sit_side_by_side_in_step_order() -> None:
    picture = side_by_side([_run("depth3", "p", 10, steps=(8, 0, 4))])["saliency"]
    assert picture.shape[0] == 40 + LABEL_PX and picture.shape[1] > 300  # one row of three
    centres = [picture[LABEL_PX + 20, x, 0] for x in (50, picture.shape[1] // 2, picture.shape[1] - 50)]
    assert centres == [10, 14, 18]


def test_more_runs_wrap_and_different_probes_are_said() -> None:
    runs = [_run(f"r{i}", "a" if i < 3 else "b", 50 * i) for i in range(4)]
    assert stacked([(run.name, run.pictures["saliency"][3]) for run in runs]).shape[0] > 2 * 40  # two rows of cells
    problem = probes_problem(runs)
    assert problem is not None and "probe photos differ" in problem and "r3: b" in problem


@pytest.mark.parametrize(("available", "wanted", "single", "expected"), [
    ([0, 1, 2, 3, 4, 5, 6], None, False, [6]),  # several runs: each run's last
    ([0, 1, 2, 3, 4, 5, 6], None, True, [0, 3, 6]),  # one run: first, middle, last
    ([0, 1], None, True, [0, 1]),
    ([5], None, True, [5]),
    ([0, 2, 4], [4, 0, 3], False, [4, 0]),  # asked for: the ones logged, in the order asked
    ([], None, True, []),
])
def test_the_steps_shown(available: list[int], wanted: list[int] | None, single: bool, expected: list[int]) -> None:
    assert chosen_steps(available, wanted, single) == expected


def test_epochs_flag() -> None:
    assert parse_epochs("") is None and parse_epochs("0, 5,10") == [0, 5, 10]
    for bad in ("a,b", "-1", ","):
        with pytest.raises(ConfigError, match="--epochs"):
            parse_epochs(bad)
