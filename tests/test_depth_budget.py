"""``convscope depth --timeout``: the epochs planned for a budget, the budget's running estimate, the
rounds' stopping rule and every sentence the timed verdict adds — each where it must appear and
where it must not."""

from __future__ import annotations

import pytest

from convscope.analysis.depth_plan import (
    MIN_EPOCHS,
    MIN_ROUNDS,
    MIN_TRAIN_IMAGES,
    SHARE,
    SUBSAMPLED_EPOCHS,
    Budget,
    epoch_seconds,
    plan_epochs,
    suggested_timeout,
)
from convscope.analysis.depth_rounds import Rounds, final_verdict, trimmed
from convscope.analysis.depth_verdict import Outcome, Variant, recommend
from convscope.train.config import build_config
from convscope.train.errors import ConfigError


def _outcome(depth: int, accuracies: list[float], *, rise: float = 0.0, epochs: int = 8, images: int = 400,
             folds: list[int] | None = None) -> Outcome:
    """Curves flat at each fold's accuracy, except that the last quarter rose by ``rise``."""
    config = build_config("tiny", {"model": {"depth": depth}})
    quarter = max(1, round(epochs / 4))
    curves = [[a - rise] * (epochs - quarter) + [a] * quarter for a in accuracies]
    return Outcome(Variant(f"depth {depth}", f"d{depth}", config), list(accuracies), curves=curves,
                   images=[images] * len(accuracies), chance=0.5, folds=folds or list(range(len(accuracies))))


def test_the_plan_fits_three_rounds_in_the_budget_then_fewer_photos_or_says_what_would() -> None:
    per_image = {"d1": 0.001, "d2": 0.002}  # seconds per training image
    epoch_s = sum(epoch_seconds(per_image, 1000, 300).values())  # 3.3 s: 1000 training + 300 validation images
    epochs, limit = plan_epochs(200.0, per_image, 1000, 300, overhead_s=3.0)
    assert limit == 0 and epochs == int((SHARE * 200.0 / MIN_ROUNDS - 2 * 3.0) // epoch_s)
    assert MIN_ROUNDS * (epochs * epoch_s + 2 * 3.0) <= 200.0  # the planned rounds fit
    assert plan_epochs(100_000.0, per_image, 1000, 300) == (40, 0)  # capped
    # 20,000 photos a fold: 8 epochs of all of them do not fit 15 minutes; 8 epochs of a sample do
    epochs, limit = plan_epochs(900.0, per_image, 20_000, 5_000, overhead_s=3.0)
    assert epochs == SUBSAMPLED_EPOCHS and MIN_TRAIN_IMAGES <= limit < 20_000
    fold_run_s = sum(epoch_seconds(per_image, limit, 5_000).values()) * SUBSAMPLED_EPOCHS
    assert MIN_ROUNDS * (fold_run_s + 2 * 3.0) <= SHARE * 900.0 + 1e-6
    with pytest.raises(ConfigError, match=r"--timeout 30.0s: 3 folds of 2 networks at 8 epochs on 1,000 photos "
                                          r"need about"):
        plan_epochs(30.0, per_image, 20_000, 5_000)


def test_the_budget_learns_from_the_runs_so_far() -> None:
    budget = Budget(600.0, {"d1": 10.0, "d2": 20.0})
    assert budget.estimate("d2") == 20.0 and budget.fits("d2")
    budget.record("d1", 30.0)  # runs take three times the calibrated estimate
    assert budget.correction == 3.0 and budget.estimate("d2") == 60.0
    assert budget.needed_for(2, 2.0) == pytest.approx(2 * (30 + 60) * 2 / SHARE)
    assert not Budget(10.0, {"d1": 20.0}).fits("d1")


def test_a_suggested_timeout_is_three_rounds_of_the_runs_length_in_whole_minutes() -> None:
    assert suggested_timeout(60.0, 4) == f"{-(-int(MIN_ROUNDS * 4 * 60 / SHARE) // 60)}m"
    assert suggested_timeout(1.0, 2) == "5m"


def test_trimmed_keeps_the_first_rounds_paired_by_fold() -> None:
    outcome = _outcome(2, [0.8, 0.9, 0.7], folds=[0, 2, 1])
    (kept,) = trimmed([outcome], 2)
    assert kept.fold_numbers == [0, 1] and kept.accuracies == [0.8, 0.7]


def _rounds(completed: int, after: list[str]) -> Rounds:
    return Rounds(8, Budget(600.0, {"d1": 20.0, "d2": 30.0, "d3": 40.0}), completed, "", after)


def test_provisional_only_from_fewer_than_three_rounds() -> None:
    outcomes = [_outcome(1, [0.6, 0.62]), _outcome(2, [0.9, 0.91]), _outcome(3, [0.9, 0.92])]
    early = final_verdict(outcomes, "depth", _rounds(2, ["depth 2"]))
    assert early.sentence.startswith("provisional, from 2 folds of the 3 a verdict needs (rerun with --timeout ")
    full = [_outcome(1, [0.6, 0.62, 0.61]), _outcome(2, [0.9, 0.91, 0.9]), _outcome(3, [0.9, 0.92, 0.91])]
    settled = final_verdict(full, "depth", _rounds(3, ["depth 2", "depth 2"]))
    assert settled.sentence.startswith("recommended depth: 2") and "provisional" not in settled.sentence
    assert "not yet stable" not in settled.sentence and "left out" not in settled.sentence


def test_not_yet_stable_only_when_the_last_round_changed_the_answer() -> None:
    full = [_outcome(1, [0.6, 0.62, 0.61]), _outcome(2, [0.9, 0.91, 0.9]), _outcome(3, [0.9, 0.92, 0.91])]
    changed = final_verdict(full, "depth", _rounds(3, ["depth 3", "depth 2"]))
    assert "; not yet stable: after 2 folds the rule picked depth 3 — more folds would settle it (rerun with " \
           "--timeout " in changed.sentence


def test_a_left_out_fold_is_named() -> None:
    full = [_outcome(1, [0.6, 0.62, 0.61]), _outcome(2, [0.9, 0.91], folds=[0, 2]), _outcome(3, [0.9, 0.92, 0.91])]
    full[1].left_out.append("fold 2 (0.500 and 0.497)")
    verdict = final_verdict(full, "depth", _rounds(3, ["depth 2", "depth 2"]))
    assert verdict.sentence.endswith("; left out, as they did not learn twice: depth 2 fold 2 (0.500 and 0.497)")


def test_more_epochs_are_asked_for_as_a_timeout_when_a_rise_would_change_the_answer() -> None:
    outcomes = [_outcome(1, [0.6, 0.61, 0.6]), _outcome(2, [0.80, 0.81, 0.80]), _outcome(3, [0.78, 0.79, 0.78], rise=0.1)]
    verdict = final_verdict(outcomes, "depth", _rounds(3, ["depth 2", "depth 2"]))
    assert verdict.recommended is None
    assert "depth 3 was still improving at epoch 8" in verdict.sentence
    assert "more epochs needed: rerun with --timeout " in verdict.sentence and "--epochs" not in verdict.sentence


def test_a_rise_that_cannot_change_the_answer_is_said_and_does_not_block_it() -> None:
    rising = recommend([_outcome(1, [0.6, 0.61, 0.6]), _outcome(2, [0.90, 0.91, 0.90]),
                        _outcome(3, [0.80, 0.79, 0.80], rise=0.05)], "depth")
    assert rising.recommended is not None and rising.recommended.variant.blocks == 2
    assert "(depth 3 was still improving: +0.050 over the last quarter of its epochs; continuing " \
           "every variant's rise for another quarter would not change the answer)" in rising.sentence
    flat = recommend([_outcome(1, [0.6, 0.61, 0.6]), _outcome(2, [0.90, 0.91, 0.90]), _outcome(3, [0.80, 0.79, 0.80])],
                     "depth")
    assert "still improving" not in flat.sentence and not flat.rising


def test_every_variant_is_projected_not_only_those_whose_rise_cleared_the_noise() -> None:
    # depth 2 rose +0.030 (inside the noise of 1200 images, 0.033: flat), depth 3 +0.060 (beyond it: rising);
    # crediting only depth 3's rise would put it ahead; crediting both leaves depth 2 the answer
    outcomes = [_outcome(1, [0.6, 0.61, 0.6]), _outcome(2, [0.80, 0.81, 0.80], rise=0.03),
                _outcome(3, [0.78, 0.79, 0.78], rise=0.06)]
    verdict = recommend(outcomes, "depth")
    assert verdict.recommended is not None and verdict.recommended.variant.blocks == 2, verdict.sentence
    assert [o.variant.blocks for o in verdict.rising] == [3]
    # the same depth 3 against a depth 2 that did not rise at all: the projection changes the answer
    blocked = recommend([outcomes[0], _outcome(2, [0.80, 0.81, 0.80]), outcomes[2]], "depth")
    assert blocked.recommended is None and "depth 3 was still improving at epoch 8" in blocked.sentence


def _fake_rounds(monkeypatch: pytest.MonkeyPatch, scores: dict[tuple[str, int, bool], float]) -> list:
    """``run_rounds`` with training replaced by ``scores[(slug, fold, retry)]`` (flat 8-epoch curves on 400 images)."""
    import types

    from convscope.analysis import depth_rounds
    from convscope.analysis.depth_folds import FoldResult

    def prepare(name, folds, variant, fold, retry=False):  # noqa: ANN001, ANN202
        return types.SimpleNamespace(retry=retry)

    def train(name, folds, prepared, variant, fold, parent, echo):  # noqa: ANN001, ANN202
        accuracy = scores[(variant.slug, fold, prepared.retry)]
        return FoldResult(fold, accuracy, [accuracy] * 8, 400, 0.5, f"{variant.slug}-{fold}", 1.0)

    monkeypatch.setattr(depth_rounds, "prepare_fold", prepare)
    monkeypatch.setattr(depth_rounds, "train_fold", train)
    variants = [Variant(f"depth {d}", f"d{d}", build_config("tiny", {"model": {"depth": d}})) for d in (1, 2)]
    said: list[str] = []
    outcomes, verdict, rounds = depth_rounds.run_rounds("s", 3, variants, "depth", None,
                                                        Budget(3600.0, {"d1": 1.0, "d2": 1.0}), None, said.append)
    return [outcomes, verdict, rounds, said]


def test_a_fold_that_did_not_learn_is_trained_again_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    scores = {(slug, fold, False): acc for slug, acc in (("d1", 0.8), ("d2", 0.9)) for fold in range(3)}
    scores[("d2", 1, False)] = 0.5  # at chance where depth 1 learned on the same fold
    scores[("d2", 1, True)] = 0.9
    outcomes, verdict, rounds, said = _fake_rounds(monkeypatch, scores)
    assert any("depth 2 fold 2 did not learn (0.500, chance 0.500) although it learned elsewhere: training it "
               "again with another seed" in line for line in said), said
    assert outcomes[1].accuracies == [0.9, 0.9, 0.9] and not outcomes[1].left_out
    assert "left out" not in verdict.sentence and rounds.completed == 3


def test_a_fold_that_fails_twice_is_left_out_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    scores = {(slug, fold, False): acc for slug, acc in (("d1", 0.8), ("d2", 0.9)) for fold in range(3)}
    scores[("d2", 1, False)] = scores[("d2", 1, True)] = 0.5
    outcomes, verdict, _, said = _fake_rounds(monkeypatch, scores)
    assert outcomes[1].fold_numbers == [0, 2] and outcomes[1].left_out == ["fold 2 (0.500 and 0.500)"]
    assert verdict.sentence.endswith("; left out, as they did not learn twice: depth 2 fold 2 (0.500 and 0.500)")
    at_chance = {(slug, fold, False): 0.5 for slug in ("d1", "d2") for fold in range(3)}  # nothing learned anywhere:
    outcomes, verdict, _, said = _fake_rounds(monkeypatch, at_chance)  # a result, not a failed training
    assert not any("did not learn (" in line for line in said) and all(len(o.accuracies) == 3 for o in outcomes)


def test_a_small_folder_keeps_every_photo_at_fewer_epochs() -> None:
    per_image = {"d1": 0.01, "d2": 0.01}  # 800 training photos: a sample of them would be under 1,000 anyway
    epochs, limit = plan_epochs(400.0, per_image, 800, 200, overhead_s=3.0)
    assert limit == 0 and MIN_EPOCHS <= epochs < SUBSAMPLED_EPOCHS
