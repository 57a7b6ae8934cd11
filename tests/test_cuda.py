"""The GPU path on a real CUDA device: the captured training and evaluation steps capture and train
as the eager ones, a failed capture leaves the device usable, and ``convscope train`` and
``convscope search`` run to the end with their default settings. Skipped without a CUDA device."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from e2e_helpers import FAST, convscope, only_run
from convscope.train.batches import DeviceBatches, Normalizer, prepared_per_pass
from convscope.train.config import build_config
from convscope.train.loop import make_scheduler, train_one_epoch
from convscope.train.model import build_model
from convscope.train.multi_tensor_adamw import MultiTensorAdamW
from convscope.train.step import Captured, Stepper, make_optimizer
from convscope.train.synthetic import make_synthetic

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none visible to torch)")]

CUDA = torch.device("cuda")


def _train(graphed: bool, epochs: int = 3, torch_single_tensor: bool = False) -> tuple[list[float], Stepper]:
    config = build_config("tiny", {"model": {"image_size": 16}, "optim": {"batch_size": 32}})
    torch.manual_seed(0)
    model = build_model(config.model).to(CUDA)
    data, labels = make_synthetic(320, 16, seed=0)
    batches = DeviceBatches(data.to(CUDA), labels.to(CUDA), Normalizer.fit(data), 32, shuffle=True, flip=True,
                            crop_padding=2, seed=0, drop_last=True,
                            per_pass=prepared_per_pass(CUDA, data.shape[1:], 32))  # as convscope train on CUDA
    optimizer = (torch.optim.AdamW(model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay,
                                   capturable=True, foreach=False)
                 if torch_single_tensor else make_optimizer(model, config.optim, capturable=graphed))
    scheduler = make_scheduler(optimizer, config.optim, len(batches))
    said: list[str] = []
    stepper = Stepper(model, optimizer, scheduler, CUDA, graphed=graphed, tensor_hyperparameters=True,
                      say=said.append)
    losses = [train_one_epoch(stepper, batches, progress=False).loss for _ in range(epochs)]
    assert said == [], said
    return losses, stepper


def test_the_training_step_captures_and_trains_as_the_eager_step() -> None:
    eager, _ = _train(graphed=False)
    graphed, stepper = _train(graphed=True)
    assert stepper.mode == "graphed" and stepper.captured.graph is not None
    assert graphed[-1] < graphed[0]
    # dropout draws differ between a graph and eager kernels: the same course, not the same numbers
    assert graphed == pytest.approx(eager, rel=0.25)


def test_the_graphed_step_trains_as_on_torchs_single_tensor_adamw() -> None:
    """``train.multi_tensor_adamw`` captured in the graph against torch's own capturable AdamW."""
    ours, stepper = _train(graphed=True)
    assert isinstance(stepper.optimizer, MultiTensorAdamW)
    torchs, reference = _train(graphed=True, torch_single_tensor=True)
    assert reference.mode == "graphed" and reference.captured.graph is not None
    assert ours == pytest.approx(torchs, rel=0.25)


def test_a_failed_capture_leaves_the_generator_and_the_stream_usable() -> None:
    said: list[str] = []
    dropout = torch.nn.Dropout2d(0.5)
    out = torch.zeros((), device=CUDA)

    def syncs(inputs: torch.Tensor, labels: torch.Tensor) -> None:
        out.add_(dropout(inputs).sum().item())  # a host sync: capture must fail

    captured = Captured(syncs, enabled=True, name="test", say=said.append)
    stream = torch.cuda.current_stream()
    batch = torch.ones(4, 3, 8, 8, device=CUDA), torch.zeros(4, dtype=torch.long, device=CUDA)
    for _ in range(6):
        captured(*batch)
    assert captured.fallback is not None and len(said) == 1 and "continuing with eager steps" in said[0]
    assert torch.cuda.current_stream() == stream and not torch.cuda.is_current_stream_capturing()
    torch.nn.Dropout2d(0.1)(torch.ones(2, 3, 4, 4, device=CUDA))  # the generator is out of its capture state
    assert captured.calls == 5  # three warm-up calls and two eager ones after the fallback


def test_convscope_train_runs_on_cuda_with_default_settings(tmp_path: Path) -> None:
    done = convscope("train", "--device", "cuda", "--epochs", "2", "--runs-dir", str(tmp_path / "runs"), "--quiet",
                     *FAST)
    assert done.returncode == 0, done.stderr[-3000:]
    run = only_run(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    assert run.info.data.tags["convscope.step"] == "graphed"
    assert run.info.data.tags["convscope.pictures"] == "latest"  # --visual-epochs auto on CUDA
    assert "capture" not in done.stderr, done.stderr


def test_a_two_trial_study_runs_on_cuda_with_default_settings(tmp_path: Path) -> None:
    done = convscope("search", "--device", "cuda", "--trials", "2", "--epochs", "2", "--runs-dir",
                     str(tmp_path / "runs"), *FAST)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "capture" not in done.stderr, done.stderr


@pytest.mark.parametrize("workers_in", ["processes", "threads"])
def test_a_study_with_two_trials_per_gpu_runs_to_the_end(tmp_path: Path, workers_in: str) -> None:
    done = convscope("search", "--device", "cuda", "--trials", "4", "--epochs", "2", "--trials-per-gpu", "2",
                     "--workers-in", workers_in, "--runs-dir", str(tmp_path / "runs"), *FAST)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "capture" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "4 trials ended: 4 done" in done.stdout, done.stdout


def test_trials_on_streams_of_one_process_capture_and_train_at_once() -> None:
    """Two threads, each on a stream of its own (as ``--workers-in threads`` runs trials), warm up,
    capture and replay their training steps at the same time: both capture, neither falls back
    (``_train`` checks that nothing was said), both learn."""
    import threading

    from convscope.search.workers import own_stream

    results: dict[int, tuple[list[float], Stepper]] = {}
    errors: list[BaseException] = []
    together = threading.Barrier(2, timeout=60)

    def trial(index: int) -> None:
        try:
            with own_stream("cuda"):
                together.wait()
                results[index] = _train(graphed=True, epochs=4)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=trial, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for losses, stepper in results.values():
        assert stepper.mode == "graphed" and stepper.captured.graph is not None
        assert losses[-1] < losses[0]


def test_the_trackers_threads_queue_their_device_work_behind_the_training_stream() -> None:
    """A job on the tracker's thread runs its device work on the stream that was current where the
    tracker was made, so copying a capture waits for the training work queued before it."""
    from convscope.tracking.background import BackgroundTracker
    from convscope.tracking.base import RunStatus
    from test_background import Recorder

    training = torch.cuda.Stream()
    seen: list[torch.cuda.Stream] = []
    with torch.cuda.stream(training):
        tracker = BackgroundTracker(Recorder())
        tracker.submit(lambda: seen.append(torch.cuda.current_stream()))
        tracker.offer(lambda: seen.append(torch.cuda.current_stream()), "latest")
    tracker.close(RunStatus.FINISHED)
    assert seen == [training, training]
