"""The study storage waits out a database outage: retried calls, one line when it starts and one
when it ends, and anything else raised at once."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc

from convscope.search.outages import FIRST_WAIT_S, LONGEST_WAIT_S, OutageTolerantStorage, is_outage


def _lost_connection() -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))


def _storage(tmp_path: Path, patience_s: float = 60.0) -> tuple[OutageTolerantStorage, list[str], list[float]]:
    said: list[str] = []
    slept: list[float] = []
    rdb = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=5)
    storage = OutageTolerantStorage(optuna.storages.get_storage(rdb), "postgresql://db:5432/studies",
                                    patience_s=patience_s, say=said.append, sleep=slept.append)
    return storage, said, slept


def _fail_first(storage: OutageTolerantStorage, name: str, errors: list[BaseException]) -> None:
    real = getattr(storage.inner, name)

    def flaky(*args: object, **kwargs: object) -> object:
        if errors:
            raise errors.pop(0)
        return real(*args, **kwargs)

    setattr(storage.inner, name, flaky)


def test_calls_are_retried_with_backoff_through_an_outage(tmp_path: Path) -> None:
    storage, said, slept = _storage(tmp_path)
    study = optuna.create_study(study_name="s", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    wrapped = optuna.exceptions.StorageInternalError("commit failed")
    wrapped.__cause__ = _lost_connection()
    _fail_first(storage, "get_all_trials", [_lost_connection() for _ in range(6)] + [wrapped])
    assert len(study.get_trials()) == 1  # the call got through once the database was back
    assert slept == [FIRST_WAIT_S, 1.0, 2.0, 4.0, LONGEST_WAIT_S, LONGEST_WAIT_S, LONGEST_WAIT_S]
    assert said[0] == "study storage postgresql://db:5432/studies cannot be reached: waiting up to 1m00s for it to come back"
    assert said[1].startswith("study storage postgresql://db:5432/studies is back after ") and len(said) == 2
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert len(said) == 2 and len(study.trials) == 2  # no outage, no line
    assert storage.get_heartbeat_interval() == 5  # heartbeats go on through the wrapper


def test_other_errors_pass_at_once_and_a_long_outage_gives_up(tmp_path: Path) -> None:
    storage, said, slept = _storage(tmp_path, patience_s=0.0)
    study = optuna.create_study(study_name="s", storage=storage)
    _fail_first(storage, "get_all_trials", [ValueError("not an outage")])
    with pytest.raises(ValueError):
        study.get_trials()
    assert not said and not slept
    _fail_first(storage, "get_all_trials", [_lost_connection(), _lost_connection(), _lost_connection()])
    with pytest.raises(sqlalchemy.exc.OperationalError):
        study.get_trials()
    assert said[-1] == "study storage postgresql://db:5432/studies still cannot be reached after 0.0s: giving up"
    assert sum("giving up" in line for line in said) == 1


def test_what_counts_as_an_outage() -> None:
    assert is_outage(_lost_connection())
    assert is_outage(sqlalchemy.exc.InterfaceError("SELECT 1", {}, Exception("connection already closed")))
    assert not is_outage(sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert not is_outage(optuna.exceptions.StorageInternalError("too long a value"))
    assert not is_outage(RuntimeError("boom"))
