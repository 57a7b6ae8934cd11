"""A study storage that rides out a short database outage.

Contract: ``OutageTolerantStorage(inner)`` behaves as ``inner`` (an Optuna RDB storage, usually
behind Optuna's own cache) except that a call failing because the database cannot be reached —
SQLAlchemy's ``OperationalError``/``InterfaceError`` or a connection it invalidated, also when
Optuna wrapped it in a ``StorageInternalError`` — is tried again with exponential backoff
(``FIRST_WAIT_S`` doubling up to ``LONGEST_WAIT_S``) until ``patience_s`` seconds have passed since
the first failure; then the last error is raised as before. Every other error passes at once.

The first failure of an outage is one line on stderr naming the storage and how long it will be
waited for; the first call that gets through again says how long the outage lasted. Threads
(a trial's heartbeat, the progress monitor) share one outage and its two lines.

A write whose commit reached the database just before the connection broke is sent again; for
the calls Optuna makes during a trial (parameters, intermediate values, attributes, the final
state) the second write stores the same values.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat

from convscope.train.durations import format_duration

#: How long a study waits for its database to come back before the error stands.
PATIENCE_S = 120.0
FIRST_WAIT_S = 0.5
LONGEST_WAIT_S = 8.0

_DELEGATED = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_all_studies", "create_new_trial", "set_trial_param", "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id", "get_trial_param", "set_trial_state_values", "set_trial_intermediate_value",
    "set_trial_user_attr", "set_trial_system_attr", "get_trial", "get_all_trials", "get_n_trials",
    "get_best_trial", "get_trial_params", "get_trial_user_attrs", "get_trial_system_attrs",
    "check_trial_is_updatable", "remove_session", "record_heartbeat", "_get_stale_trial_ids",
    "get_heartbeat_interval", "get_failed_trial_callback", "get_heartbeat_stale_trial_callback",
)


def is_outage(error: BaseException) -> bool:
    """Whether ``error`` (or what it was raised from) says the database could not be reached."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return True
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _delegate(name: str) -> Callable[..., Any]:
    def method(self: OutageTolerantStorage, *args: Any, **kwargs: Any) -> Any:
        return self._call(name, args, kwargs)

    method.__name__ = name
    return method


class OutageTolerantStorage(BaseStorage, BaseHeartbeat):
    """``inner`` with its calls retried through an outage (contract: module docstring)."""

    def __init__(self, inner: BaseStorage, shown_as: str, patience_s: float = PATIENCE_S,
                 say: Callable[[str], None] | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.inner = inner
        self.shown_as = shown_as
        self.patience_s = patience_s
        self._say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self._sleep = sleep
        self._lock = threading.Lock()
        self._outage_since: float | None = None
        self._gave_up = False

    for _name in _DELEGATED:
        vars()[_name] = _delegate(_name)
    del _name

    def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        wait = FIRST_WAIT_S
        while True:
            try:
                result = getattr(self.inner, name)(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 — only an outage is retried, see is_outage
                if not is_outage(error) or self._given_up():
                    raise
                self._sleep(wait)
                wait = min(2 * wait, LONGEST_WAIT_S)
                continue
            self._recovered()
            return result

    def _given_up(self) -> bool:
        """Start or continue the outage; True once it has lasted ``patience_s``."""
        now = time.monotonic()
        with self._lock:
            if self._outage_since is None:
                self._outage_since = now
                self._say(f"study storage {self.shown_as} cannot be reached: waiting up to "
                          f"{format_duration(self.patience_s)} for it to come back")
                return False
            if now - self._outage_since < self.patience_s:
                return False
            first = not self._gave_up
            self._gave_up = True
        if first:
            self._say(f"study storage {self.shown_as} still cannot be reached after "
                      f"{format_duration(self.patience_s)}: giving up")
        return True

    def _recovered(self) -> None:
        if self._outage_since is None:  # the usual case: no lock taken
            return
        with self._lock:
            if self._outage_since is None:
                return
            lasted = time.monotonic() - self._outage_since
            self._outage_since, self._gave_up = None, False
        self._say(f"study storage {self.shown_as} is back after {format_duration(lasted)}: the study goes on")


def tolerate_outages(storage: optuna.storages.RDBStorage, shown_as: str) -> OutageTolerantStorage:
    """``storage`` behind Optuna's own cache (what ``optuna.create_study`` would put in front of it),
    behind ``OutageTolerantStorage``."""
    return OutageTolerantStorage(optuna.storages.get_storage(storage), shown_as)
