"""Capture what a model's conv blocks do on a fixed batch of probe images.

Two entry points, both side-effect free on the model:

- :func:`capture_probes` — ONE forward and ONE backward pass over the probe
  images, giving every requested layer's activation, a Grad-CAM map per layer,
  the input-gradient saliency, the logits and the class whose score was
  explained.
- :func:`capture_pooled` — a no-grad pass over many batches giving each
  layer's channel-mean-pooled activation (N, C), the input of linear probes.

Contract shared by both:

- ``layers`` maps a layer name (``conv1`` …) to the module whose forward
  OUTPUT is that layer's activation (for the convscope blocks: the ReLU).
  Forward hooks are registered with :func:`functools.partial` and removed on
  exit, also when the forward raises (timm ``FeatureHooks`` style).
- The model runs in eval mode; every submodule's previous ``training`` flag is
  restored afterwards, also on exception.
- Parameters' ``.grad`` are never touched: gradients are taken with
  :func:`torch.autograd.grad` on the input and the hooked outputs only.
- Everything runs in float32 with autocast disabled; results are float32 CPU
  tensors detached from any graph (``targets`` and ``logits`` included).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Gradient saliency is divided by this per-probe quantile of |grad| and clipped to 1,
#: so a handful of extreme pixels cannot wash out the rest of the map.
SALIENCY_CLIP_QUANTILE = 0.99


@dataclass
class ProbeCapture:
    """Everything one probe pass produced; all tensors are CPU and detached.

    Attributes:
        activations: layer → (P, C, h, w) float32, the hooked module's output.
        gradcam: layer → (P, H, W) float32 in [0, 1], Grad-CAM upsampled
            bilinearly to the input size and normalised per probe (a probe
            whose map is all zero stays all zero).
        gradient: (P, H, W) float32 in [0, 1], |∂score/∂input| maximised over
            colour channels, divided per probe by its
            :data:`SALIENCY_CLIP_QUANTILE` quantile and clipped.
        logits: (P, K) float32.
        targets: (P,) int64, the class whose score was explained per probe.
    """

    activations: dict[str, Tensor]
    gradcam: dict[str, Tensor]
    gradient: Tensor
    logits: Tensor
    targets: Tensor

    def cpu(self) -> ProbeCapture:
        """This capture with every tensor on the CPU (waits for the device: call it off the training thread)."""
        return ProbeCapture(
            activations={name: t.cpu() for name, t in self.activations.items()},
            gradcam={name: t.cpu() for name, t in self.gradcam.items()},
            gradient=self.gradient.cpu(), logits=self.logits.cpu(), targets=self.targets.cpu(),
        )


def _store_output(store: dict[str, Tensor], name: str, module: nn.Module, args: Any, output: Any) -> None:
    """Forward hook: keep ``output`` under ``name`` (graph kept, for autograd)."""
    if not isinstance(output, Tensor):
        raise ValueError(
            f"layer {name!r} ({type(module).__name__}) returned {type(output).__name__}, "
            "expected a Tensor; pass the module whose output is the block's activation"
        )
    store[name] = output


def _store_pooled(store: dict[str, list[Tensor]], name: str, module: nn.Module, args: Any, output: Any) -> None:
    """Forward hook: append the spatial mean (N, C) of ``output`` under ``name``."""
    if not isinstance(output, Tensor):
        raise ValueError(f"layer {name!r} ({type(module).__name__}) returned {type(output).__name__}, expected a Tensor")
    pooled = output.flatten(2).mean(2) if output.dim() > 2 else output
    store.setdefault(name, []).append(pooled.float().cpu())


@contextmanager
def _hooked(layers: Mapping[str, nn.Module], hook: Any, store: dict) -> Iterator[dict]:
    """Register ``partial(hook, store, name)`` on each layer; remove and clear on exit."""
    if not layers:
        raise ValueError("layers is empty: pass at least one name → module to capture")
    handles = [module.register_forward_hook(partial(hook, store, name)) for name, module in layers.items()]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode; restore each submodule's own flag on exit."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _model_device(model: nn.Module) -> torch.device | None:
    """Device of the model's first parameter or buffer (None for a stateless model)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return None


def _normalise_per_probe(maps: Tensor) -> Tensor:
    """Divide each (H, W) map by its max; all-zero maps stay zero. Input must be ≥ 0."""
    peak = maps.flatten(1).amax(1).view(-1, 1, 1)
    return torch.where(peak > 0, maps / peak.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(maps))


def _gradcam(activation: Tensor, grad: Tensor | None, size: tuple[int, int]) -> Tensor:
    """Grad-CAM = ReLU(Σ_c mean_hw(∂score/∂A_c) · A_c), upsampled to ``size``, in [0, 1]."""
    if grad is None:  # layer does not influence the score
        return torch.zeros(activation.shape[0], *size, device=activation.device)
    if activation.dim() != 4:
        raise ValueError(f"Grad-CAM needs (P, C, h, w) activations, got shape {tuple(activation.shape)}")
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]
    return _normalise_per_probe(cam.clamp_min(0)).clamp(0, 1)


def _gradient_saliency(grad: Tensor) -> Tensor:
    """|grad| max over channels, divided per probe by a high quantile and clipped to [0, 1]."""
    magnitude = grad.abs().amax(1)
    flat = magnitude.flatten(1)
    scale = torch.quantile(flat, SALIENCY_CLIP_QUANTILE, dim=1)
    scale = torch.where(scale > 0, scale, flat.amax(1))  # sparse maps: fall back to the max
    scale = scale.view(-1, 1, 1)
    safe = scale.clamp_min(torch.finfo(magnitude.dtype).tiny)
    return torch.where(scale > 0, (magnitude / safe).clamp(0, 1), torch.zeros_like(magnitude))


def capture_probes(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    inputs: Tensor,
    targets: Tensor | None = None,
    *,
    on_device: bool = False,
) -> ProbeCapture:
    """Run one forward and one backward pass over the probe images.

    Args:
        model: maps (P, 3, H, W) to logits (P, K).
        layers: layer name → module whose forward output is that layer's
            activation (P, C, h, w); order is kept in the result.
        inputs: normalised float probe images (P, 3, H, W) on the model's device.
        targets: optional (P,) class per probe to explain; an entry < 0 (or no
            ``targets`` at all) explains the predicted class.

    The score explained is ``Σ_i logits[i, target_i]``; since probes do not
    interact in eval mode, each probe's gradients are those of its own score.
    Works inside ``torch.inference_mode()`` / ``no_grad()`` too (both are
    lifted locally). The model's mode and parameter gradients are left as found.
    ``on_device``: the results stay on the model's device (nothing waits for it; ``ProbeCapture.cpu``
    later), else they are copied to the CPU.
    """
    if inputs.dim() != 4:
        raise ValueError(f"inputs must be (P, 3, H, W), got shape {tuple(inputs.shape)}")
    size = (int(inputs.shape[2]), int(inputs.shape[3]))
    with ExitStack() as stack:
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.enable_grad())
        stack.enter_context(torch.autocast(device_type=inputs.device.type, enabled=False))
        stack.enter_context(_eval_mode(model))
        store = stack.enter_context(_hooked(layers, _store_output, {}))
        x = inputs.detach().clone().float().requires_grad_(True)
        logits = model(x)
        if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
            raise ValueError(f"model must return logits (P, K); got {getattr(logits, 'shape', type(logits))}")
        missing = [name for name in layers if name not in store]
        if missing:
            raise ValueError(f"layers {missing} did not run in the forward pass; check the layers mapping")
        predicted = logits.detach().argmax(1)
        if targets is None:
            chosen = predicted
        else:
            given = targets.to(dtype=torch.long).reshape(-1)  # checked where it is (the CPU, for probes)
            if given.shape[0] != logits.shape[0]:
                raise ValueError(f"targets has {given.shape[0]} entries for {logits.shape[0]} probes")
            if bool((given >= logits.shape[1]).any()):
                raise ValueError(f"targets {given.tolist()} out of range for {logits.shape[1]} classes")
            given = given.to(logits.device, non_blocking=True)
            chosen = torch.where(given >= 0, given, predicted)
        score = logits.float().gather(1, chosen[:, None]).sum()
        names = list(layers)
        acts = [store[name] for name in names]
        grads = torch.autograd.grad(score, [x, *acts], allow_unused=True)
        input_grad = grads[0] if grads[0] is not None else torch.zeros_like(x)
        gradcam = {
            name: _gradcam(act.detach().float(), None if g is None else g.float(), size)
            for name, act, g in zip(names, acts, grads[1:])
        }
        activations = {name: act.detach().float() for name, act in zip(names, acts)}
        store.clear()
        capture = ProbeCapture(
            activations=activations,
            gradcam=gradcam,
            gradient=_gradient_saliency(input_grad.detach().float()),
            logits=logits.detach().float(),
            targets=chosen,
        )
        return capture if on_device else capture.cpu()


def capture_pooled(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    batches: Iterable[Tensor],
) -> dict[str, Tensor]:
    """Channel-mean-pooled activations of every layer over all ``batches``.

    Each batch is a normalised float (B, 3, H, W) tensor; it is moved to the
    model's device if needed. Returns layer → (N, C) float32 CPU, rows in batch
    order (N = total images). Runs in eval mode under ``torch.inference_mode``
    with autocast disabled; the model's mode is restored afterwards.
    """
    chunks: dict[str, list[Tensor]] = {}
    device = _model_device(model)
    seen = 0
    with ExitStack() as stack:
        stack.enter_context(torch.inference_mode())
        stack.enter_context(_eval_mode(model))
        stack.enter_context(_hooked(layers, _store_pooled, chunks))
        for batch in batches:
            if device is not None and batch.device != device:
                batch = batch.to(device, non_blocking=True)
            with torch.autocast(device_type=batch.device.type, enabled=False):
                model(batch.float())
            seen += 1
    if seen == 0:
        raise ValueError("capture_pooled got no batches; pass at least one (B, 3, H, W) tensor")
    missing = [name for name in layers if name not in chunks]
    if missing:
        raise ValueError(f"layers {missing} did not run in the forward pass; check the layers mapping")
    return {name: torch.cat(chunks[name]) for name in layers}
