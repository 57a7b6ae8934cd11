"""Storage faults: telling "the store cannot be written" apart from other errors, in one line.

A full disk, a read-only mount or a folder without write permission shows up in many
shapes: an ``OSError`` from a checkpoint write, a ``sqlite3.OperationalError`` wrapped in
SQLAlchemy's and MLflow's exceptions, a TensorBoard writer error re-raised on ``close``.
``store_fault`` names the fault whatever the shape; ``check_writable`` finds a read-only or
unwritable folder before any run is opened; ``store_error`` / ``store_errors`` turn a fault
into one ``StoreWriteError`` line naming the folder (or server) and what to free.
"""

from __future__ import annotations

import errno
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from convscope.tracking.errors import ConfigError, StoreWriteError
from convscope.tracking.secrets import mask_secrets

NO_SPACE = "no space left on device"
READ_ONLY = "read-only file system"
NO_PERMISSION = "permission denied"

_ERRNO_FAULTS = {
    errno.ENOSPC: NO_SPACE,
    errno.EDQUOT: NO_SPACE,
    errno.EROFS: READ_ONLY,
    errno.EACCES: NO_PERMISSION,
    errno.EPERM: NO_PERMISSION,
}
_TEXT_FAULTS = (  # lower-case needles in messages of errors that lost their errno on the way
    ("no space left on device", NO_SPACE),
    ("database or disk is full", NO_SPACE),
    ("disk quota exceeded", NO_SPACE),
    ("read-only file system", READ_ONLY),
    ("attempt to write a readonly database", READ_ONLY),
)


def _causes(error: BaseException) -> Iterator[BaseException]:
    """``error``, then what it wraps (``__cause__``, ``__context__`` unless suppressed, SQLAlchemy's
    ``orig``), once each."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        context = None if current.__suppress_context__ else current.__context__
        for inner in (current.__cause__, context, getattr(current, "orig", None)):
            if isinstance(inner, BaseException):
                pending.append(inner)


def store_fault(error: BaseException) -> str | None:
    """``NO_SPACE``, ``READ_ONLY`` or ``NO_PERMISSION`` when ``error`` (or an error it wraps) means
    that storage could not be written; None for every other error. An ``OSError``'s errno decides;
    other errors (SQLite's, MLflow's) are recognised by their message."""
    for cause in _causes(error):
        if isinstance(cause, OSError) and cause.errno in _ERRNO_FAULTS:
            return _ERRNO_FAULTS[cause.errno]
    for cause in _causes(error):
        text = str(cause).lower()
        for needle, fault in _TEXT_FAULTS:
            if needle in text:
                return fault
    return None


def advice(fault: str, where: str) -> str:
    """What to do about ``fault`` (a ``store_fault`` value) at ``where`` (a folder or a server), in words."""
    if fault == NO_SPACE:
        return f"free space in {where}"
    return f"make {where} writable"


def describe_error(error: BaseException) -> str:
    """``Type: first line of the message``, credentials masked: an error as one line."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    name = type(error).__name__
    return mask_secrets(f"{name}: {lines[0]}" if lines else name)


def store_location(links: Mapping[str, str]) -> str:
    """Where a run with these ``Tracker.links()`` is written, for a message: the folder of an
    embedded SQLite store or a local artifact/TensorBoard folder, else the server (password masked)."""
    uri = links.get("mlflow_tracking_uri", "")
    if uri.startswith("sqlite:///"):
        return str(Path(uri.removeprefix("sqlite:///")).parent)
    if uri.startswith("file://"):
        return uri.removeprefix("file://")
    if uri:
        return f"the MLflow store {mask_secrets(uri)}"
    if "tensorboard_dir" in links:
        return links["tensorboard_dir"]
    return "the tracking store"


def check_writable(folder: str | Path, flag: str, files: Iterable[str] = ()) -> Path:
    """Make sure ``folder`` (created if missing) takes new files, and that each of ``files`` in it
    that exists may be written; return it resolved.

    Call before any run is opened: a read-only mount, a folder without permission or a store file
    that may not be written is then one line instead of a failure in the middle of a run.

    Raises:
        ConfigError: naming ``flag`` and ``folder`` as given, the reason and what to do.
    """
    path = Path(folder).expanduser()
    shown = f"{flag} {folder}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".convscope-write-check-") as probe:
            probe.write(b"x")
            probe.flush()
        for name in files:
            target = path / name
            if target.exists():
                with open(target, "r+b"):  # opening for writing changes nothing
                    pass
    except OSError as error:
        fault = store_fault(error) or describe_error(error)
        if fault == NO_SPACE:
            raise ConfigError(f"{shown}: {fault}; free space there or choose another {flag}") from None
        raise ConfigError(f"{shown}: cannot write there ({fault}); make it writable or choose another {flag}") from None
    return path.resolve()


def store_error(error: BaseException, where: str | Path, flag: str = "", note: str = "",
                server: str = "") -> StoreWriteError | None:
    """The one-line ``StoreWriteError`` for ``error`` when it is a storage fault (``store_fault``),
    else None.

    The message is ``<flag> <where>: <fault>; <advice>`` plus ``(note)`` (e.g. where the last
    checkpoint is). ``where`` is the folder the run writes to, ``flag`` the setting that chose it
    (``--runs-dir``; empty when none did). ``server``: the MLflow store's URI when it is not
    embedded; a fault that is no local ``OSError`` is then that server's and is named as
    ``--mlflow-uri <server>`` (password masked). A ``ConfigError`` is returned as None: it is one
    line already.
    """
    fault = None if isinstance(error, ConfigError) else store_fault(error)  # a ConfigError is one line already
    if fault is None:
        return None
    local = any(isinstance(cause, OSError) and cause.errno in _ERRNO_FAULTS for cause in _causes(error))
    if server and not local:
        shown = f"--mlflow-uri {mask_secrets(server)}"
    else:
        shown = f"{flag} {where}" if flag else str(where)
    todo = "free space there" if fault == NO_SPACE else "make it writable"
    return StoreWriteError(f"{shown}: {fault}; {todo}" + (f" ({note})" if note else ""))


@contextmanager
def store_errors(where: str | Path, flag: str = "", note: str = "", server: str = "",
                 keep: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Raise ``store_error``'s one line for a storage fault raised inside; other errors, and those
    of the ``keep`` types (errors that are one line already), pass unchanged."""
    try:
        yield
    except Exception as error:
        converted = None if isinstance(error, keep) else store_error(error, where, flag, note, server)
        if converted is None:
            raise
        raise converted from error
