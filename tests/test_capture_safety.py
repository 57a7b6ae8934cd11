"""The training and evaluation steps of a graphed run, optimizer included, must neither convert a
device tensor to a Python number nor make a tensor from Python data: a CUDA graph capture fails on
both (``host_syncs``). Checked on the CPU."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from host_syncs import HostSyncs
from convscope.train.config import build_config
from convscope.train.loop import make_scheduler
from convscope.train.model import build_model
from convscope.train.step import Scorer, Stepper, load_optimizer_state, make_optimizer, plain_optimizer_state
from convscope.train.synthetic import make_synthetic

CPU = torch.device("cpu")


def _graph_ready_stepper(**options: Any) -> tuple[Stepper, torch.Tensor, torch.Tensor]:
    config = build_config("tiny", {"model": {"image_size": 16}, "optim": {"batch_size": 8}})
    torch.manual_seed(0)
    model = build_model(config.model)
    optimizer = make_optimizer(model, config.optim, capturable=True)
    scheduler = make_scheduler(optimizer, config.optim, 10)
    stepper = Stepper(model, optimizer, scheduler, CPU, tensor_hyperparameters=True, **options)
    images, labels = make_synthetic(8, 16, seed=0)
    return stepper, images.float() / 255, labels


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_the_graph_ready_training_step_never_syncs_with_the_host(capturable_on_cpu: None, label_smoothing: float) -> None:
    stepper, inputs, labels = _graph_ready_stepper(label_smoothing=label_smoothing)
    for _ in range(3):  # the warm-up: the optimizer's state is created lazily on its first step
        stepper(inputs, labels)
    before = [p.detach().clone() for p in stepper.model.parameters()]
    with HostSyncs() as syncs:
        stepper.step(inputs, labels)  # what a capture records
    assert syncs.seen == []
    assert any(not torch.equal(a, b) for a, b in zip(before, stepper.model.parameters()))  # it did update


def test_the_detector_sees_a_tensor_made_from_host_data() -> None:
    with HostSyncs() as syncs:
        torch.zeros(2) + torch.tensor(1.0)
    assert syncs.seen == ["aten.lift_fresh.default"]


def test_the_detector_sees_the_sync_of_torchs_multi_tensor_adamw(capturable_on_cpu: None) -> None:
    """torch's foreach AdamW turns a tensor beta1 into a number: the sync that broke capture on GPUs."""
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), capturable=True, foreach=True)
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    optimizer.param_groups[0]["betas"] = (torch.tensor(0.9), 0.999)
    with HostSyncs() as syncs:
        optimizer.step()
    assert syncs.seen


def test_the_graph_ready_evaluation_step_never_syncs_with_the_host() -> None:
    stepper, inputs, labels = _graph_ready_stepper()
    scorer = Scorer(stepper.model.eval(), CPU, tta=True)
    with HostSyncs() as syncs:
        scorer.step(inputs, labels)
    assert syncs.seen == []
    assert int(scorer.totals.correct) >= 0 and float(scorer.totals.loss_sum) > 0


def test_a_state_saved_by_an_eager_run_keeps_the_graphed_optimizer_capturable(capturable_on_cpu: None) -> None:
    """``load_state_dict`` alone would take the eager run's flags and leave the graphed optimizer
    uncapturable; the step counters must be tensors on the parameters' device."""
    config = build_config("tiny", {"model": {"image_size": 16}})
    model = build_model(config.model)
    eager = make_optimizer(model, config.optim)
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    eager.step()
    saved = plain_optimizer_state(eager.state_dict())
    graphed = make_optimizer(model, config.optim, capturable=True)
    load_optimizer_state(graphed, saved)
    group = graphed.param_groups[0]
    assert group["capturable"] is True and group["foreach"] is False
    steps = [state["step"] for state in graphed.state.values()]
    assert steps and all(isinstance(s, torch.Tensor) and s.dtype == torch.float32 and float(s) == 1 for s in steps)
    back = make_optimizer(model, config.optim)
    load_optimizer_state(back, plain_optimizer_state(graphed.state_dict()))
    assert back.param_groups[0]["capturable"] is False
