"""The checks every verdict rests on: learned above chance, stopped improving; a probe gain's uncertainty."""

from __future__ import annotations

import math

import numpy as np
import pytest

from convscope.analysis.probes import probe_curve
from convscope.analysis.verdicts import Training, learned, more_epochs, pooled, problems, still_improving, window


def test_learned_needs_a_margin_and_significance() -> None:
    assert learned(Training("a", (0.6, 0.7), 200, 0.5))  # 140/200: p ≈ 1e-8
    assert not learned(Training("a", (0.54,), 2000, 0.5))  # significant (p ≈ 2e-4) but within the 0.05 margin
    assert not learned(Training("a", (0.58,), 40, 0.5))  # 23/40 clears the margin, not significance (p ≈ 0.21)
    assert not learned(Training("a", (0.845,), 400, 0.8))  # 0.045 above a 0.8 majority: within the margin
    assert learned(Training("a", (0.87,), 400, 0.8))
    assert not learned(Training("a", (), 100, 0.5)) and not learned(Training("a", (math.nan,), 100, 0.5))


def test_still_improving_compares_the_last_quarter_with_the_noise() -> None:
    assert window(3) == 1 and window(8) == 2 and window(12) == 3 and window(1) == 1
    flat = Training("d2", (0.5, 0.9, 0.98, 0.99, 0.99, 0.99, 0.99, 0.995), 400, 0.5)
    assert not still_improving(flat)  # +0.005 over the last 2 epochs: below the 0.01 floor
    rising = Training("d3", (0.5, 0.52, 0.55, 0.75), 160, 0.5)
    assert still_improving(rising)  # +0.20 against 2·sqrt(2·0.75·0.25/160) ≈ 0.097
    assert still_improving(Training("d3", (0.5, 0.9, 0.9), 400, 0.5))  # three points are too few to call flat
    noisy = Training("d1", (0.5, 0.56, 0.49, 0.53), 100, 0.5)
    assert not still_improving(noisy)  # +0.04 is within 2·sqrt(2·0.25/100) ≈ 0.14
    assert still_improving(Training("one", (0.9,), 1000, 0.5))  # one epoch is no curve
    assert more_epochs(3) == 12 and more_epochs(10) == 20


def test_problems_say_what_is_missing_and_what_to_run() -> None:
    rising = Training("depth 3", (0.5, 0.55, 0.6, 0.8), 160, 0.5)
    done = Training("depth 4", (0.9, 0.99, 0.99, 0.99), 160, 0.5)
    assert problems([done]) == []
    (line,) = problems([rising, done], needs_learning=[done])
    assert line == "depth 3 was still improving at epoch 4 (+0.200 over the last 1 epoch) — rerun with --epochs 12"
    (short,) = problems([Training("depth 2", (0.9, 0.99, 0.99), 160, 0.5)])
    assert short == ("depth 2 trained for 3 epochs: a learning curve needs at least 4 epochs to tell flat from rising "
                     "— rerun with --epochs 12")
    chance = Training("run", (0.5, 0.5, 0.5, 0.51), 500, 0.5)
    (line,) = problems([chance], needs_learning=[chance])
    assert line.startswith("run did not learn (0.510 on 500 validation images, chance 0.500)"), line
    assert problems([chance]) == []  # a flat curve at chance is a result where learning is not demanded


def test_pooled_folds_average_the_curves_and_sum_the_images() -> None:
    run = pooled("v", [[0.5, 0.7, 0.9], [0.5, 0.9, 1.0, 1.0]], [100, 120], 0.5)
    assert run.curve == pytest.approx((0.5, 0.8, 0.95)) and run.images == 220 and run.accuracy == pytest.approx(0.95)


def test_probe_gain_standard_error_is_paired_by_fold() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 100)
    noise = rng.normal(size=(200, 4))
    signal = noise.copy()
    signal[:, 0] += 3.0 * labels  # the class is linearly available in the second layer only
    same = signal + 1e-6 * rng.normal(size=(200, 4))  # the third layer adds nothing
    curve = probe_curve({"conv1": noise, "conv2": signal, "conv3": same}, labels, folds=5)
    assert curve.mean[0] < 0.65 < 0.9 < curve.mean[1]
    assert curve.gain[1] > 0.3 and curve.gain[1] > 5 * curve.gain_se[1]
    assert abs(curve.gain[2]) <= 0.01 and curve.gain_se[2] <= 0.01  # the same folds: nearly no spread
    assert curve.gain_se.shape == (3,) and curve.gain_se[0] > 0


def test_binomial_error_is_never_zero_and_a_perfect_curve_is_done() -> None:
    from convscope.analysis.verdicts import binomial_standard_error

    assert binomial_standard_error(1.0, 600) == pytest.approx(0.00234, abs=1e-5)  # 602/604 ± …
    assert binomial_standard_error(0.5, 100) == pytest.approx(0.049, abs=1e-3)
    # the mean over folds rose .972 → 1.000 in the last epoch: it reached the ceiling, nothing is left to improve
    assert not still_improving(Training("depth 3", (0.55, 0.972, 1.0), 800, 0.5))
    assert still_improving(Training("depth 3", (0.5, 0.55, 0.90, 0.99), 800, 0.5))


def test_describe_names_both_checks() -> None:
    from convscope.analysis.verdicts import describe

    assert describe(Training("a", (0.5, 0.9, 0.99, 0.99), 400, 0.5)) == "learned, flat"
    assert describe(Training("a", (0.5, 0.5, 0.5, 0.51), 400, 0.5)) == "at chance, flat"
    assert describe(Training("a", (0.5, 0.5, 0.51), 400, 0.5)) == "at chance, too few epochs to judge"
    assert describe(Training("a", (0.5, 0.55, 0.6, 0.8), 400, 0.5)) == "learned, still rising (+0.200)"
    assert describe(Training("a", (0.9,), 400, 0.5)) == "learned, too few epochs to judge"
