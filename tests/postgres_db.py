"""A real PostgreSQL for tests, the way Optuna's own storage tests get one.

The server comes from ``CONVSCOPE_TEST_POSTGRES_URL`` (a SQLAlchemy URL such as
``postgresql+psycopg2://postgres@127.0.0.1:5432/test``; ``.ci/run`` sets it). Without it,
tests marked ``needs_postgres`` skip with that reason. Every database a test asks for
is new and empty (``convscope_<hex>``) and is dropped afterwards, so tests never see
each other's studies or runs.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

POSTGRES_URL = os.environ.get("CONVSCOPE_TEST_POSTGRES_URL", "")
needs_postgres = pytest.mark.skipif(
    not POSTGRES_URL,
    reason="set CONVSCOPE_TEST_POSTGRES_URL to a PostgreSQL SQLAlchemy URL "
    "(e.g. postgresql+psycopg2://postgres@127.0.0.1:5432/test; .ci/run sets it) to run these",
)


def _server_kwargs(database: str) -> dict:
    from sqlalchemy.engine import make_url

    parsed = make_url(POSTGRES_URL)
    kwargs = {"host": parsed.host, "port": parsed.port, "user": parsed.username,
              "password": parsed.password, "dbname": database}
    return {key: value for key, value in kwargs.items() if value is not None}


def connect(database: str):  # -> psycopg2 connection
    """A plain psycopg2 connection to ``database`` on the test server."""
    import psycopg2

    return psycopg2.connect(**_server_kwargs(database))


def _admin(sql: str, *params: object) -> None:
    connection = connect("postgres")
    try:
        connection.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
        with connection.cursor() as cursor:
            cursor.execute(sql, params or None)
    finally:
        connection.close()


def _drop(name: str) -> None:
    _admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
           name)
    _admin(f'DROP DATABASE IF EXISTS "{name}"')


@contextmanager
def databases() -> Iterator[Callable[[], str]]:
    """A factory of new, empty databases (SQLAlchemy URLs); all are dropped on exit."""
    from sqlalchemy.engine import make_url

    created: list[str] = []

    def new() -> str:
        name = f"convscope_{uuid.uuid4().hex[:12]}"
        _admin(f'CREATE DATABASE "{name}"')
        created.append(name)
        return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)

    try:
        yield new
    finally:
        for name in created:
            _drop(name)
