"""``train.multi_tensor_adamw``: torch's AdamW update, in operations over all parameter tensors at
once, with a learning rate and beta1 in tensors and nothing read on the host."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from convscope.train.config import build_config
from convscope.train.loop import make_scheduler
from convscope.train.model import build_model
from convscope.train.multi_tensor_adamw import MultiTensorAdamW
from convscope.train.step import DeviceHyperparameters, Stepper, load_optimizer_state, plain_optimizer_state
from host_syncs import HostSyncs

CPU = torch.device("cpu")
STEPS = 25


def _model(preset: str = "tiny") -> nn.Module:
    torch.manual_seed(0)
    return build_model(build_config(preset, {"model": {"image_size": 16 if preset == "tiny" else 64}}).model)


def _scheduled(optimizer: torch.optim.Optimizer) -> tuple[torch.optim.lr_scheduler.LRScheduler, DeviceHyperparameters]:
    """The one-cycle schedule of a run, its learning rate and beta1 in tensors (what a graphed run does)."""
    config = build_config("tiny", {"optim": {"epochs": 1, "lr": 0.01}})
    scheduler = make_scheduler(optimizer, config.optim, STEPS)
    hyper = DeviceHyperparameters(optimizer, CPU)
    hyper.install()
    return scheduler, hyper


def _gradients(model: nn.Module, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(p.shape, generator=generator) for p in model.parameters()]


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, gradients: list[torch.Tensor]) -> None:
    for param, gradient in zip(model.parameters(), gradients):
        param.grad = gradient.clone()
    optimizer.step()


@pytest.fixture
def pair(capturable_on_cpu: None) -> Iterator[tuple[nn.Module, torch.optim.Optimizer, nn.Module, MultiTensorAdamW]]:
    """The same network twice: one under torch's capturable single-tensor AdamW, one under this one."""
    reference = _model()
    ours = copy.deepcopy(reference)
    yield (reference, torch.optim.AdamW(reference.parameters(), lr=0.01, weight_decay=0.05, capturable=True,
                                        foreach=False),
           ours, MultiTensorAdamW(ours.parameters(), lr=0.01, weight_decay=0.05))


def _assert_same(reference: nn.Module, ours: nn.Module, reference_optimizer: torch.optim.Optimizer,
                 optimizer: torch.optim.Optimizer) -> None:
    for a, b in zip(reference.parameters(), ours.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(optimizer.state[b][key], reference_optimizer.state[a][key], rtol=1e-5, atol=1e-7)


def test_the_update_is_torchs_adamw_under_a_one_cycle_schedule(pair: Any) -> None:
    reference, reference_optimizer, ours, optimizer = pair
    schedules = [_scheduled(reference_optimizer), _scheduled(optimizer)]
    start = [p.detach().clone() for p in ours.parameters()]
    betas = set()
    for seed in range(STEPS):
        gradients = _gradients(reference, seed)
        _step(reference, reference_optimizer, gradients)
        _step(ours, optimizer, gradients)
        for scheduler, hyper in schedules:
            scheduler.step()
            hyper.sync()
        betas.add(round(float(optimizer.param_groups[0]["betas"][0]), 6))
    assert len(betas) > 5  # one-cycle moved beta1 (from a tensor) step after step
    _assert_same(reference, ours, reference_optimizer, optimizer)
    assert all(not torch.equal(a, b) for a, b in zip(start, ours.parameters()))


def test_a_step_reads_nothing_on_the_host() -> None:
    model = _model()
    optimizer = MultiTensorAdamW(model.parameters(), lr=0.01, weight_decay=0.05)
    scheduler = make_scheduler(optimizer, build_config("tiny").optim, STEPS)
    stepper = Stepper(model, optimizer, scheduler, CPU, tensor_hyperparameters=True)
    inputs, labels = torch.randn(8, 3, 16, 16), torch.randint(0, 2, (8,))
    stepper(inputs, labels)  # the state is made on the first step, as torch's
    before = [p.detach().clone() for p in model.parameters()]
    with HostSyncs() as syncs:
        stepper.step(inputs, labels)  # what a capture records
    assert syncs.seen == []
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_a_checkpoint_moves_between_it_and_torchs_adamw(pair: Any) -> None:
    reference, reference_optimizer, ours, optimizer = pair
    for seed in range(3):
        _step(ours, optimizer, _gradients(ours, seed))
    reference.load_state_dict(ours.state_dict())
    saved = copy.deepcopy(plain_optimizer_state(optimizer.state_dict()))  # as through a checkpoint file
    load_optimizer_state(reference_optimizer, saved)
    gradients = _gradients(ours, 99)
    _step(reference, reference_optimizer, gradients)
    _step(ours, optimizer, gradients)
    _assert_same(reference, ours, reference_optimizer, optimizer)
    back = MultiTensorAdamW(ours.parameters(), lr=0.01, weight_decay=0.05)
    load_optimizer_state(back, copy.deepcopy(plain_optimizer_state(reference_optimizer.state_dict())))
    for param, twin in zip(ours.parameters(), reference.parameters()):
        assert torch.equal(back.state[param]["exp_avg"], reference_optimizer.state[twin]["exp_avg"])
        assert back.state[param]["step"].dtype == torch.float32 and float(back.state[param]["step"]) == 4


class Operations(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("tensor_hyperparameters", [False, True])
def test_its_operations_do_not_grow_with_the_parameter_tensors(tensor_hyperparameters: bool) -> None:
    """A step is the same few operations for 3 blocks as for 5, where torch's single-tensor step
    makes some 22 per parameter tensor."""
    counts = {}
    for preset in ("tiny", "seed"):
        model = _model(preset)
        optimizer = MultiTensorAdamW(model.parameters(), lr=0.01, weight_decay=0.05)
        if tensor_hyperparameters:
            DeviceHyperparameters(optimizer, CPU).install()
        _step(model, optimizer, _gradients(model, 0))
        gradients = _gradients(model, 1)
        for param, gradient in zip(model.parameters(), gradients):
            param.grad = gradient
        with Operations() as operations:
            optimizer.step()
        counts[preset, len(list(model.parameters()))] = operations.count
    assert len(set(counts.values())) == 1 and len(counts) == 2, counts
    assert next(iter(counts.values())) < 40, counts


@pytest.mark.parametrize("settings", [
    {}, {"head": "gap"}, {"head_hidden": 0}, {"pool": "max", "depth": 2}, {"bypass": [4, 5]}, {"batch_norm": False},
], ids=lambda settings: ",".join(f"{k}={v}" for k, v in settings.items()) or "seed")
def test_every_parameter_of_a_network_has_a_gradient_every_step(settings: dict[str, Any]) -> None:
    """What sharing one step count across a group's parameters relies on."""
    model = build_model(build_config("seed", {"model": settings}).model)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert [name for name, p in model.named_parameters() if p.grad is None] == []
