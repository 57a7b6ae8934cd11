"""Errors that mean "the user asked for something we cannot do" (CLI exit code 2).

Defined here, at the bottom of the package layers, so that every layer (tracking's store
and URL checks included) raises the one kind of error the command line turns into a
one-line message and exit code 2.
"""


class ConfigError(ValueError):
    """Bad user input: the message names the flag or file and says what to do."""


class StoreWriteError(ConfigError):
    """A runs folder or tracking store that cannot take what a run writes (no space left, read-only,
    permission denied): the message names the folder or server and what to free or fix. A
    ``ConfigError``, so the command line prints it as one line; a front door that tells it apart
    may give it its own exit code."""
