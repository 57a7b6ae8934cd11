"""The training and evaluation steps, run eagerly or replayed from CUDA graphs.

A step is a function of one batch that leaves its results in device tensors
(``Totals``: summed loss and correct predictions) and never synchronises with
the host. ``Stepper`` runs the training step (forward, loss, backward, AdamW
update, then the learning-rate schedule); ``Scorer`` runs the evaluation step.

On CUDA with ``--cuda-graph auto`` both are captured in CUDA graphs (``Captured``):
the first ``WARMUP_CALLS`` full batches run eagerly on a side stream (real steps:
they initialise cuDNN, the optimizer state and the autocast casts), the next one
is captured and from then on every full batch is a single graph replay. Shapes
are static, so the training batches of a graphed run are all full
(``drop_last``: a different random remainder of fewer than ``--batch-size``
images is left out each epoch); a partial evaluation batch runs eagerly. A
capture that fails falls back to eager steps with one line saying why.

What a graph needs from the optimizer: AdamW whose state lives on the device and
whose learning rate and beta1 are device tensors (``DeviceHyperparameters``), so a
schedule that changes them between replays (one-cycle changes both) is honoured,
and whose step never reads a device value on the host. torch's multi-tensor and
fused AdamW turn a tensor beta1 into a Python number (``_foreach_lerp_`` takes a
scalar weight; the fused kernel a double), a host sync that a capture refuses; its
single-tensor one takes the tensor but makes some 22 operations per parameter tensor,
420 kernels a step in the graph for the seed network's 19. A graphed run therefore
uses ``train.multi_tensor_adamw``: torch's update in 26 operations over all parameter
tensors at once, whatever their number. beta2 never changes, so it stays a float.
BatchNorm's running statistics are updated in place by the replayed kernels.

A failed capture leaves nothing behind: the current stream and the CUDA
generator (which a capture puts in a capturing state that survives a failure)
are restored, and no captured kernel ever ran, so the weights, the optimizer
state and the totals are those of the step before.

Everything but a replay holds ``train.random_state.DEFAULT_GENERATORS``, so trials
that share a process in threads never run an eager step while another captures.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from convscope.train.config_sections import OptimConfig
from convscope.train.multi_tensor_adamw import MultiTensorAdamW
from convscope.train.random_state import DEFAULT_GENERATORS

WARMUP_CALLS = 3  # eager calls before capture (the CUDA graph documentation's warm-up)


def graphs_wanted(mode: str, device: torch.device) -> tuple[bool, str]:
    """Whether steps are captured in CUDA graphs, and why not when they are not."""
    if mode == "off":
        return False, "--cuda-graph off"
    if device.type != "cuda":
        return False, f"CUDA graphs need a CUDA device (this run uses {device.type})"
    return True, ""


@dataclass
class Totals:
    """Running sums of one pass on the device: loss × images and correct predictions."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    tta_loss_sum: torch.Tensor
    tta_correct: torch.Tensor

    @classmethod
    def zeros(cls, device: torch.device) -> Totals:
        floats = [torch.zeros((), device=device) for _ in range(2)]
        counts = [torch.zeros((), device=device, dtype=torch.long) for _ in range(2)]
        return cls(floats[0], counts[0], floats[1], counts[1])

    def reset(self) -> None:
        """Zero in place: a captured graph keeps writing into these very tensors."""
        for tensor in (self.loss_sum, self.correct, self.tta_loss_sum, self.tta_correct):
            tensor.zero_()


def autocast(device: torch.device, precision: str, *, capturing: bool = False) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast when ``precision`` is bf16 (CUDA or CPU); plain float32 otherwise. A graph needs
    the autocast cache off (cached casts would outlive the capture)."""
    if precision == "bf16" and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=not capturing)
    return contextlib.nullcontext()


def training_loss(label_smoothing: float = 0.0) -> nn.CrossEntropyLoss:
    """The loss a training step minimises: cross-entropy with ``label_smoothing`` (``--label-smoothing``;
    0 = plain). Training only: evaluation always scores plain cross-entropy, so runs with and without
    smoothing have comparable ``val/loss``."""
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


def flip_tta_probabilities(model: nn.Module, inputs: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
    """Flip test-time augmentation: the mean of the softmax of ``inputs`` and of their horizontal mirror
    (float32, (N, classes)). ``logits``: the model's output on ``inputs`` if already computed."""
    if logits is None:
        logits = model(inputs)
    mirrored = model(inputs.flip(-1))
    return (logits.float().softmax(dim=1) + mirrored.float().softmax(dim=1)) / 2


def make_optimizer(model: nn.Module, config: OptimConfig, *, capturable: bool = False) -> torch.optim.Optimizer:
    """AdamW; ``capturable`` (for CUDA graphs): ``MultiTensorAdamW``, whose state stays on the device and
    whose step never syncs (why: module docstring); otherwise torch's own, with its own choice of
    implementation."""
    if capturable:
        return MultiTensorAdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, capturable=False,
                             foreach=None)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a checkpoint's optimizer state, keeping this optimizer's implementation flags.

    ``Optimizer.load_state_dict`` takes ``capturable``/``foreach`` from the saved groups, so a state
    saved by an eager run would make a graphed run's optimizer uncapturable (and the reverse), and
    leave its step counters on the CPU. The flags are put back and, when capturable, every step
    counter moves to its parameter's device."""
    flags = [{key: group[key] for key in ("capturable", "foreach") if key in group} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, kept in zip(optimizer.param_groups, flags):
        group.update(kept)
        if not group.get("capturable"):
            continue
        for param in group["params"]:
            param_state = optimizer.state.get(param, {})
            if isinstance(param_state.get("step"), torch.Tensor):
                param_state["step"] = param_state["step"].to(device=param.device, dtype=torch.float32)


class DeviceHyperparameters:
    """The learning rate and beta1 of every parameter group as device tensors (what a captured
    optimizer step reads on each replay); beta2 stays a float (it never changes). ``install`` after
    the scheduler and any state loading; ``sync`` after every ``scheduler.step()`` (one-cycle writes
    the learning rate and beta1 as floats)."""

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device) -> None:
        self.optimizer = optimizer
        self.tensors: list[tuple[torch.Tensor, torch.Tensor]] = []
        for group in optimizer.param_groups:
            lr, beta1 = float(group["lr"]), float(group["betas"][0])
            self.tensors.append((torch.tensor(lr, device=device), torch.tensor(beta1, device=device)))

    def install(self) -> None:
        for group, (lr, beta1) in zip(self.optimizer.param_groups, self.tensors):
            group["lr"], group["betas"] = lr, (beta1, float(group["betas"][1]))

    def sync(self) -> None:
        for group, (lr, beta1) in zip(self.optimizer.param_groups, self.tensors):
            if group["lr"] is not lr:
                lr.fill_(group["lr"])
                group["lr"] = lr
            if group["betas"][0] is not beta1:
                beta1.fill_(group["betas"][0])
                group["betas"] = (beta1, float(group["betas"][1]))


def plain_optimizer_state(state: dict[str, Any]) -> dict[str, Any]:
    """``optimizer.state_dict()`` with tensor hyper-parameters as floats, so a checkpoint of a graphed
    run resumes on any device."""
    groups = []
    for group in state["param_groups"]:
        plain = dict(group)
        if isinstance(plain.get("lr"), torch.Tensor):
            plain["lr"] = float(plain["lr"])
        if "betas" in plain:
            plain["betas"] = tuple(float(b) for b in plain["betas"])
        groups.append(plain)
    return {**state, "param_groups": groups}


class Captured:
    """Calls ``function(inputs, labels)`` on static copies of its arguments: eagerly at first, then
    (on CUDA, when ``enabled``) from one captured CUDA graph. ``function`` must leave its results in
    tensors it updates in place. ``fallback``: why capture failed (None while it has not)."""

    def __init__(self, function: Callable[[torch.Tensor, torch.Tensor], None], *, enabled: bool,
                 name: str, say: Callable[[str], None]) -> None:
        self.function = function
        self.enabled = enabled
        self.name = name
        self.say = say
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self.fallback: str | None = None
        self.first_call_seconds = 0.0

    def __call__(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        if self.graph is not None and self.inputs is not None and inputs.shape == self.inputs.shape:
            assert self.labels is not None
            self.inputs.copy_(inputs)
            self.labels.copy_(labels)
            self.graph.replay()
            return
        with DEFAULT_GENERATORS, _on_device(inputs.device):
            self._unreplayed(inputs, labels)

    def _unreplayed(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        """Every call that is not a replay: eager, warm-up or capture (``DEFAULT_GENERATORS`` held)."""
        if not self.enabled or self.fallback is not None:
            self._timed(inputs, labels)
            return
        if self.inputs is None:
            self.inputs = torch.empty_like(inputs)  # empty_like keeps channels_last
            self.labels = torch.empty_like(labels)
        if inputs.shape != self.inputs.shape:  # a partial batch: outside the graph
            self.function(inputs, labels)
            return
        assert self.labels is not None
        self.inputs.copy_(inputs)
        self.labels.copy_(labels)
        if self.calls < WARMUP_CALLS:
            self._warm_up()
        else:
            self._capture()

    def _timed(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        if self.calls == 0:
            start = time.perf_counter()
            self.function(inputs, labels)
            if inputs.device.type == "cuda":
                torch.cuda.synchronize(inputs.device)
            self.first_call_seconds = time.perf_counter() - start
        else:
            self.function(inputs, labels)
        self.calls += 1

    def _warm_up(self) -> None:
        """An eager call on a side stream, as capture wants (on a CPU, where capture will fail, just a call)."""
        assert self.inputs is not None and self.labels is not None
        if self.inputs.device.type != "cuda":
            self._timed(self.inputs, self.labels)
            return
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._timed(self.inputs, self.labels)
        torch.cuda.current_stream().wait_stream(side)

    def _capture(self) -> None:
        assert self.inputs is not None and self.labels is not None
        restore = _capture_restorer(self.inputs.device)
        graph = None
        try:
            graph = torch.cuda.CUDAGraph()
            # thread_local: the tracker's background thread may copy to the host during the capture
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self.function(self.inputs, self.labels)
        except Exception as error:  # noqa: BLE001 - any capture failure means eager steps, said once
            restore(graph)
            message = str(error).strip().splitlines()
            self.fallback = f"{type(error).__name__}: {message[0]}" if message else type(error).__name__
            self.say(f"convscope: CUDA graph capture of the {self.name} step failed ({self.fallback}); "
                     "continuing with eager steps")
            self.function(self.inputs, self.labels)  # this batch, eagerly (the failed capture ran nothing)
            return
        self.graph = graph
        graph.replay()  # capturing runs nothing: this batch's step is the first replay


def _on_device(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """``device`` current while warming up and capturing: side streams, the capture stream and the
    generator a capture registers are the current device's, which for ``cuda:1`` is not the default."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _capture_restorer(device: torch.device) -> Callable[[torch.cuda.CUDAGraph | None], None]:
    """What undoes a failed capture on ``device``, made before the capture begins.

    ``torch.cuda.graph`` registers the device's default generator with the capture; when the capture
    fails its end is never reached and the generator stays in its capturing state (the next eager
    dropout then fails with "Offset increment outside graph capture"), and the capture stream may
    stay current. The returned function ends a capture still open, makes the stream current again
    and puts a clone of the generator's state, taken before the capture, back in place."""
    if device.type != "cuda":
        return lambda graph: None
    index = device.index if device.index is not None else torch.cuda.current_device()
    generator = torch.cuda.default_generators[index]
    generator_state = generator.clone_state()
    stream = torch.cuda.current_stream(device)

    def restore(graph: torch.cuda.CUDAGraph | None) -> None:
        if graph is not None and torch.cuda.is_current_stream_capturing():
            with contextlib.suppress(Exception):
                graph.capture_end()
        torch.cuda.set_stream(stream)
        generator.graphsafe_set_state(generator_state)
        torch.cuda.synchronize(device)

    return restore


class Stepper:
    """The training step of one run: ``stepper(inputs, labels)`` trains on one batch and steps the
    schedule; the batch's summed loss and correct count go to ``totals`` (contract: module docstring)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, device: torch.device, *,
                 precision: str = "fp32", label_smoothing: float = 0.0, graphed: bool = False,
                 compiled: nn.Module | None = None, say: Callable[[str], None] = print,
                 tensor_hyperparameters: bool | None = None) -> None:
        """``graphed``: capture the step (CUDA); ``tensor_hyperparameters`` (default: ``graphed``): the
        learning rate and betas live in device tensors, as a captured step needs."""
        self.model = model
        self.forward = compiled if compiled is not None else model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.device = device
        self.precision = precision
        self.loss_fn = training_loss(label_smoothing)
        self.totals = Totals.zeros(device)
        self.graphed = graphed
        in_tensors = graphed if tensor_hyperparameters is None else tensor_hyperparameters
        self.hyper = DeviceHyperparameters(optimizer, device) if in_tensors else None
        if self.hyper is not None:
            self.hyper.install()
        self.captured = Captured(self.step, enabled=graphed, name="training", say=say)

    def step(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        """Forward, loss, backward and update on one batch; results added to ``totals`` in place."""
        with autocast(self.device, self.precision, capturing=self.graphed):
            logits = self.forward(inputs)
            loss = self.loss_fn(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.totals.loss_sum.add_(loss.detach() * labels.shape[0])
        self.totals.correct.add_((logits.detach().argmax(dim=1) == labels).sum())

    def __call__(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        self.captured(inputs, labels)
        self.scheduler.step()
        if self.hyper is not None:
            self.hyper.sync()

    @property
    def mode(self) -> str:
        """``graphed`` when batches replay a CUDA graph (or will once warmed up), else ``eager``."""
        return "graphed" if self.graphed and self.captured.fallback is None else "eager"


class Scorer:
    """The evaluation step: plain cross-entropy and accuracy (and with ``tta`` those of the flip
    test-time augmentation) summed into ``totals``; graphed like ``Stepper``."""

    def __init__(self, model: nn.Module, device: torch.device, *, precision: str = "fp32", tta: bool = False,
                 graphed: bool = False, say: Callable[[str], None] = print) -> None:
        self.model = model
        self.device = device
        self.precision = precision
        self.tta = tta
        self.graphed = graphed
        self.totals = Totals.zeros(device)
        self.predictions: list[torch.Tensor] | None = None  # eager scorers only: each batch's predicted classes
        self.captured = Captured(self.step, enabled=graphed, name="evaluation", say=say)

    @torch.no_grad()
    def step(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        with autocast(self.device, self.precision, capturing=self.graphed):
            logits = self.model(inputs)
            probabilities = flip_tta_probabilities(self.model, inputs, logits) if self.tta else None
        self.totals.loss_sum.add_(nn.functional.cross_entropy(logits.float(), labels, reduction="sum"))
        predicted = logits.argmax(dim=1)
        self.totals.correct.add_((predicted == labels).sum())
        if probabilities is not None:
            self.totals.tta_loss_sum.add_(
                nn.functional.nll_loss(probabilities.clamp_min(1e-12).log(), labels, reduction="sum"))
            self.totals.tta_correct.add_((probabilities.argmax(dim=1) == labels).sum())
        if self.predictions is not None:
            self.predictions.append(predicted)

    def __call__(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        self.captured(inputs, labels)
