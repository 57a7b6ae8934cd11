"""AdamW in a fixed handful of multi-tensor operations, with its learning rate and beta1 in device
tensors: an optimizer step a CUDA graph can capture while a one-cycle schedule changes both.

torch's AdamW offers one or the other. Its single-tensor implementation takes a tensor beta1 but
makes some 22 operations per parameter tensor (420 a step, each a kernel in the graph, for the seed
network's 19); its multi-tensor and fused implementations turn a tensor beta1 into a Python number
(a host sync that a capture refuses), and its multi-tensor one also divides by per-parameter bias
corrections one tensor at a time. This step makes the same update in 26 operations whatever the
number of parameter tensors: each over all of them at once, the bias corrections one 0-dim tensor
each, computed on the device.

Contract:
- the update of ``torch.optim.AdamW`` (decoupled weight decay; no amsgrad, maximize or closure), to
  float32 rounding: ``tests/test_multi_tensor_adamw.py`` checks it against torch's own step under a
  one-cycle schedule;
- the same state (``step``, ``exp_avg``, ``exp_avg_sq`` per parameter) and the same parameter groups,
  so a checkpoint moves between the two, and schedulers and ``train.step.DeviceHyperparameters``
  work on it unchanged;
- no operation reads a device value on the host;
- the parameters of a group share one step count: every parameter of a convscope network has a
  gradient at every step. A parameter without one is skipped and keeps its state, as in torch, but
  its bias correction then follows the group's count.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


class MultiTensorAdamW(torch.optim.AdamW):
    """``torch.optim.AdamW(capturable=True)`` whose step is the multi-tensor update of this module."""

    def __init__(self, params: Iterable[Any], *, lr: float, weight_decay: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, capturable=True,
                         foreach=False)

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        if closure is not None:
            raise ValueError("MultiTensorAdamW.step takes no closure")
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            states = [self._state(p) for p in params]
            multi_tensor_adamw(
                params, [p.grad for p in params], [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states], [s["step"] for s in states],
                lr=group["lr"], beta1=group["betas"][0], beta2=float(group["betas"][1]),
                weight_decay=float(group["weight_decay"]), eps=float(group["eps"]),
            )

    def _state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        """The parameter's state, made on its first step as torch's capturable AdamW makes it."""
        state = self.state[param]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state


def multi_tensor_adamw(params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
                       exp_avg_sqs: list[torch.Tensor], steps: list[torch.Tensor], *, lr: float | torch.Tensor,
                       beta1: float | torch.Tensor, beta2: float, weight_decay: float, eps: float) -> None:
    """One AdamW update of ``params`` in place (the formulas of torch's capturable single-tensor
    AdamW); ``lr`` and ``beta1`` may be 0-dim device tensors."""
    torch._foreach_add_(steps, 1)
    step = steps[0]
    if weight_decay != 0:
        torch._foreach_mul_(params, 1 - lr * weight_decay)
    delta = torch._foreach_sub(grads, exp_avgs)  # exp_avg.lerp_(grad, 1 - beta1)
    torch._foreach_mul_(delta, 1 - beta1)
    torch._foreach_add_(exp_avgs, delta)
    del delta
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
    bias_correction1 = 1 - torch.pow(beta1, step)
    bias_correction2_sqrt = (1 - torch.pow(beta2, step)).sqrt()
    step_size_neg = -(lr / bias_correction1)
    denominators = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denominators, bias_correction2_sqrt * step_size_neg)
    # the overload named: torch._foreach_add_ would read the 0-dim tensor as a number, a host sync
    torch.ops.aten._foreach_add_.Tensor(denominators, eps / step_size_neg)
    torch._foreach_addcdiv_(params, exp_avgs, denominators)
