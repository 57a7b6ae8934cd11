"""Durations on the command line (``--timeout``): parsed from ``90m``/``1h``/``3600``, printed as ``3m05s``."""

from __future__ import annotations

import re

from convscope.train.errors import ConfigError

UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION = re.compile(r"(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?")


def parse_timeout(text: str) -> float:
    """Seconds in ``text``: plain seconds (``3600``, ``90.5``) or ``h``/``m``/``s`` parts in that
    order (``1h``, ``90m``, ``45s``, ``2h30m``, ``1h0m30s``).

    Raises:
        ConfigError: anything else, or a duration of 0 or less.
    """
    cleaned = text.strip().lower()
    seconds: float | None = None
    try:
        seconds = float(cleaned)
    except ValueError:
        match = _DURATION.fullmatch(cleaned)
        if cleaned and match is not None:
            seconds = sum(float(value) * UNITS[unit] for unit, value in match.groupdict().items() if value)
    if seconds is None or not seconds > 0 or seconds == float("inf"):
        raise ConfigError(f"--timeout must be a duration above 0 such as 3600 (seconds), 45s, 90m, 1h or 2h30m "
                          f"(got {text!r})")
    return seconds


def format_duration(seconds: float) -> str:
    """``45.2s``, ``3m05s``, ``2h30m00s``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
