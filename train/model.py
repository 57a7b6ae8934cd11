"""The model family: N conv blocks named conv1 … convN, then a linear head.

Each block is ``Conv2d → BatchNorm2d → ReLU → Dropout2d`` (optionally followed by
a 2x2 max-pool), then a linear head on the flattened or globally average-pooled last map
(``--head``). The ``seed`` preset reproduces the reference network exactly
(409,682 parameters at 3x64x64 with two classes). A block listed in ``bypass`` is
replaced by a :class:`Bypass` — the ablation of that block that leaves every other
block, and the head, exactly as they were.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from convscope.train.config_sections import ModelConfig
from convscope.train.geometry import HEADS, POOLS, max_depth, min_image_size, spatial_sizes, validate

__all__ = ["HEADS", "POOLS", "Bypass", "ConvBlock", "ConvNet", "build_head", "build_model", "count_parameters",
           "layer_table", "max_depth", "min_image_size", "spatial_sizes", "validate"]



class ConvBlock(nn.Module):
    """One conv block; ``act`` is the module whose output is the block's activation."""

    def __init__(self, in_channels: int, out_channels: int, config: ModelConfig) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size=config.kernel_size,
            stride=config.stride,
            padding=config.padding,
            bias=not config.batch_norm,
        )
        self.norm = nn.BatchNorm2d(out_channels) if config.batch_norm else nn.Identity()
        self.act = nn.ReLU()
        self.drop = nn.Dropout2d(config.dropout)
        self.pool = nn.MaxPool2d(2) if config.pool == "max" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = self.norm(x)
        x = self.act(x)
        x = self.drop(x)
        x = self.pool(x)
        return x


class Bypass(nn.Module):
    """What stands in for a removed block: average pooling to the block's output size, then a
    1x1 convolution to its width (none when the width already matches). Linear, with no 3x3
    receptive field of its own, so it removes what the block computed while every later
    block and the head see tensors of the shape they had."""

    def __init__(self, in_channels: int, out_channels: int, side: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(side)
        self.project = nn.Conv2d(in_channels, out_channels, 1, bias=False) if in_channels != out_channels \
            else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x)
        x = self.project(x)
        return x


def build_head(config: ModelConfig, channels: int, side: int) -> nn.Sequential:
    """The classifier head on the last block's ``channels`` x ``side`` x ``side`` map.

    ``flatten`` (the reference): Flatten → Linear(channels·side², head_hidden) → Linear(head_hidden,
    classes), so its size follows the input size. ``gap``: AdaptiveAvgPool2d(1) → Flatten → the same
    linears from ``channels`` inputs, so one set of weights takes any input size. ``head_activation``
    puts a ReLU between the two linears (the reference has none); ``head_hidden`` 0 leaves one linear.
    """
    if config.head == "gap":
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        features = channels
    else:
        layers = [nn.Flatten()]
        features = channels * side * side
    if config.head_hidden > 0:
        layers.append(nn.Linear(features, config.head_hidden))
        if config.head_activation:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(config.head_hidden, config.num_classes))
    else:
        layers.append(nn.Linear(features, config.num_classes))
    return nn.Sequential(*layers)


class ConvNet(nn.Module):
    """``features`` (conv1 … convN) → ``head`` (see :func:`build_head`)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        validate(config)
        self.config = config
        widths = config.channel_widths()
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        in_channels = config.in_channels
        for index, (width, side) in enumerate(zip(widths, spatial_sizes(config)), start=1):
            bypassed = index in config.bypass
            blocks[f"conv{index}"] = Bypass(in_channels, width, side) if bypassed else ConvBlock(in_channels, width,
                                                                                                  config)
            in_channels = width
        self.features = nn.Sequential(blocks)
        self.head = build_head(config, in_channels, spatial_sizes(config)[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def feature_layers(self) -> dict[str, nn.Module]:
        """Layer name → the module whose output is that block's post-ReLU activation (bypassed blocks have none)."""
        return {name: block.act for name, block in self.features.named_children() if isinstance(block, ConvBlock)}

    def first_conv(self) -> nn.Conv2d | None:
        """conv1's convolution, whose filters see the image and are worth drawing; None when bypassed."""
        first = self.features[0]
        return first.conv if isinstance(first, ConvBlock) else None


def build_model(config: ModelConfig) -> ConvNet:
    return ConvNet(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def layer_table(model: ConvNet) -> str:
    """A plain-text table of every block and head layer: output shape and parameters."""
    config = model.config
    rows: list[tuple[str, str, str]] = [("input", f"{config.in_channels}x{config.image_size}x{config.image_size}", "0")]
    x = torch.zeros(1, config.in_channels, config.image_size, config.image_size)
    model_was_training = model.training
    model.eval()
    with torch.no_grad():
        for name, block in model.features.named_children():
            x = block(x)
            label = f"{name} (bypassed)" if isinstance(block, Bypass) else name
            rows.append((label, "x".join(str(d) for d in x.shape[1:]), f"{count_parameters(block):,}"))
        for index, layer in enumerate(model.head):
            x = layer(x)
            label = f"head.{index} {type(layer).__name__}"
            rows.append((label, "x".join(str(d) for d in x.shape[1:]), f"{count_parameters(layer):,}"))
    model.train(model_was_training)
    rows.append(("total", "", f"{count_parameters(model):,}"))
    widths = [max(len(row[i]) for row in rows + [("layer", "output", "params")]) for i in range(3)]
    lines = [f"{'layer':<{widths[0]}}  {'output':<{widths[1]}}  {'params':>{widths[2]}}"]
    lines.append("-" * (sum(widths) + 4))
    for name, shape, params in rows:
        if name == "total":
            lines.append("-" * (sum(widths) + 4))
        lines.append(f"{name:<{widths[0]}}  {shape:<{widths[1]}}  {params:>{widths[2]}}")
    return "\n".join(lines)
