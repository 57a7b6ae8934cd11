"""Correctness of the cross-run comparison: CKA, linear probes, compare_runs and its report."""

from __future__ import annotations

import csv
import html
from pathlib import Path

import numpy as np
import pytest
import torch

from html_check import embedded_pngs, parse
from convscope.pictures.activations import save_analysis_activations, save_probe_activations
from convscope.analysis.cka import cka_matrix, flatten_probe_activations, linear_cka, pooled_activations
from convscope.analysis.compare import NEAR_IDENTICAL_CKA, RunActivations, compare_runs, load_run_activations, stats_from_metrics
from convscope.analysis.compare_report import comparison_figures, summary_lines, write_report
from convscope.analysis.verdicts import Training
from convscope.analysis.probes import chance_accuracy, linear_probe_accuracy, probe_folds


# --------------------------------------------------------------------------- CKA


def test_cka_of_a_representation_with_itself_is_one_and_invariant() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 30))
    rotation, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, 3.7 * x + 5.0) == pytest.approx(1.0, abs=1e-12)  # isotropic scale, shift
    assert linear_cka(x, x @ rotation) == pytest.approx(1.0, abs=1e-10)  # orthogonal rotation
    stretched = x * np.linspace(0.1, 10.0, 30)  # anisotropic scaling is NOT an invariance
    assert linear_cka(x, stretched) < 0.9


def test_cka_of_independent_representations_is_near_its_small_bias() -> None:
    # For independent centred Gaussians with p, q << n, E[CKA] ≈ sqrt(p q) / (n + p) — 0.038
    # for n = 500, p = q = 20 (200 seeds: mean 0.038, max 0.047). A real relation scores far above.
    n, p, q = 500, 20, 20
    values = [linear_cka(rng.standard_normal((n, p)), rng.standard_normal((n, q)))
              for rng in (np.random.default_rng(seed) for seed in range(5))]
    assert max(values) < 0.06
    assert np.mean(values) == pytest.approx(np.sqrt(p * q) / (n + p), rel=0.25)


def test_wide_and_narrow_formulas_agree_and_matrix_is_symmetric() -> None:
    rng = np.random.default_rng(1)
    wide_x, wide_y = rng.standard_normal((12, 300)), rng.standard_normal((12, 200))  # Gram form
    xc, yc = wide_x - wide_x.mean(0), wide_y - wide_y.mean(0)
    feature_form = np.square(yc.T @ xc).sum() / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert linear_cka(wide_x, wide_y) == pytest.approx(feature_form, rel=1e-9)
    reps = {"a": rng.standard_normal((50, 4)), "b": rng.standard_normal((50, 6)), "c": rng.standard_normal((50, 2))}
    matrix = cka_matrix(reps, reps)
    assert matrix.shape == (3, 3)
    np.testing.assert_allclose(matrix, matrix.T)
    np.testing.assert_allclose(np.diag(matrix), 1.0)
    assert np.isnan(linear_cka(np.ones((10, 3)), reps["a"][:10]))  # constant: undefined
    with pytest.raises(ValueError, match="same samples"):
        linear_cka(reps["a"], reps["b"][:40])


def test_flatten_and_pool_shapes() -> None:
    flat = flatten_probe_activations({"conv1": torch.zeros(4, 3, 5, 5, dtype=torch.float16)})
    assert flat["conv1"].shape == (4, 75) and flat["conv1"].dtype == np.float64
    pooled = pooled_activations({"conv1": torch.zeros(9, 3), "labels": torch.zeros(9, dtype=torch.int64)})
    assert list(pooled) == ["conv1"] and pooled["conv1"].shape == (9, 3)


# --------------------------------------------------------------------------- linear probes


def test_probe_on_label_independent_features_scores_chance() -> None:
    rng = np.random.default_rng(2)
    labels = np.repeat([0, 1], 200)
    mean, std = linear_probe_accuracy(rng.standard_normal((400, 16)), labels)
    assert chance_accuracy(labels) == 0.5
    assert abs(mean - 0.5) < 0.08 and std >= 0.0


def test_probe_on_logits_matches_the_models_accuracy() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 600)
    logits = 2.0 * np.eye(2)[labels] + rng.standard_normal((600, 2))  # a ~92 % model's logits
    model_accuracy = float(np.mean(logits.argmax(1) == labels))
    mean, _ = linear_probe_accuracy(logits, labels)
    assert mean == pytest.approx(model_accuracy, abs=0.04)


def test_folds_shrink_to_the_smallest_class_and_chance_is_the_majority_share() -> None:
    labels = np.array([0] * 9 + [1] * 3)
    assert probe_folds(labels, 5) == 3
    assert chance_accuracy(labels) == 0.75
    assert 0.0 <= linear_probe_accuracy(np.random.default_rng(0).standard_normal((12, 2)), labels)[0] <= 1.0
    with pytest.raises(ValueError, match="two classes"):
        probe_folds(np.zeros(8), 5)


# --------------------------------------------------------------------------- compare_runs


P, N = 6, 120


def _write_run(folder: Path, seed: int, *, analysis: bool = True) -> None:
    """Probe pairs for epochs 1 and 3 and an analysis pair; conv3 = conv2 × 3 (a planted duplicate)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(N) % 2
    ids, probe_labels = [f"p{i}" for i in range(P)], [i % 2 for i in range(P)]
    for epoch in (1, 3):
        conv2 = torch.rand(P, 8, 4, 4, generator=gen)
        conv1 = torch.rand(P, 4, 8, 8, generator=gen) + 10 * epoch  # tells the epochs apart
        probes = {"conv1": conv1, "conv2": conv2, "conv3": conv2 * 3}
        save_probe_activations(folder, epoch, probes, probe_ids=ids, labels=probe_labels, class_names=["cat", "dog"])
    if analysis:
        conv2 = labels[:, None] * 1.5 + torch.randn(N, 8, generator=gen)
        pooled = {"conv1": torch.randn(N, 4, generator=gen), "conv2": conv2, "conv3": conv2 * 3}
        save_analysis_activations(folder, pooled, labels=labels, class_names=["cat", "dog"])


def test_load_picks_the_last_epoch_and_names_an_empty_folder(tmp_path: Path) -> None:
    _write_run(tmp_path / "a", 0)
    run = load_run_activations("id-a", "a", tmp_path / "a")
    assert run.epoch == 3 and run.probe_ids == tuple(f"p{i}" for i in range(P))
    assert list(run.probes) == ["conv1", "conv2", "conv3"] and run.probes["conv1"].shape == (P, 4, 8, 8)
    assert run.probes["conv1"].min() >= 30  # epoch 3's, not epoch 1's
    assert run.analysis is not None and "labels" not in run.analysis and run.labels is not None
    assert run.stats is not None and set(run.stats["act_zero_fraction"]) == {"conv1", "conv2", "conv3"}
    assert set(run.stats["act_noise"]) == {"conv1"}  # 8×8; the 4×4 layers are too small
    given = load_run_activations("id-a", "a", tmp_path / "a", metrics={"act_noise/conv1": 0.3, "loss": 1.0})
    assert given.stats == {"act_noise": {"conv1": 0.3}} == stats_from_metrics({"act_noise/conv1": 0.3})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        load_run_activations("x", "x", tmp_path / "empty")


def test_compare_refuses_duplicate_ids_and_skips_pairs_without_shared_samples() -> None:
    probes = {"conv1": torch.rand(4, 2, 3, 3)}
    a = RunActivations("x", "a", probes, probe_ids=("p0", "p1", "p2", "p3"))
    b = RunActivations("y", "b", probes, probe_ids=("q0", "q1", "q2", "q3"))
    with pytest.raises(ValueError, match="unique"):
        compare_runs([a, a])
    c = compare_runs([a, b])
    assert c.within["x"].matrix.shape == (1, 1) and not c.across and not c.probes
    assert any("a vs b: no shared sample set" in line for line in summary_lines(c))


def test_report_escapes_run_names(tmp_path: Path) -> None:
    hostile = '<img src=x onerror="alert(1)"> & co'
    probes = {"conv1": torch.rand(4, 2, 3, 3, generator=torch.Generator().manual_seed(0))}
    ids = ("p0", "p1", "p2", "p3")
    c = compare_runs([RunActivations("x", hostile, probes, probe_ids=ids),
                      RunActivations("y", "plain", {"conv1": probes["conv1"] * 2}, probe_ids=ids)])
    figures = comparison_figures(c)
    report = write_report(c, tmp_path, figures)[0].read_text(encoding="utf-8")
    assert len(embedded_pngs(report)) == len(figures) == 3  # the name's <img> is text, not an image
    assert hostile not in report and html.escape(hostile) in report
    assert any(hostile in t for t in parse(report).text)


def test_compare_runs_report_and_summary(tmp_path: Path) -> None:
    _write_run(tmp_path / "a", 0)
    _write_run(tmp_path / "b", 1)
    _write_run(tmp_path / "c", 2, analysis=False)
    runs = [load_run_activations("id-a", "run a", tmp_path / "a"),
            load_run_activations("id-a2", "run a", tmp_path / "a"),  # the same run again
            load_run_activations("id-b", "run b", tmp_path / "b"),
            load_run_activations("id-c", "run c", tmp_path / "c")]
    c = compare_runs(runs, folds=3)

    assert set(c.within) == {"id-a", "id-a2", "id-b", "id-c"}
    assert c.within["id-a"].matrix.shape == (3, 3) and c.within["id-a"].source == "analysis"
    assert c.within["id-c"].source == "probes" and c.within["id-c"].n == P
    assert len(c.across) == 6
    same = c.across[("id-a", "id-a2")]
    assert same.matrix.shape == (3, 3) and same.source == "analysis" and same.n == N
    np.testing.assert_allclose(np.diag(same.matrix), 1.0, atol=1e-9)
    assert c.across[("id-a", "id-c")].source == "probes"  # no shared analysis set → the shared probes
    assert c.within["id-a"].matrix[1, 2] == pytest.approx(1.0) and NEAR_IDENTICAL_CKA < 1.0
    curve = c.probes["id-a"]
    assert curve.layers == ["conv1", "conv2", "conv3"] and curve.folds == 3 and "id-c" not in c.probes
    assert curve.mean[1] > curve.mean[0] + 0.1 and abs(curve.gain[2]) < 0.02
    assert curve.gain[0] == pytest.approx(curve.mean[0] - 0.5)

    assert summary_lines(c)[:2] == ["run a: no verdicts: its validation accuracy history is unknown"] * 2
    learned = Training("run", (0.6, 0.9, 0.95, 0.95), 400, 0.5)
    c.training = {run_id: learned for run_id in c.names}
    c.training["id-a2"] = Training("run a", (0.5, 0.5, 0.51, 0.5), 400, 0.5)  # sat at chance: nothing to conclude
    lines = summary_lines(c)
    assert "run a: no verdicts: run a did not learn (0.500 on 400 validation images, chance 0.500) — try more " \
        "epochs, more data or another --lr" in lines
    assert not any(line.startswith("run a vs run a:") for line in lines)  # the pair with it gets no verdict either
    assert any("run b: conv2 and conv3 are near-identical" in line and "conv3 adds little" in line for line in lines)
    assert not any("conv1 and conv2 are near-identical" in line for line in lines)
    assert not any(line.startswith("run c: conv") for line in lines)  # 6 probe images: no CKA claims
    assert any("CKA of run c, " in line and "fewer than" in line for line in lines)
    assert any(line.startswith("run a: linear probe accuracy rises from") and "conv3 +0.00" in line for line in lines)
    assert any("run c: no analysis set" in line for line in lines)

    figures = comparison_figures(c)
    assert {"cka_within_run_a", "cka_within_run_a_2", "linear_probes", "activation_stats"} <= set(figures)
    heatmap_axes = figures["cka_within_run_b"].axes[0]
    assert [t.get_text() for t in heatmap_axes.get_xticklabels()] == ["conv1", "conv2", "conv3"]
    assert any(t.get_text() == "1.00" for t in heatmap_axes.texts)
    paths = write_report(c, tmp_path / "report", figures)
    assert paths[0].name == "report.html" and all(path.is_file() for path in paths)
    assert {path.name for path in paths if path.suffix == ".png"} == {f"{key}.png" for key in figures}
    report = paths[0].read_text(encoding="utf-8")
    embedded = embedded_pngs(report)  # self-contained: every figure inline, nothing linked
    assert sorted(embedded) == sorted((tmp_path / "report" / f"{key}.png").read_bytes() for key in figures)
    parsed = parse(report)
    assert parsed.count("table") == 1 + 1 + 4 + 6 + 1  # runs, probes, within ×4, across ×6, statistics
    assert '<th scope="row">conv2</th>' in report and '<td class="num">1.00</td>' in report
    assert "Summary" in parsed.text and any("conv3 adds little" in t for t in parsed.text)
    with (tmp_path / "report" / "cka_within.csv").open(newline="") as handle:
        within = list(csv.DictReader(handle))
    assert len(within) == 4 * 9 and float(within[0]["cka"]) == pytest.approx(1.0)
    with (tmp_path / "report" / "cka_across.csv").open(newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 6 * 9
    with (tmp_path / "report" / "linear_probes.csv").open(newline="") as handle:
        probes = list(csv.DictReader(handle))
    assert len(probes) == 3 * 3 and probes[0]["gain_over"] == "chance" and probes[1]["gain_over"] == "conv1"


def test_probe_differences_inside_the_noise_are_called_ties_with_their_interval() -> None:
    import numpy as np

    from convscope.analysis.compare_report import _probe_sentence
    from convscope.analysis.probes import ProbeCurve

    def curve(gains: list[float], errors: list[float]) -> ProbeCurve:
        mean = 0.5 + np.cumsum(gains)
        return ProbeCurve([f"conv{i + 1}" for i in range(len(gains))], mean, np.zeros(len(gains)), np.array(gains),
                          0.5, 256, 5, np.array(errors))

    ties = _probe_sentence(curve([0.3, -0.02, 0.02], [0.02, 0.03, 0.03]))
    assert "then stays flat (conv2 -0.02 ± 0.03 (a tie), conv3 +0.02 ± 0.03 (a tie))" in ties, ties
    assert ties.endswith("(probes cross-validated 5-fold on 256 analysis images)")
    real = _probe_sentence(curve([0.3, -0.1, 0.0], [0.02, 0.01, 0.01]))
    assert "then ends at 0.70 (conv2 -0.10 ± 0.01, conv3 +0.00 ± 0.01 (a tie))" in real, real
