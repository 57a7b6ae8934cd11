"""A network's shape without building it: feature-map sizes per block, the deepest network an
input fits, and the checks that a config can build a network at all. No torch: the command
line checks a config with these before importing anything heavy."""

from __future__ import annotations

from dataclasses import replace

from convscope.train.config_sections import ModelConfig
from convscope.train.errors import ConfigError

POOLS = ("none", "max")
HEADS = ("flatten", "gap")


def spatial_sizes(config: ModelConfig, depth: int | None = None) -> list[int]:
    """Side length after each block (before flattening), for ``depth`` blocks."""
    side = config.image_size
    sizes = []
    for _ in range(config.depth if depth is None else depth):
        side = (side + 2 * config.padding - config.kernel_size) // config.stride + 1
        if config.pool == "max":
            side //= 2
        sizes.append(side)
    return sizes


def max_depth(config: ModelConfig, limit: int = 64) -> int:
    """The largest useful depth: the feature map still has at least 1x1 pixels and
    no block sees an input that is already 1x1 (with padding, sizes can stay at 1 forever)."""
    sizes = spatial_sizes(config, limit)
    for index, side in enumerate(sizes):
        if side < 1 or (index > 0 and sizes[index - 1] == 1):
            return index
    return limit


def validate(config: ModelConfig) -> None:
    """Raise ConfigError naming the flag when the config cannot build a network."""
    if config.depth < 1:
        raise ConfigError(f"--depth must be at least 1 (got {config.depth})")
    if config.widths and len(config.widths) != config.depth:
        raise ConfigError(
            f"--widths lists {len(config.widths)} widths but --depth is {config.depth}: give one width per block"
        )
    if any(not 1 <= block <= config.depth for block in config.bypass) or len(set(config.bypass)) < len(config.bypass):
        raise ConfigError(f"--bypass {' '.join(map(str, config.bypass))}: give distinct blocks from 1 to "
                          f"{config.depth} (--depth)")
    if len(config.bypass) >= config.depth:
        raise ConfigError(f"--bypass {' '.join(map(str, config.bypass))}: at least one of the {config.depth} "
                          "blocks must stay")
    if any(width < 1 for width in config.channel_widths()):
        raise ConfigError(f"--widths must all be positive (got {config.channel_widths()})")
    if not 0.0 <= config.dropout < 1.0:
        raise ConfigError(f"--dropout must be in [0, 1) (got {config.dropout})")
    if config.pool not in POOLS:
        raise ConfigError(f"--pool must be one of {', '.join(POOLS)} (got {config.pool!r})")
    if config.head not in HEADS:
        raise ConfigError(f"--head must be one of {', '.join(HEADS)} (got {config.head!r})")
    if config.kernel_size < 1 or config.stride < 1 or config.padding < 0:
        raise ConfigError("--kernel-size and --stride must be at least 1 and --padding at least 0")
    if config.num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes (got {config.num_classes})")
    if config.image_size > MAX_IMAGE_SIDE:
        raise ConfigError(f"--image-size {config.image_size}: at most {MAX_IMAGE_SIDE} pixels a side (photos are "
                          "resized to it and held in memory)")
    sizes = spatial_sizes(config)
    if sizes[-1] < 1:
        fits = max_depth(config)
        geometry = (f"kernel {config.kernel_size}, stride {config.stride}, padding {config.padding}, "
                    f"pool {config.pool}")
        fits_text = f"the largest depth that fits is {fits}" if fits else "not even one block fits"
        smallest = min_image_size(config)
        if smallest is None:
            raise ConfigError(
                f"--depth {config.depth} is too deep for any input of up to {MAX_IMAGE_SIDE} pixels a side "
                f"({geometry}): at --image-size {config.image_size} conv{fits + 1} would have an empty output; "
                f"{fits_text}"
            )
        raise ConfigError(
            f"--image-size {config.image_size} is below the minimum of {smallest} for --depth {config.depth} "
            f"({geometry}): conv{fits + 1} would have an empty output; {fits_text} "
            f"(use --image-size {smallest} or more, fewer blocks, or --padding)"
        )
    check_head_size(config)


MAX_IMAGE_SIDE = 1 << 14


def min_image_size(config: ModelConfig, limit: int = MAX_IMAGE_SIDE) -> int | None:
    """The smallest input side for which ``config.depth`` blocks still leave a 1x1 map; None when
    no side below ``limit`` does."""
    return next((size for size in range(1, limit) if spatial_sizes(replace(config, image_size=size))[-1] >= 1), None)


#: The most weights a flatten head may have (4 bytes each, plus AdamW's two moments: 12 GB).
MAX_HEAD_WEIGHTS = 1_000_000_000


def check_head_size(config: ModelConfig) -> None:
    """ConfigError when the flatten head on the last block's map would be too large to allocate."""
    if config.head != "flatten":
        return
    side = spatial_sizes(config)[-1]
    features = config.channel_widths()[-1] * side * side
    weights = features * (config.head_hidden or config.num_classes)
    if weights > MAX_HEAD_WEIGHTS:
        raise ConfigError(f"--image-size {config.image_size}: the flatten head would read {features:,} values of "
                          f"conv{config.depth}'s {side}x{side} maps ({weights:,} weights); use a smaller --image-size, "
                          "more --depth, or --head gap")
