"""What a run keeps of its epochs' pictures and probe activations (``--visual-epochs``), and what a
study's trials keep by default: pictures of the first and last epoch, the latest probe activations,
statistics every epoch; ``--keep-all`` and an explicit ``--visual-epochs all`` keep every epoch's; and
``latest`` (``auto`` on CUDA), where training never waits for a picture."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import optuna
import pytest
import torch
from mlflow import MlflowClient

from convscope.analysis.compare import load_run_activations
from convscope.cli.main import build_parser, parse
from convscope.cli.search_cmd import build_settings
from convscope.pictures.activations import save_probe_activations
from convscope.pictures.epoch_visuals import EpochVisuals, Probes, picture_mode
from convscope.search.defaults import FOLDER_TEST_FRACTION, PHOTO_EPOCHS, PHOTO_SPACE, photo_space, study_defaults
from convscope.search.session import run_study
from convscope.tracking.background import BackgroundTracker
from convscope.train.batches import Normalizer
from convscope.train.config import build_config
from convscope.train.errors import ConfigError
from convscope.train.model import build_model
from convscope.train.synthetic import make_synthetic

FAST = ["--preset", "tiny", "--image-size", "32", "--fix", "synthetic_size=300", "--fix", "probes_per_class=2",
        "--fix", "analysis_size=32", "--no-tensorboard", "--pruner", "none"]


class _Recorder:
    """A sink that records the steps of its pictures and metrics and the files it was given."""

    def __init__(self) -> None:
        self.image_steps: dict[str, list[int]] = {}
        self.metric_steps: list[int] = []
        self.files: list[tuple[str, dict]] = []

    def log_image(self, key: str, image: object, step: int) -> None:
        self.image_steps.setdefault(key, []).append(step)

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.metric_steps.append(step)

    def log_file(self, path: Path, artifact_path: str = "") -> None:
        if path.suffix == ".json":
            self.files.append((path.name, json.loads(path.read_text())))

    def links(self) -> dict[str, str]:
        return {}

    def close(self, status: object = None) -> None: ...


def _visuals(tmp_path: Path, pictures: str, tracker: object = None) -> tuple[EpochVisuals, _Recorder, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_model(build_config("tiny", {"model": {"image_size": 16}}).model)
    images, labels = make_synthetic(4, 16, seed=0)
    probes = Probes(Normalizer.fit(images)(images), images, labels, tuple(f"p{i}" for i in range(4)))
    sink = _Recorder()
    visuals = EpochVisuals(tracker or sink, model.feature_layers(), probes, ["a", "b"], tmp_path,  # type: ignore[arg-type]
                           first_conv=model.first_conv(), pictures=pictures)
    return visuals, sink, model


def test_ends_draws_the_first_and_last_epoch_and_rewrites_the_latest_activations(tmp_path: Path) -> None:
    visuals, sink, model = _visuals(tmp_path, "ends")
    for step in range(5):  # step 0 is the untrained network
        visuals.log(model, step)
    visuals.finish()
    visuals.finish()  # nothing left to draw: no second picture of epoch 4
    assert sink.image_steps and all(steps == [1, 4] for steps in sink.image_steps.values())
    assert sink.metric_steps == [0, 1, 2, 3, 4]  # statistics every epoch
    assert {name for name, _ in sink.files} == {"latest.json"}
    assert [meta["step"] for _, meta in sink.files] == [0, 1, 2, 3, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json", "latest.safetensors"]


def test_ends_after_the_first_epoch_needs_no_second_picture(tmp_path: Path) -> None:
    visuals, sink, model = _visuals(tmp_path, "ends")
    visuals.log(model, 0)
    visuals.log(model, 1)
    visuals.finish()  # the last epoch was the first: already drawn
    assert all(steps == [1] for steps in sink.image_steps.values())


def test_all_draws_every_epoch(tmp_path: Path) -> None:
    visuals, sink, model = _visuals(tmp_path, "all")
    for step in range(3):
        visuals.log(model, step)
    visuals.finish()
    assert all(steps == [0, 1, 2] for steps in sink.image_steps.values())
    assert [name for name, _ in sink.files] == ["epoch_0000.json", "epoch_0001.json", "epoch_0002.json"]


def test_compare_reads_the_latest_pair_by_its_recorded_epoch(tmp_path: Path) -> None:
    def save(step: int, stem: str | None) -> None:
        save_probe_activations(tmp_path, step, {"conv1": torch.full((2, 3, 4, 4), float(step))}, probe_ids=["a", "b"],
                               labels=[0, 1], class_names=["cat", "dog"], stem=stem)

    save(2, None)
    save(7, "latest")
    run = load_run_activations("r", "r", tmp_path)
    assert run.epoch == 7 and float(run.probes["conv1"].float().mean()) == 7.0
    save(9, None)  # an epoch file newer than latest wins
    assert load_run_activations("r", "r", tmp_path).epoch == 9
    (tmp_path / "latest.json").write_text(json.dumps({"format": "convscope.activations/1"}))
    with pytest.raises(ValueError, match=r"latest\.json records no epoch"):
        load_run_activations("r", "r", tmp_path)


def test_study_defaults_give_way_to_what_the_user_set(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    for name in ("cat", "dog"):
        (photos / name).mkdir(parents=True)
    base = build_config("tiny", {"data": {"data": str(photos)}})
    assert (base.tracking.visual_epochs, base.data.test_fraction) == ("auto", 0.0)  # a train run: every epoch off CUDA
    plain = study_defaults(base, {}, keep_all=False)
    assert (plain.tracking.visual_epochs, plain.data.test_fraction) == ("ends", FOLDER_TEST_FRACTION)
    assert study_defaults(base, {}, keep_all=True).tracking.visual_epochs == "all"
    chosen = study_defaults(build_config("tiny", {"data": {"data": str(photos)}, "tracking": {"visual_epochs": "all"}}),
                            {"tracking": {"visual_epochs": "all"}, "data": {"test_fraction": 0.0}}, keep_all=False)
    assert (chosen.tracking.visual_epochs, chosen.data.test_fraction) == ("all", 0.0)
    synthetic = study_defaults(build_config("tiny", {}), {}, keep_all=False)
    assert synthetic.data.test_fraction == 0.0  # no test split is carved from generated data
    assert (synthetic.model, synthetic.optim) == (build_config("tiny", {}).model, build_config("tiny", {}).optim)
    assert (plain.model.padding, plain.model.head, plain.model.head_activation) == (1, "gap", True)  # real photos
    assert (plain.optim.label_smoothing, plain.optim.tta, plain.optim.epochs) == (0.1, True, PHOTO_EPOCHS)
    mine = study_defaults(build_config("tiny", {"data": {"data": str(photos)}, "optim": {"epochs": 3},
                                                "model": {"head": "flatten"}}),
                          {"optim": {"epochs": 3}, "model": {"head": "flatten"}}, keep_all=False)
    assert (mine.optim.epochs, mine.model.head, mine.model.padding) == (3, "flatten", 1)
    assert photo_space(base, {"depth": "2..4"}) == {**PHOTO_SPACE, "depth": "2..4"}
    assert photo_space(build_config("tiny", {}), {"depth": "2..4"}) == {"depth": "2..4"}


def test_visual_epochs_takes_auto_all_latest_or_ends() -> None:
    with pytest.raises(ConfigError, match="visual-epochs.*one of auto, all, latest, ends"):
        build_config("tiny", {"tracking": {"visual_epochs": "some"}})
    assert build_config("tiny", {}).tracking.visual_epochs == "auto"


def test_auto_keeps_every_epoch_off_cuda_and_never_waits_on_cuda() -> None:
    assert picture_mode("auto", torch.device("cpu")) == "all"
    assert picture_mode("auto", torch.device("cuda")) == "latest"
    assert picture_mode("all", torch.device("cuda")) == "all" and picture_mode("ends", torch.device("cpu")) == "ends"


class _HeldSink(_Recorder):
    """A recorder whose pictures wait for ``release`` once ``hold`` is set: a drawing slower than training."""

    def __init__(self) -> None:
        super().__init__()
        self.hold, self.release, self.drawing = threading.Event(), threading.Event(), threading.Event()
        self.tags: dict[str, str] = {}

    def log_image(self, key: str, image: object, step: int) -> None:
        if self.hold.is_set():
            self.drawing.set()
            assert self.release.wait(30)
        super().log_image(key, image, step)

    def set_tags(self, tags: dict) -> None:
        self.tags.update(tags)


def test_latest_never_waits_for_pictures_and_draws_the_first_and_the_last_epoch(tmp_path: Path) -> None:
    sink = _HeldSink()
    tracker = BackgroundTracker(sink)  # type: ignore[arg-type]
    visuals, _, model = _visuals(tmp_path, "latest", tracker)
    visuals.log(model, 0)
    visuals.log(model, 1)
    tracker.flush()
    sink.hold.set()  # from now on drawing takes until release
    visuals.log(model, 2)
    assert sink.drawing.wait(30)  # epoch 2's pictures are being drawn, and wait
    for step in (3, 4, 5):  # training goes on meanwhile: these return although nothing can be drawn
        visuals.log(model, step)
    sink.release.set()
    said: list[str] = []
    visuals.finish(said.append)
    visuals.finish(said.append)  # said once
    tracker.close()
    assert sink.image_steps and all(steps == [0, 1, 2, 5] for steps in sink.image_steps.values())
    assert sorted(sink.metric_steps) == [0, 1, 2, 3, 4, 5]  # statistics of every epoch
    assert sorted(name for name, _ in sink.files) == [f"epoch_000{i}.json" for i in range(6)]  # and activations
    assert visuals.undrawn_epochs() == [3, 4] and tracker.dropped == ["epoch 3 pictures", "epoch 4 pictures"]
    assert sink.tags == {"convscope.picture_epochs": "1-2, 5"}
    assert said == ["convscope: pictures drawn for 3 of 5 epochs (1-2, 5): training ran faster than they could be "
                    "drawn; statistics and probe activations cover every epoch (--visual-epochs all draws every "
                    "epoch, with training waiting for it)"]


def test_latest_says_nothing_when_every_epoch_was_drawn(tmp_path: Path) -> None:
    sink = _HeldSink()
    tracker = BackgroundTracker(sink)  # type: ignore[arg-type]
    visuals, _, model = _visuals(tmp_path, "latest", tracker)
    said: list[str] = []
    for step in range(4):
        visuals.log(model, step)
        tracker.flush()  # the drawing keeps up
    visuals.finish(said.append)
    tracker.close()
    assert all(steps == [0, 1, 2, 3] for steps in sink.image_steps.values())
    assert said == [] and sink.tags == {} and visuals.undrawn_epochs() == []


def _study(runs: Path, *argv: str) -> tuple[optuna.Study, MlflowClient]:
    args = parse(build_parser(), ["search", "--runs-dir", str(runs), *FAST, *argv])
    study = run_study(build_settings(args), echo=lambda line: None)
    return study, MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")


def _kept(client: MlflowClient, run_id: str) -> tuple[set[int], set[str]]:
    steps = {int(a.path.split("+step+")[1].split("+")[0]) for a in client.list_artifacts(run_id, "images")
             if a.path.endswith(".png")}
    return steps, {Path(a.path).name for a in client.list_artifacts(run_id, "activations")}


def test_a_study_keeps_the_ends_by_default_and_everything_with_keep_all(tmp_path: Path) -> None:
    study, client = _study(tmp_path / "lean", "--trials", "1", "--fix", "epochs=3")
    steps, files = _kept(client, study.trials[0].user_attrs["mlflow_run_id"])
    assert steps == {1, 3} and files == {"latest.json", "latest.safetensors", "analysis.json", "analysis.safetensors"}
    study, client = _study(tmp_path / "all", "--trials", "1", "--fix", "epochs=3", "--keep-all")
    steps, files = _kept(client, study.trials[0].user_attrs["mlflow_run_id"])
    assert steps == {0, 1, 2, 3} and {f"epoch_000{i}.json" for i in range(4)} <= files
    assert any((tmp_path / "all" / "checkpoints").rglob("state.pt"))  # and the checkpoint
    study, client = _study(tmp_path / "flag", "--trials", "1", "--fix", "epochs=2", "--visual-epochs", "all")
    assert _kept(client, study.trials[0].user_attrs["mlflow_run_id"])[0] == {0, 1, 2}  # the flag wins


def test_a_pruned_trial_keeps_the_pictures_of_the_epoch_it_was_stopped_at(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(optuna.Trial, "should_prune", lambda self: self.number == 1 and bool(self.storage.get_trial(
        self._trial_id).intermediate_values.keys() >= {2}))
    study, client = _study(tmp_path / "runs", "--trials", "2", "--fix", "epochs=4")
    pruned = study.trials[1]
    assert pruned.state == optuna.trial.TrialState.PRUNED
    steps, files = _kept(client, pruned.user_attrs["mlflow_run_id"])
    assert steps == {1, 2} and "latest.json" in files


def test_a_run_with_latest_has_the_ends_drawn_and_every_epochs_statistics(tmp_path: Path) -> None:
    from convscope.train.run import run

    config = build_config("tiny", {"model": {"image_size": 32}, "optim": {"epochs": 4},
                                   "data": {"synthetic_size": 300, "probes_per_class": 2, "analysis_size": 32},
                                   "tracking": {"runs_dir": str(tmp_path), "visual_epochs": "latest",
                                                "tensorboard": False}})
    result = run(config, progress=False, echo=lambda line: None)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = result.links["mlflow_run_id"]
    steps, files = _kept(client, run_id)
    assert {0, 1, 4} <= steps  # which epochs between got pictures depends on how fast they were drawn
    assert {f"epoch_000{i}.json" for i in range(5)} <= files
    assert [m.step for m in client.get_metric_history(run_id, "act_mean/conv1")] == [0, 1, 2, 3, 4]
    tags = client.get_run(run_id).data.tags
    assert tags["convscope.pictures"] == "latest"
    drawn = tags.get("convscope.picture_epochs")  # set only when some epoch has no pictures
    assert drawn is None or (drawn.startswith("1") and drawn.endswith("4"))  # "1, 4", "1, 3-4", "1-2, 4": 1 and 4
