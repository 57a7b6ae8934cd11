"""The training and evaluation steps (train.step) on the CPU: the graph-ready step trains exactly as the
eager one, capture failure falls back to eager steps with one line, full batches only when graphed, and
the per-epoch work (visuals, checkpoints) runs off the training thread, every epoch of it, in order."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from convscope.tracking.background import BackgroundTracker
from convscope.pictures.epoch_visuals import EpochVisuals, Probes
from convscope.train.batches import DeviceBatches, Normalizer
from convscope.train.checkpoint import load_checkpoint, save_checkpoint, snapshot
from convscope.train.config import build_config
from convscope.train.config_sections import OptimConfig
from convscope.train.loop import evaluate, make_scheduler, train_one_epoch
from convscope.train.model import build_model
from convscope.train.step import Captured, DeviceHyperparameters, Scorer, Stepper, graphs_wanted, make_optimizer, plain_optimizer_state
from convscope.train.synthetic import make_synthetic

CPU = torch.device("cpu")


def _setup(seed: int = 0, images: int = 96, batch: int = 16) -> tuple[nn.Module, DeviceBatches, OptimConfig]:
    config = build_config("tiny", {"model": {"image_size": 16}, "optim": {"epochs": 3, "batch_size": batch}})
    torch.manual_seed(seed)
    model = build_model(config.model)
    data, labels = make_synthetic(images, 16, seed=seed)
    batches = DeviceBatches(data, labels, Normalizer.fit(data), batch, shuffle=True, flip=True, crop_padding=2, seed=seed)
    return model, batches, config.optim


def _train(tensor_hyperparameters: bool, graphed_capture_fails: bool = False) -> tuple[list[float], nn.Module, list[str]]:
    model, batches, optim = _setup()
    optimizer = make_optimizer(model, optim)
    scheduler = make_scheduler(optimizer, optim, len(batches))
    said: list[str] = []
    stepper = Stepper(model, optimizer, scheduler, CPU, tensor_hyperparameters=tensor_hyperparameters,
                      say=said.append)
    if graphed_capture_fails:  # the graphed path on a CPU: warm-up calls, then a capture that cannot work
        stepper.captured.enabled = True
    losses = [train_one_epoch(stepper, batches, progress=False).loss for _ in range(optim.epochs)]
    return losses, model, said


def test_the_step_with_device_tensor_hyperparameters_trains_as_the_eager_step() -> None:
    """One-cycle changes the learning rate and beta1 every step: in device tensors (what a CUDA graph
    reads) they must give the same losses and weights as the plain floats."""
    eager_losses, eager_model, _ = _train(tensor_hyperparameters=False)
    tensor_losses, tensor_model, _ = _train(tensor_hyperparameters=True)
    assert tensor_losses == pytest.approx(eager_losses, rel=1e-4)
    assert eager_losses[-1] < eager_losses[0]  # it did train
    for (name, eager), (_, tensor) in zip(eager_model.state_dict().items(), tensor_model.state_dict().items()):
        assert torch.allclose(eager.float(), tensor.float(), rtol=1e-3, atol=1e-5), name


def test_device_hyperparameters_follow_the_schedule() -> None:
    model, batches, optim = _setup()
    optimizer = make_optimizer(model, optim)
    scheduler = make_scheduler(optimizer, optim, len(batches))
    hyper = DeviceHyperparameters(optimizer, CPU)
    hyper.install()
    lr, beta1 = hyper.tensors[0]
    seen = set()
    optimizer.step()  # (no gradients: nothing moves; the schedule wants a step first)
    for _ in range(len(batches) * 2):
        scheduler.step()
        hyper.sync()
        group = optimizer.param_groups[0]
        assert group["lr"] is lr and group["betas"][0] is beta1  # the very tensors a graph would read
        seen.add((round(float(lr), 8), round(float(beta1), 6)))
    assert len(seen) > 10  # both moved with the one-cycle schedule


def test_a_failed_capture_falls_back_to_eager_steps_with_one_line() -> None:
    eager_losses, eager_model, _ = _train(tensor_hyperparameters=True)
    losses, model, said = _train(tensor_hyperparameters=True, graphed_capture_fails=True)
    assert len(said) == 1 and "CUDA graph capture of the training step failed" in said[0], said
    assert "continuing with eager steps" in said[0]
    assert losses == pytest.approx(eager_losses, rel=1e-5)  # no batch lost or repeated around the capture
    for eager, fell_back in zip(eager_model.parameters(), model.parameters()):
        assert torch.allclose(eager, fell_back, atol=1e-6)


def test_a_partial_batch_runs_outside_the_graph() -> None:
    calls: list[tuple[int, ...]] = []
    captured = Captured(lambda x, y: calls.append(tuple(x.shape)), enabled=True, name="test", say=lambda _: None)
    for size in (4, 4, 3, 4):
        captured(torch.zeros(size, 2), torch.zeros(size, dtype=torch.long))
    assert calls == [(4, 2), (4, 2), (3, 2), (4, 2)]
    assert captured.calls == 3  # the partial batch was not a warm-up call


def test_graphs_are_only_wanted_on_cuda() -> None:
    assert graphs_wanted("auto", torch.device("cpu")) == (False, "CUDA graphs need a CUDA device (this run uses cpu)")
    assert graphs_wanted("off", torch.device("cuda")) == (False, "--cuda-graph off")
    assert graphs_wanted("auto", torch.device("cuda"))[0] is True


def test_drop_last_gives_full_batches_and_a_different_remainder_each_epoch() -> None:
    data, labels = make_synthetic(50, 8, seed=0)
    data[:, 0, 0, 0] = torch.arange(50, dtype=torch.uint8)  # each image tells its index
    batches = DeviceBatches(data, labels, Normalizer(torch.zeros(3), torch.ones(3) / 255), 16, shuffle=True,
                            drop_last=True)
    assert len(batches) == 3
    left_out = []
    for _ in range(3):
        seen = []
        for inputs, batch_labels in batches:
            assert inputs.shape[0] == 16 and batch_labels.shape[0] == 16
            seen += inputs[:, 0, 0, 0].round().long().tolist()
        assert len(seen) == len(set(seen)) == 48
        left_out.append(frozenset(range(50)) - set(seen))
    assert len(set(left_out)) > 1
    assert len(DeviceBatches(data, labels, Normalizer(torch.zeros(3), torch.ones(3)), 16)) == 4  # default: all


def test_the_scorer_reused_across_epochs_matches_a_fresh_evaluation() -> None:
    model, batches, _ = _setup()
    val = [(x, y) for x, y in batches]
    scorer = Scorer(model, CPU, tta=True)
    first, _ = evaluate(model, val, CPU, scorer=scorer)
    again, _ = evaluate(model, val, CPU, scorer=scorer)  # totals reset between passes
    fresh, predictions = evaluate(model, val, CPU, tta=True, return_predictions=True)
    assert first == again.__class__(**{**again.__dict__, "seconds": first.seconds})
    assert (first.loss, first.accuracy, first.tta_accuracy) == pytest.approx((fresh.loss, fresh.accuracy, fresh.tta_accuracy))
    assert predictions is not None and predictions.shape == (96,)


def test_a_snapshot_is_unchanged_by_later_steps_and_resumes_anywhere(tmp_path: Path) -> None:
    model, batches, optim = _setup()
    optimizer = make_optimizer(model, optim)
    scheduler = make_scheduler(optimizer, optim, len(batches))
    stepper = Stepper(model, optimizer, scheduler, CPU, tensor_hyperparameters=True)
    train_one_epoch(stepper, batches, progress=False)
    weights, state = snapshot(model.state_dict()), snapshot({"epoch": 1, "optimizer": optimizer.state_dict()})
    expected = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    train_one_epoch(stepper, batches, progress=False)
    config = build_config("tiny", {"model": {"image_size": 16}})
    save_checkpoint(tmp_path, weights, config, {}, {**state, "optimizer": plain_optimizer_state(state["optimizer"])})
    loaded = load_checkpoint(tmp_path)
    for name, tensor in expected.items():
        assert torch.equal(loaded.model_state[name], tensor), name
    group = loaded.loop_state["optimizer"]["param_groups"][0]
    assert isinstance(group["lr"], float) and all(isinstance(b, float) for b in group["betas"])
    fresh = make_optimizer(build_model(config.model), optim)  # an eager optimizer takes the graphed run's state
    fresh.load_state_dict(loaded.loop_state["optimizer"])
    assert fresh.param_groups[0]["lr"] == pytest.approx(group["lr"])


class _HeldSink:
    """Records what reaches it, and holds every call until ``released`` is set: a sink that cannot
    keep up with training. Each record says whether training had already been released."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.images: list[tuple[str, int, object]] = []
        self.held_back: list[bool] = []
        self.thread: set[str] = set()

    def log_image(self, key: str, image: object, step: int) -> None:
        self.held_back.append(self.released.wait(timeout=30))
        self.thread.add(threading.current_thread().name)
        self.images.append((key, step, image))

    def log_metrics(self, metrics: object, step: int) -> None: ...
    def log_file(self, path: Path, artifact_path: str = "") -> None: ...
    def links(self) -> dict[str, str]:
        return {}
    def close(self, status: object = None) -> None: ...


def test_every_epochs_visuals_land_in_order_off_the_training_thread(tmp_path: Path) -> None:
    """Six quick 'epochs' against a sink held until training has queued them all: the training thread
    does not wait for rendering (a sink called on it would block it, and be released only by its own
    timeout), every epoch's pictures land, in order, and each shows the weights of its own epoch."""
    torch.manual_seed(0)
    config = build_config("tiny", {"model": {"image_size": 16}})
    model = build_model(config.model)
    images, labels = make_synthetic(4, 16, seed=0)
    probes = Probes(Normalizer.fit(images)(images), images, labels, tuple(f"p{i}" for i in range(4)))
    sink = _HeldSink()
    tracker = BackgroundTracker(sink, maxsize=256)  # type: ignore[arg-type]
    visuals = EpochVisuals(tracker, model.feature_layers(), probes, ["a", "b"], tmp_path, first_conv=model.first_conv())
    first_weights = []
    for step in range(6):
        with torch.no_grad():
            model.first_conv().weight.mul_(-1.5)  # the training between epochs
        first_weights.append(model.first_conv().weight.detach().clone())
        visuals.log(model, step)
    sink.released.set()  # training has queued all six epochs without waiting for the sink
    tracker.close()
    filters = [(step, picture) for key, step, picture in sink.images if key.startswith("filters/")]
    assert [step for step, _ in filters] == list(range(6))
    assert sink.held_back and all(sink.held_back)  # every picture reached the sink after training moved on
    assert threading.main_thread().name not in sink.thread
    assert [step for _, step, _ in sink.images] == sorted(step for _, step, _ in sink.images)
    pictures = [picture for _, picture in filters]
    assert all(not (pictures[i] == pictures[i + 1]).all() for i in range(5))  # each epoch drew its own weights
