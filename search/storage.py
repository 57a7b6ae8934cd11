"""Where a study lives: an embedded journal file by default, any SQLAlchemy URL for many machines.

- default: Optuna's journal file storage at ``<runs>/optuna/journal.log`` —
  append-only with file locks, so ``--jobs N`` worker processes on one machine
  never see "database is locked" (SQLite's failure mode under parallel writers);
- ``--storage postgresql://…`` (or any SQLAlchemy URL): ``RDBStorage`` with a
  heartbeat, so a worker killed mid-trial has its trial marked FAIL by another
  worker and retried with the same parameters (``RetryHeartbeatStaleTrialCallback``);
  once open, it waits out a short database outage (``search.outages``);
- ``--storage path/to/file.log``: a journal file somewhere else.
"""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import sqlalchemy.exc
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial

from convscope.search.outages import tolerate_outages
from convscope.tracking.layout import RunsLayout
from convscope.tracking.stores import connection_problem, database_url, engine_kwargs
from convscope.tracking.secrets import without_password
from convscope.train.errors import ConfigError

HEARTBEAT_SECONDS = 10  # a running trial's worker writes a heartbeat this often
# a trial whose heartbeat is older than 3 heartbeats is declared dead (FAIL) and retried
MAX_RETRIES = 2  # retries of a trial whose worker died
STORAGE_FLAG = "--storage"
SCHEMA_ATTEMPTS = 5  # tries to open an RDB storage whose tables other workers are creating right now


@dataclass(frozen=True)
class StudyStorage:
    url: str  # what the study is opened with (a bare postgresql:// with its driver added)
    kind: str  # "journal" or "rdb"
    heartbeat_seconds: int = HEARTBEAT_SECONDS  # RDB only: see the module docstring
    given: str = ""  # what the user gave, when it differs from ``url``: what errors quote

    @property
    def display(self) -> str:
        """The URL with any password masked: what may be printed, logged or tagged."""
        return display_url(self.url) if self.kind == "rdb" else self.url


def display_url(url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@")[-1] if "@" in url else url


def resolve_storage(runs_dir: Path, storage: str = "", heartbeat_seconds: int = HEARTBEAT_SECONDS) -> StudyStorage:
    """The study storage ``--storage`` names (the journal under ``runs_dir`` when empty); no I/O.

    A URL goes through ``tracking.stores.database_url``: a bare ``postgresql://`` or
    ``postgres://`` gets the installed driver, and a malformed URL, unknown scheme or missing
    driver is a one-line ``ConfigError`` naming ``--storage``.
    """
    if not storage:
        return StudyStorage(str(RunsLayout(runs_dir).study_journal.resolve()), "journal")
    if "://" in storage:
        url = database_url(storage, STORAGE_FLAG)
        return StudyStorage(url, "rdb", heartbeat_seconds, given=storage if url != storage else "")
    path = Path(storage).expanduser().resolve()
    if path.is_dir():
        raise ConfigError(f"{STORAGE_FLAG} {storage}: a folder; give the path of a journal file in it (e.g. "
                          f"{path / 'journal.log'}) or a database URL")
    return StudyStorage(str(path), "journal")


def open_storage(
    storage: StudyStorage, on_dead_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None
) -> BaseStorage:
    """The Optuna storage object; ``on_dead_trial`` runs before a dead worker's trial is retried.

    A database that cannot be reached, does not exist or refuses the user is a one-line
    ``ConfigError`` naming ``--storage`` (the first connection gives up after
    ``tracking.stores.CONNECT_TIMEOUT_SECONDS``); so is a journal file whose folder cannot be made.
    """
    if storage.kind == "journal":
        path = Path(storage.url)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"{STORAGE_FLAG} {storage.url}: cannot create its folder ({error.strerror}); "
                              "fix the path or its permissions") from None
        return JournalStorage(JournalFileBackend(str(path)))
    with warnings.catch_warnings():  # heartbeats are marked experimental; they are what we rely on
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return _open_rdb(storage, on_dead_trial)
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, OSError) as error:
            shown = without_password(storage.given or storage.url)
            raise ConfigError(f"{STORAGE_FLAG} {shown}: {connection_problem(error)}") from None


def _open_rdb(
    storage: StudyStorage, on_dead_trial: Callable[[optuna.Study, FrozenTrial], None] | None
) -> BaseStorage:
    retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)

    def stale_trial_callback(study: optuna.Study, trial: FrozenTrial) -> None:
        if on_dead_trial is not None:
            on_dead_trial(study, trial)
        retry(study, trial)

    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            rdb = RDBStorage(
                storage.url,
                heartbeat_interval=storage.heartbeat_seconds,
                grace_period=3 * storage.heartbeat_seconds,
                heartbeat_stale_trial_callback=stale_trial_callback,
                engine_kwargs={"pool_pre_ping": True, **engine_kwargs(storage.url)},
            )
            return tolerate_outages(rdb, without_password(storage.given or storage.url))
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # Workers starting together on an empty database race to create Optuna's tables
            # (PostgreSQL: duplicate key … "pg_type_typname_nsp_index"); the loser retries
            # and finds the schema in place.
            if attempt == SCHEMA_ATTEMPTS - 1:
                raise
            time.sleep(0.2 + random.random())
    raise AssertionError("unreachable")
