"""k-fold splits, the known-depth synthetic task, the one-standard-error rule and ``convscope depth``."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

import convscope.analysis.depth

from convscope import analysis
from e2e_helpers import convscope
from html_check import embedded_pngs, parse
from convscope.cli.main import build_parser
from convscope.cli.depth_cmd import build_depth_settings
from convscope.search.sources import run_config
from convscope.analysis.depth import DepthSettings, ablation_variants, depth_variants, run_depth_study
from convscope.analysis.depth_verdict import Outcome, Variant, drop, one_standard_error, recommend
from convscope.search.storage import open_storage, resolve_storage
from convscope.tracking.mlflow_sink import MlflowTracker
from convscope.tracking.stores import resolve_stores
from convscope.train.config import build_config, to_dict
from convscope.train.config_sections import DataConfig
from convscope.train.data import load_data
from convscope.train.splits import stratified_folds
from convscope.train.errors import ConfigError
from convscope.train.synthetic import make_scale_task, pair_layout


# ---------------------------------------------------------------- folds


def test_stratified_folds_are_disjoint_complete_stratified_and_seeded() -> None:
    labels = torch.tensor([0] * 50 + [1] * 31 + [2] * 19)[torch.randperm(100, generator=torch.Generator().manual_seed(1))]
    folds = stratified_folds(labels, 5, seed=3)
    everything = torch.cat(folds)
    assert len(folds) == 5 and len(everything) == 100 and sorted(everything.tolist()) == list(range(100))
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= 1
    per_class = torch.stack([torch.bincount(labels[f], minlength=3) for f in folds])  # fold x class
    assert (per_class.max(0).values - per_class.min(0).values).le(1).all(), per_class
    again = stratified_folds(labels, 5, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(folds, again))
    assert not all(torch.equal(a, b) for a, b in zip(folds, stratified_folds(labels, 5, seed=4)))
    with pytest.raises(ConfigError, match="--folds must be at least 2"):
        stratified_folds(labels, 1, seed=0)
    with pytest.raises(ConfigError, match="class 1 has only 2 images"):
        stratified_folds(torch.tensor([0] * 9 + [1] * 2), 3, seed=0)


def test_load_data_folds_put_every_image_in_one_validation_fold(tmp_path: Path) -> None:
    where = {"cache_dir": tmp_path / "c", "dataset_dir": tmp_path / "d", "progress": False}
    seen: list[str] = []
    for fold in range(3):
        splits = load_data(DataConfig(synthetic_size=90, folds=3, fold=fold), 32, seed=5, **where)
        assert set(splits.train.ids).isdisjoint(splits.val.ids) and len(splits.train) + len(splits.val) == 90
        assert torch.bincount(splits.val.labels).tolist() == [15, 15] and f"fold {fold} of 3" in splits.description
        seen += splits.val.ids
    assert sorted(seen) == sorted(f"synthetic:{i}" for i in range(90))
    with pytest.raises(ConfigError, match="--fold must be between 0 and 2"):
        load_data(DataConfig(synthetic_size=90, folds=3, fold=3), 32, seed=5, **where)
    with pytest.raises(ConfigError, match="needs --folds"):
        load_data(DataConfig(synthetic_size=90, fold=1), 32, seed=5, **where)
    with pytest.raises(ConfigError, match="own train and validation split"):
        load_data(DataConfig(data="cifar10", folds=3), 32, seed=5, **where)
    for part in ("train/a", "train/b", "val/a", "val/b"):
        (tmp_path / "pre" / part).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / "pre" / part / f"{i}.png")
    with pytest.raises(ConfigError, match="fix the split; --folds needs one sub-folder per class"):
        load_data(DataConfig(data=str(tmp_path / "pre"), folds=3), 16, seed=0, **where)


# ---------------------------------------------------------------- the known-depth task


@pytest.mark.parametrize("scale", [2, 3])
def test_scale_task_squares_are_apart_for_shallow_and_together_for_deep_receptive_fields(scale: int) -> None:
    """No window of 2**scale - 1 pixels (scale - 1 blocks of k3 s2) touches two squares; the
    window of the scale-th block at every pair's corner (2**(scale+1) - 1 pixels) holds both."""
    size, w, gap = 32, 2 ** (scale - 1), 2**scale - 2
    masks = []
    for y, x in pair_layout(size, scale):
        for left in (x, x + w + gap):
            mask = torch.zeros(size, size)
            mask[y : y + w, left : left + w] = 1
            masks.append(mask)
        deep = 2 ** (scale + 1) - 1
        assert y % 2**scale == 0 and x % 2**scale == 0 and x + deep <= size - 1
    shallow = 2**scale - 1
    touched = torch.stack([torch.nn.functional.max_pool2d(m[None, None], shallow, stride=1)[0, 0] for m in masks])
    assert touched.sum(0).max() == 1  # every window position sees at most one square


def test_scale_task_is_seeded_and_balanced_and_single_squares_carry_no_label() -> None:
    a, la = make_scale_task(400, 32, seed=1, scale=2)
    b, lb = make_scale_task(400, 32, seed=1, scale=2)
    assert a.dtype == torch.uint8 and a.shape == (400, 3, 32, 32) and torch.equal(a, b) and torch.equal(la, lb)
    assert la.sum().item() == 200
    y, x = pair_layout(32, 2)[0]

    def tint(left: int) -> torch.Tensor:  # red minus green of a 2x2 square, against the gap between the squares
        def red_green(x0: int) -> torch.Tensor:
            patch = a[:, :, y : y + 2, x0 : x0 + 2].float().mean((2, 3))
            return patch[:, 0] - patch[:, 1]
        return red_green(left) - red_green(x + 2)

    first, second = tint(x) > 0, tint(x + 4) > 0
    assert abs(first[la == 0].float().mean() - first[la == 1].float().mean()) < 0.12  # one square alone: no label
    agree = first == second
    assert agree[la == 0].all() and not agree[la == 1].any()  # the pair: the label


# ---------------------------------------------------------------- the one-standard-error rule


def test_one_standard_error_rule_on_hand_made_numbers() -> None:
    means, errors, blocks = [0.70, 0.90, 0.93, 0.94, 0.935], [0.01, 0.02, 0.015, 0.012, 0.02], [1, 2, 3, 4, 5]
    assert one_standard_error(means, errors, blocks) == (2, 3)  # 0.93 >= 0.94 - 0.012; 0.90 is not
    assert one_standard_error(means, [0.0] * 5, blocks) == (2, 3)  # no spread: the band is still 0.02 (0.93 ties)
    assert one_standard_error([0.70, 0.90, 0.915, 0.94], [0.0] * 4, [1, 2, 3, 4]) == (3, 3)  # 0.025 below: no tie
    assert one_standard_error([0.95, 1.0, 1.0], [0.01, 0.0, 0.0], [1, 2, 3]) == (1, 1)  # a tie goes to fewer blocks
    assert one_standard_error([0.9, 0.8], [0.05, 0.0], [1, 2]) == (0, 0)
    assert one_standard_error([0.8, 0.9, 0.89], [0.0, 0.02, 0.0], [5, 4, 4]) == (1, 1)  # equal blocks: higher mean


def _outcome(depth: int, accuracies: list[float], *, pruned: bool = False, rising: float = 0.0, epochs: int = 8,
             bypass: tuple[int, ...] = (), images: int = 400) -> Outcome:
    """A made-up variant: every fold's curve is flat at its final accuracy except the last epoch,
    which rose by ``rising``."""
    base = build_config("tiny", {"model": {"depth": depth, "bypass": bypass}})
    curves = [[a - rising] * (epochs - 1) + [a] for a in accuracies]
    label = f"without conv{bypass[0]}" if bypass else f"depth {depth}"
    return Outcome(Variant(label, label.replace(" ", "-"), base), list(accuracies), pruned=pruned,
                   curves=curves, images=[images] * len(accuracies), chance=0.5)


def test_one_standard_error_rule_and_ties() -> None:
    # SE of depth 3: stdev(0.94, 0.90, 0.93) / sqrt(3) = 0.012; depth 4 was pruned despite its 0.99
    outcomes = [_outcome(1, [0.7, 0.72, 0.71]), _outcome(2, [0.90, 0.93, 0.92]), _outcome(3, [0.94, 0.90, 0.93]),
                _outcome(4, [0.99, 0.5], pruned=True)]
    verdict = recommend(outcomes, "depth")
    assert (verdict.recommended.variant.blocks, verdict.best.variant.blocks) == (2, 3) and not verdict.problems
    assert verdict.sentence.startswith("recommended depth: 2 — a tie: depths 2 and 3 are within 0.020 of the best "
                                       "(depth 3, 0.923 ± 0.012; a difference under 0.020 is a tie"), verdict.sentence
    wide = recommend([_outcome(1, [0.7, 0.72, 0.71]), _outcome(2, [0.86, 0.90, 0.89]), _outcome(3, [0.94, 0.86, 0.90])],
                     "depth")  # the folds disagree: one standard error (0.023) is wider than 0.02
    assert wide.sentence.startswith("recommended depth: 2 — a tie: depths 2 and 3 are within one standard error of "
                                    "the best (depth 3, 0.900 ± 0.023); the one-standard-error rule picks"), wide.sentence
    alone = recommend([_outcome(1, [0.5, 0.52, 0.49]), _outcome(2, [0.99, 1.0, 0.98])], "depth")
    assert alone.sentence.startswith("recommended depth: 2 — the best (0.990 ± 0.006); no shallower depth")
    assert [o.variant.blocks for o in alone.tied] == [2]
    saturated = recommend([_outcome(d, [1.0, 1.0, 1.0]) for d in (2, 3, 4)], "depth")
    assert saturated.recommended.variant.blocks == 2 and "a tie: depths 2, 3 and 4" in saturated.sentence


def test_differences_under_two_points_are_ties_however_many_images() -> None:
    # 4,000 validation images a fold: the standard error (0.004) is far below two points, so the band is 0.020
    close = recommend([_outcome(2, [0.760, 0.765, 0.758], images=4000), _outcome(3, [0.779, 0.782, 0.778], images=4000),
                       _outcome(4, [0.795, 0.797, 0.794], images=4000)], "depth")
    assert close.recommended.variant.blocks == 3 and close.best.variant.blocks == 4
    assert close.sentence.startswith(
        "recommended depth: 3 — a tie: depths 3 and 4 are within 0.020 of the best (depth 4, 0.795 ± 0.004; a "
        "difference under 0.020 is a tie, however small the standard error); the one-standard-error rule picks "
        "the shallowest"), close.sentence
    apart = recommend([_outcome(3, [0.765, 0.768, 0.767], images=4000), _outcome(4, [0.795, 0.797, 0.794], images=4000)],
                      "depth")
    assert apart.recommended.variant.blocks == 4
    assert apart.sentence.startswith("recommended depth: 4 — the best (0.795 ± 0.004); no shallower depth is within "
                                     "0.020"), apart.sentence


def test_a_perfect_score_on_every_fold_is_not_certain_to_zero() -> None:
    # depth 3 missed one of 800 validation images; depth 4 missed none: within noise, a tie, not "depth 4"
    verdict = recommend([_outcome(2, [0.5, 0.51, 0.5], images=267), _outcome(3, [1.0, 0.9963, 1.0], images=267),
                         _outcome(4, [1.0, 1.0, 1.0], images=267)], "depth")
    assert verdict.best.variant.blocks == 4 and verdict.best.standard_error > 0.0015  # 1.000 on 801 images
    assert verdict.sentence.startswith("recommended depth: 3 — a tie: depths 3 and 4"), verdict.sentence


def test_no_recommendation_while_a_depth_is_still_improving_or_nothing_learned() -> None:
    under = recommend([_outcome(2, [0.5, 0.52, 0.5], epochs=4), _outcome(3, [0.78, 0.74, 0.8], rising=0.2, epochs=4),
                       _outcome(4, [0.97, 0.95, 0.99], epochs=4)], "depth")
    assert under.recommended is None and under.best.variant.blocks == 4
    assert under.sentence == ("no recommendation: depth 3 was still improving at epoch 4 (+0.200 over the last 1 "
                              "epoch) — rerun with --epochs 12"), under.sentence
    chance = recommend([_outcome(d, [0.5, 0.53, 0.49]) for d in (1, 2)], "depth")
    assert chance.recommended is None and chance.sentence.startswith(
        "no recommendation: the best variant, depth 1, did not learn (0.507 on 1200 validation images, "
        "chance 0.500) — try more epochs"), chance.sentence
    assert recommend([_outcome(d, [1.0, 1.0]) for d in (1, 2)], "depth").recommended.variant.blocks == 1
    short = recommend([_outcome(d, [1.0, 1.0], epochs=1) for d in (1, 2)], "depth")
    assert short.recommended is None and "a learning curve needs at least 4 epochs to tell flat from rising — rerun with --epochs 12" in short.sentence


def test_ablation_names_the_layer_drops_are_paired_and_ties_are_labelled() -> None:
    full = _outcome(3, [0.95, 0.97, 0.96])
    variants = [full, _outcome(3, [0.60, 0.62, 0.58], bypass=(1,)), _outcome(3, [0.94, 0.97, 0.95], bypass=(2,)),
                _outcome(3, [0.95, 0.96, 0.96], bypass=(3,))]
    assert drop(full, variants[1]) == pytest.approx((0.36, 0.01), abs=1e-9)
    verdict = recommend(variants, "ablate")
    assert verdict.recommended is variants[3]  # conv3 is the widest block of the three: fewest parameters left
    assert verdict.sentence.startswith("recommended: without conv3 (2 blocks, ") and "a tie: " in verdict.sentence
    assert "without conv1" not in verdict.sentence.split("a tie: ")[1].split(" are within")[0]
    needed = recommend([full, variants[1]], "ablate")
    assert needed.sentence.startswith("recommended: keep all 3 blocks — removing any block costs more than 0.020 "
                                      "(accuracy lost, paired over folds: without conv1 +0.360 ± 0.010)")
    at_chance = [_outcome(3, [0.5, 0.51, 0.5]), _outcome(3, [0.5, 0.5, 0.49], bypass=(3,))]
    nothing = recommend(at_chance, "ablate")
    assert nothing.recommended is None and "depth 3 did not learn" in nothing.sentence


# ---------------------------------------------------------------- variants and settings


def test_variants_and_settings_from_flags_study_and_run(tmp_path: Path) -> None:
    base = build_config("seed", {"model": {"image_size": 32}})
    assert [v.widths for v in depth_variants(base, 3, (8, 16, 32, 64))] == [(8,), (8, 16), (8, 16, 32)]
    assert depth_variants(base, 2)[1].widths == (16, 32)
    with pytest.raises(ConfigError, match="--max-depth 5: choose 1 … 4"):
        depth_variants(base, 5)
    three = build_config("seed", {"model": {"depth": 3, "widths": (8, 16, 32)}})
    ablated = ablation_variants(three)
    assert [(v.label, v.widths_text, v.blocks) for v in ablated] == [
        ("all 3 blocks", "8,16,32", 3), ("without conv1", "-,16,32", 2), ("without conv2", "8,-,32", 2),
        ("without conv3", "8,16,-", 2)]
    assert all(v.widths == (8, 16, 32) for v in ablated)  # every other block keeps its width
    last = ablation_variants(three, 2)
    assert [(v.label, v.slug, v.config.model.bypass) for v in last] == [
        ("all 3 blocks", "full", ()), ("without conv3", "without-conv3", (3,)),
        ("without conv2–conv3", "without-conv2-3", (2, 3))]
    with pytest.raises(ConfigError, match="--ablate-last 3: choose 1 … 2"):
        ablation_variants(three, 3)

    runs = tmp_path / "runs"
    study = optuna.create_study(study_name="s", storage=open_storage(resolve_storage(runs)), direction="maximize")
    study.add_trial(optuna.trial.create_trial(params={"depth": 2, "width_1": 8, "width_2": 24, "dropout": 0.2},
                                              distributions={"depth": optuna.distributions.IntDistribution(1, 4),
                                                             "width_1": optuna.distributions.IntDistribution(8, 64),
                                                             "width_2": optuna.distributions.IntDistribution(8, 64),
                                                             "dropout": optuna.distributions.FloatDistribution(0, 0.5)},
                                              value=0.9))
    flags = ["depth", "--runs-dir", str(runs), "--image-size", "32", "--no-mlflow"]
    settings = build_depth_settings(build_parser().parse_args([*flags, "--study", "s"]))
    assert [v.widths for v in settings.variants] == [(8,), (8, 24), (8, 24, 48), (8, 24, 48, 96)]
    assert all(v.config.model.dropout == 0.2 for v in settings.variants) and "best trial #0" in settings.source

    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    experiment = client.create_experiment("convscope", artifact_location=(tmp_path / "artifacts").as_uri())
    config = build_config("seed", {"model": {"depth": 3, "widths": (8, 16, 32), "image_size": 32}})
    unfinished = client.create_run(experiment).info.run_id  # no model yet: the config.yaml it started with
    MlflowTracker(f"sqlite:///{runs / 'mlflow.db'}", "convscope", run_id=unfinished).log_config(to_dict(config))
    assert run_config(build_config("seed", {"tracking": {"runs_dir": str(runs)}}), unfinished).model == config.model
    bare = client.create_run(experiment).info.run_id
    with pytest.raises(ConfigError, match="neither a model/config.json nor a config.yaml"):
        run_config(build_config("seed", {"tracking": {"runs_dir": str(runs)}}), bare)
    from_file = client.create_run(experiment).info.run_id
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps({"config": to_dict(config)}))
    client.log_artifact(from_file, str(tmp_path / "model" / "config.json"), "model")
    settings = build_depth_settings(build_parser().parse_args([*flags, "--ablate", from_file, "--epochs", "1"]))
    assert settings.mode == "ablate" and len(settings.variants) == 4
    assert settings.variants[0].config.optim.epochs == 1 and settings.variants[2].config.model.bypass == (2,)
    with pytest.raises(ConfigError, match="--ablate-last needs --ablate"):
        build_depth_settings(build_parser().parse_args([*flags, "--ablate-last", "2"]))
    with pytest.raises(ConfigError, match="no such run"):
        build_depth_settings(build_parser().parse_args([*flags, "--ablate", "0" * 32]))


def test_prune_folds_stops_a_clearly_worse_depth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop without training: fold accuracies are made up; WilcoxonPruner needs 4 folds."""
    made_up = {1: [0.90, 0.92, 0.91, 0.93, 0.92], 2: [0.60, 0.61, 0.59, 0.62, 0.60], 3: [0.93, 0.89, 0.92, 0.90, 0.91]}
    base = build_config("seed", {"model": {"image_size": 32}, "tracking": {"runs_dir": str(tmp_path), "mlflow": False}})

    class FakePrepared:
        stores = resolve_stores(tmp_path)

    monkeypatch.setattr(analysis.depth, "_prepare", lambda settings, variant, fold: FakePrepared())
    def fake_fold_run(settings: DepthSettings, prepared: object, variant: Variant, fold: int, parent: object,
                      echo: object, outcome: Outcome) -> float:
        accuracy = made_up[variant.blocks][fold]
        outcome.accuracies.append(accuracy)
        outcome.curves.append([accuracy] * 4)
        outcome.images.append(200)
        return accuracy

    monkeypatch.setattr(analysis.depth, "_fold_run", fake_fold_run)
    lines: list[str] = []
    report = run_depth_study(DepthSettings("p", depth_variants(base, 3), folds=5, prune_folds=True), echo=lines.append)
    assert [len(o.accuracies) for o in report.outcomes] == [5, 4, 5] and report.outcomes[1].pruned
    assert report.verdict.recommended.variant.blocks == 1 and "depth 2: pruned after 4 folds" in "\n".join(lines)
    rows = list(csv.DictReader(io.StringIO((report.report_dir / "depth_table.csv").read_text())))
    # depth 3's 0.910 is within depth 1's binomial standard error (0.916 on 1,000 images: ± 0.009)
    assert [r["note"] for r in rows] == ["recommended, best, tie", "pruned", "tie"]
    assert f"report: {report.report_dir / 'report.html'}" in lines
    page = (report.report_dir / "report.html").read_text(encoding="utf-8")
    assert embedded_pngs(page) == [(report.report_dir / "accuracy_vs_depth.png").read_bytes()]
    parsed = parse(page)
    assert parsed.count("table") == 2 and parsed.count("tr") == (1 + 3) + (1 + 5)  # variants, settings
    assert '<p class="lead">recommended depth: 1 — ' in page and "<td>pruned</td>" in page
    assert '<td class="num">0.9160\u00a0±\u00a00.0088</td>' in page  # depth 1's mean ± SE (binomial), right-aligned


# ---------------------------------------------------------------- end to end

# Measured (2 CPU cores, 3 folds, seeds 0 and 1): depth 1 0.47-0.51; depths 2 and 3 1.000 on every fold
# from epoch 2 (no flips or crops: the default random crop keeps this task from being learned).
E2E = ["--data", "synthetic-depth2", "--image-size", "32", "--max-depth", "3", "--folds", "3", "--epochs", "4",
       "--fix", "synthetic_size=600", "--fix", "batch_size=64", "--fix", "flip=false", "--fix", "crop_padding=0",
       "--no-tensorboard"]


@pytest.fixture(scope="module")
def depth_study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    runs = tmp_path_factory.mktemp("depth") / "runs"
    done = convscope("depth", "--runs-dir", str(runs), "--name", "known", *E2E)
    assert done.returncode == 0, done.stderr
    yield runs, done.stdout


@pytest.mark.slow
def test_depth_recommends_the_known_depth_and_logs_the_report(depth_study: tuple[Path, str], tmp_path: Path) -> None:
    runs, stdout = depth_study
    assert "recommended depth: 2 — " in stdout, stdout
    assert stdout.count("fold 1/3") == 3 and "epoch 1/" not in stdout  # quiet: one line per fold run
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("convscope")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`convscope.kind` = 'depth-study'")
    assert parent.info.status == "FINISHED" and parent.data.tags["depth.recommended_blocks"] == "2"
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 9 and all(c.info.status == "FINISHED" for c in children)
    assert sorted((c.data.params["depth"], c.data.params["fold"]) for c in children) == [
        (str(d), str(f)) for d in (1, 2, 3) for f in range(3)]
    assert {c.data.params["folds"] for c in children} == {"3"}
    artifacts = {a.path for path in ("figures", "depth") for a in client.list_artifacts(parent.info.run_id, path)}
    assert {"figures/depth_accuracy_vs_depth.png", "depth/depth_table.csv", "depth/report.html",
            "depth/recommendation.txt"} <= artifacts
    page = Path(client.download_artifacts(parent.info.run_id, "depth/report.html", str(tmp_path))).read_text()
    assert len(embedded_pngs(page)) == 1 and parent.info.run_id in page and "recommended depth: 2 — " in page
    table = Path(client.download_artifacts(parent.info.run_id, "depth/depth_table.csv", str(tmp_path)))
    rows = {int(r["blocks"]): r for r in csv.DictReader(table.open())}
    assert float(rows[1]["mean_accuracy"]) < 0.7 < 0.95 < min(float(rows[2]["mean_accuracy"]), float(rows[3]["mean_accuracy"]))
    assert rows[2]["note"].startswith("recommended") and len(rows[2]["fold_accuracies"].split()) == 3
    history = client.get_metric_history(parent.info.run_id, "cv/mean_accuracy")
    assert sorted(m.step for m in history) == [1, 2, 3]


@pytest.mark.slow
def test_ablate_bypasses_one_block_at_a_time_and_a_one_epoch_ablation_recommends_nothing(
        depth_study: tuple[Path, str]) -> None:
    runs, _ = depth_study
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("convscope")
    (trained,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'known-d3-fold0'")
    done = convscope("depth", "--runs-dir", str(runs), "--ablate", trained.info.run_id, "--folds", "2", "--epochs", "1",
                     "--fix", "synthetic_size=300", "--name", "ablation", "--no-tensorboard")
    assert done.returncode == 0, done.stderr
    assert "no recommendation: " in done.stdout and "a learning curve needs at least 4 epochs to tell flat from rising — rerun with --epochs 12" \
        in done.stdout and "recommended:" not in done.stdout
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`convscope.kind` = 'ablate-study'")
    assert parent.data.tags["depth.recommended"] == "none" and parent.data.tags["depth.ablate_run"] == trained.info.run_id
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert {c.data.params["widths"] for c in children} == {"16,32,64"}  # every other block keeps its width
    assert sorted(c.data.params.get("bypass", "") for c in children) == ["", "", "1", "1", "2", "2", "3", "3"]
    assert {c.data.params["data"] for c in children} == {"synthetic-depth2"}
    results = json.loads((runs / "depth" / "ablation" / "results.json").read_text())
    assert all(v["folds"] == [0, 1] for v in results["variants"])  # what pairs two variants' accuracies by fold
