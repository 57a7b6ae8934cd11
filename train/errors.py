"""Errors that mean "the user asked for something we cannot do" (CLI exit code 2)."""


class ConfigError(ValueError):
    """Bad user input: the message names the flag or file and says what to do."""


class NonFiniteLossError(RuntimeError):
    """Training loss became NaN or infinite; the run cannot continue meaningfully."""
