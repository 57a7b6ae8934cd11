"""Errors of a training run; bad user input is :class:`tracking.errors.ConfigError` (exit code 2)."""

from convscope.tracking.errors import ConfigError

__all__ = ["ConfigError", "NonFiniteLossError"]


class NonFiniteLossError(RuntimeError):
    """Training loss became NaN or infinite; the run cannot continue meaningfully."""
