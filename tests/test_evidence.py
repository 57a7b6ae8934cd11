"""The per-layer evidence and the three answers of ``convscope explain``, on made-up activations."""

from __future__ import annotations

import re

import torch

from convscope.analysis.compare import RunActivations
from convscope.analysis.evidence import (
    Ablation, DepthAnswer, counts, drops_from_results, explain, further_drops_from_results,
)
from convscope.analysis.explain_report import report_html, short_text
from convscope.pictures.stats import activation_statistics
from convscope.analysis.verdicts import Training

LEARNED = Training("run", (0.6, 0.9, 0.97, 0.97), 400, 0.5)


def _run() -> RunActivations:
    """conv1 carries no class information, conv2 all of it, conv3 a copy of conv2 (3×3 maps)."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(120) % 2
    conv1 = torch.rand(120, 8, generator=gen)
    conv2 = torch.rand(120, 16, generator=gen)
    conv2[:, 0] += 2.0 * labels
    conv3 = 2.0 * torch.cat([conv2, conv2], dim=1)  # the same representation: CKA 1
    probes = {"conv1": torch.rand(8, 8, 15, 15, generator=gen), "conv2": torch.rand(8, 16, 7, 7, generator=gen),
              "conv3": torch.rand(8, 32, 3, 3, generator=gen)}
    stats: dict[str, dict[str, float]] = {}
    for key, value in activation_statistics(probes).items():
        stat, _, layer = key.partition("/")
        stats.setdefault(stat, {})[layer] = value
    return RunActivations("id", "run", probes, {"conv1": conv1, "conv2": conv2, "conv3": conv3}, labels, stats)


def test_evidence_table_and_answers_for_a_run_that_learned() -> None:
    ablation = Ablation("abl", {"conv3": (0.001, 0.004)}, "recommended: without conv3 …")
    e = explain(_run(), LEARNED, ablation=ablation, depth=None, depth_command="convscope depth --data x", folds=3)
    rows = {row.layer: row for row in e.rows}
    assert rows["conv1"].noise is not None and rows["conv3"].noise is None and rows["conv3"].noise_na == "n/a (3×3)"
    assert rows["conv2"].gain > 0.3 and counts(rows["conv2"].gain, rows["conv2"].gain_se)
    assert abs(rows["conv3"].cka_previous - 1.0) < 1e-9 and rows["conv3"].drop == 0.001
    assert rows["conv1"].cka_previous != rows["conv1"].cka_previous  # NaN: no layer before conv1
    (conv2,) = [line for line in e.maps if line.startswith("conv2 ")]
    assert re.search(r"classes linearly readable at 1\.000 ± 0\.\d{3} \(a linear probe, 3-fold on 120 analysis "
                     r"images; gain \+", conv2), conv2
    useful = "\n".join(e.useful)
    assert "conv2: adds class information" in useful and "conv3: adds no linearly readable" in useful
    assert "bypassing it costs +0.001 ± 0.004 accuracy — nothing measurable (a tie)" in useful
    (line,) = [line for line in e.useful if line.startswith("looking noisy is not being useless: ")]
    assert "conv2 (noise 1.0" in line and "conv3" not in line  # uniform-noise maps, yet useful; conv3 adds nothing
    assert e.depth == ["no depth study on this data yet: convscope depth --data x answers it (k-fold cross-validation "
                       "per depth, one-standard-error rule)"]
    text = short_text(e)
    assert "n/a (3×3)" in text and "How many conv layers are enough?" in text
    page = report_html(e, "id", {})
    assert "Evidence per layer" in page and "act_noise/convK" in page


def test_no_verdicts_on_a_run_that_did_not_learn() -> None:
    chance = Training("run", (0.5, 0.5, 0.5, 0.51), 400, 0.5)
    e = explain(_run(), chance, ablation=None, depth=None, folds=3)
    assert e.training_problems and e.useful[0].startswith("not enough evidence: run did not learn")
    assert len(e.useful) == 1 and "adds" not in e.useful[0]
    assert e.maps[0].startswith("not enough evidence about what the maps mean")
    assert 'class="warning"' in report_html(e, "id", {})


def test_a_cost_beyond_its_error_but_under_the_threshold_is_a_tie_said_as_such() -> None:
    small = Ablation("abl", {"conv3": (0.015, 0.005)}, "recommended: without conv3 …")
    e = explain(_run(), LEARNED, ablation=small, depth=None, folds=3)
    assert "bypassing it costs +0.015 ± 0.005 accuracy — under the 0.020 that counts (a tie)" in "\n".join(e.useful)


def test_the_differ_sentence_only_when_the_depth_study_and_the_ablation_differ() -> None:
    costly = Ablation("abl", {"conv3": (0.05, 0.01)}, "recommended: keep all 3 blocks …")
    e = explain(_run(), LEARNED, ablation=costly, depth=DepthAnswer("d", "recommended depth: 2 — a tie …", 2), folds=3)
    assert "the network needs it" in "\n".join(e.useful)
    assert e.depth[-1].startswith("the two answers differ: bypassing conv3 in this network (retrained with it "
                                  "bypassed) loses accuracy beyond noise, while a 2-block network is as good")
    assert "average-pool conv2's maps down" in e.depth[-1] and "head was built" not in e.depth[-1]
    gap = explain(_run(), LEARNED, ablation=costly, depth=DepthAnswer("d", "…", 2), folds=3, head="gap")
    assert "how the two train" in gap.depth[-1]
    # bypassing the last two of three blocks pools conv1's maps, whatever depth the study recommends
    last_two = Ablation("abl", {"conv2–conv3": (0.05, 0.01)}, "recommended: keep all 3 blocks …")
    deeper = explain(_run(), LEARNED, ablation=last_two, depth=DepthAnswer("d", "recommended depth: 1", 1), folds=3)
    assert "bypassing conv2–conv3 in this network (retrained with them bypassed)" in deeper.depth[-1]
    assert "average-pool conv1's maps down" in deeper.depth[-1]
    assert "1-block network's head reads conv1's maps whole" in deeper.depth[-1]
    agree = {  # depth 3 keeps conv3, which the ablation needs; a free conv3 agrees with depth 2
        "keeps": explain(_run(), LEARNED, ablation=costly, depth=DepthAnswer("d", "recommended depth: 3", 3), folds=3),
        "free": explain(_run(), LEARNED, ablation=Ablation("abl", {"conv3": (0.001, 0.004)}, "…"),
                        depth=DepthAnswer("d", "recommended depth: 2", 2), folds=3),
        "no ablation": explain(_run(), LEARNED, depth=DepthAnswer("d", "recommended depth: 2", 2), folds=3),
    }
    for case, explained in agree.items():
        assert not any("differ" in line for line in explained.depth), (case, explained.depth)
    unfinished = explain(_run(), LEARNED, ablation=costly, depth=DepthAnswer("d", "no recommendation: … rerun with "
                                                                             "--timeout 20m", None),
                         depth_command="convscope depth …", folds=3)
    assert unfinished.depth == ["depth study d: no recommendation: … rerun with --timeout 20m"]  # its advice, alone


def test_looking_noisy_only_about_a_layer_measured_noisy() -> None:
    """A 3×3 layer that carries the classes has no noise measure: it is not called noisy."""
    run = _run()
    labels = run.labels
    conv2 = torch.rand(120, 16, generator=torch.Generator().manual_seed(1))
    conv3 = torch.rand(120, 32, generator=torch.Generator().manual_seed(2))
    conv3[:, 0] += 3.0 * labels
    run = RunActivations("id", "run", run.probes, {"conv1": run.analysis["conv1"], "conv2": conv2, "conv3": conv3},
                         labels, run.stats)
    e = explain(run, LEARNED, folds=3)
    rows = {row.layer: row for row in e.rows}
    assert rows["conv3"].noise is None and counts(rows["conv3"].gain, rows["conv3"].gain_se)
    assert not any(line.startswith("looking noisy") and "conv3" in line for line in e.useful), e.useful


def test_drops_from_an_ablations_results() -> None:
    results = {"variants": [{"bypass": [], "drop": None, "drop_standard_error": None},
                            {"bypass": [5], "drop": 0.05, "drop_standard_error": 0.01},
                            {"bypass": [4, 5], "drop": 0.07, "drop_standard_error": 0.002}]}
    assert drops_from_results(results) == {"conv5": (0.05, 0.01), "conv4–conv5": (0.07, 0.002)}


LAST_TWO_ABLATED = {"variants": [  # the photo sample's ablation of a 5-block run, bypassing its last 1 and 2 blocks
    {"bypass": [], "folds": [0, 1, 2], "accuracies": [0.7269, 0.7592, 0.7397], "drop": None,
     "drop_standard_error": None},
    {"bypass": [5], "folds": [0, 1, 2], "accuracies": [0.7112, 0.7149, 0.7217], "drop": 0.0260,
     "drop_standard_error": 0.0092},
    {"bypass": [4, 5], "folds": [0, 1, 2], "accuracies": [0.6969, 0.6759, 0.7052], "drop": 0.0493,
     "drop_standard_error": 0.0171}]}


def test_a_block_bypassed_only_with_the_blocks_after_it_gets_what_it_adds() -> None:
    (conv4,) = further_drops_from_results(LAST_TWO_ABLATED).items()
    layer, (lost, error, after) = conv4
    assert (layer, after) == ("conv4", "conv5")
    assert abs(lost - (0.0143 + 0.0390 + 0.0165) / 3) < 1e-9 and abs(error - 0.00793) < 1e-4  # paired by fold
    folds_unknown = {"variants": [{k: v for k, v in variant.items() if k != "folds"}
                                  for variant in LAST_TWO_ABLATED["variants"]]}
    assert further_drops_from_results(folds_unknown) == {}  # written before fold numbers were kept: no pairing
    shuffled = {"variants": [*LAST_TWO_ABLATED["variants"][:2], {**LAST_TWO_ABLATED["variants"][2], "folds": [2, 1, 0],
                                                                "accuracies": [0.7052, 0.6759, 0.6969]}]}
    assert further_drops_from_results(shuffled) == further_drops_from_results(LAST_TWO_ABLATED)


def test_explain_says_what_a_block_costs_on_top_of_the_blocks_after_it() -> None:
    ablation = Ablation("abl", drops_from_results(LAST_TWO_ABLATED), "recommended: keep all 5 blocks …",
                        further=further_drops_from_results(LAST_TWO_ABLATED))
    run = _run()
    names = {"conv1": "conv3", "conv2": "conv4", "conv3": "conv5"}  # the made-up run's layers as the last three
    run = RunActivations("id", "run", {names[k]: v for k, v in run.probes.items()},
                         {names[k]: v for k, v in run.analysis.items()}, run.labels,
                         {stat: {names[k]: v for k, v in values.items()} for stat, values in run.stats.items()})
    e = explain(run, LEARNED, ablation=ablation, folds=3)
    rows = {row.layer: row for row in e.rows}
    assert rows["conv5"].drop == 0.0260 and rows["conv5"].drop_after == ""
    assert rows["conv4"].drop_after == "conv5" and abs(rows["conv4"].drop - 0.02327) < 1e-4
    useful = "\n".join(e.useful)
    assert "conv4: " in useful and "bypassing it as well as conv5 costs +0.023 ± 0.008 more accuracy — the network " \
        "needs it" in useful, useful
    assert "conv5: " in useful and "bypassing it costs +0.026 ± 0.009 accuracy — the network needs it" in useful
    assert "+0.023 ± 0.008 (with conv5 gone)" in short_text(e)  # the evidence table's bypass column
