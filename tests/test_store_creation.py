"""Creating the embedded MLflow store: a migration that fails with SQLAlchemy's flaky
``CircularDependencyError`` is retried on a fresh file; any other error is not."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from convscope.tracking.stores import STORE_CREATION_ATTEMPTS, create_embedded_store, first_open_lock, resolve_stores


class CircularDependencyError(Exception):
    """Named as SQLAlchemy's: what ``create_embedded_store`` retries."""


def flaky_init(failures: int, error: type[Exception], calls: list[Path]):  # type: ignore[no-untyped-def]
    real = SqlAlchemyStore.__init__

    def init(self, db_uri: str, default_artifact_root: str) -> None:  # type: ignore[no-untyped-def]
        calls.append(Path(db_uri.removeprefix("sqlite:///")))
        if len(calls) <= failures:
            Path(db_uri.removeprefix("sqlite:///")).write_bytes(b"half a migration")
            raise error("Circular dependency detected")
        real(self, db_uri, default_artifact_root)

    return init


def test_a_flaky_migration_is_retried_on_a_fresh_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stores = resolve_stores(tmp_path / "runs")
    calls: list[Path] = []
    monkeypatch.setattr(SqlAlchemyStore, "__init__", flaky_init(1, CircularDependencyError, calls))
    with first_open_lock(stores):
        pass
    assert len(calls) == 2 and calls[0] == calls[1] == stores.layout.mlflow_db
    monkeypatch.undo()
    assert [e.name for e in MlflowClient(stores.mlflow_uri).search_experiments()] == ["Default"]


def test_other_errors_and_the_last_attempt_are_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stores = resolve_stores(tmp_path / "a")
    stores.runs_dir.mkdir()
    calls: list[Path] = []
    monkeypatch.setattr(SqlAlchemyStore, "__init__", flaky_init(9, OSError, calls))
    with pytest.raises(OSError):
        create_embedded_store(stores)
    assert len(calls) == 1
    stores = resolve_stores(tmp_path / "b")
    stores.runs_dir.mkdir()
    calls.clear()
    monkeypatch.setattr(SqlAlchemyStore, "__init__", flaky_init(9, CircularDependencyError, calls))
    with pytest.raises(CircularDependencyError):
        create_embedded_store(stores)
    assert len(calls) == STORE_CREATION_ATTEMPTS


def test_an_existing_store_is_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stores = resolve_stores(tmp_path / "runs")
    stores.runs_dir.mkdir()
    stores.layout.mlflow_db.write_bytes(b"")
    calls: list[Path] = []
    monkeypatch.setattr(SqlAlchemyStore, "__init__", flaky_init(9, OSError, calls))
    create_embedded_store(stores)
    assert calls == []
