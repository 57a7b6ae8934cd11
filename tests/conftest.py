"""Shared fixtures. Nothing here sets ``MLFLOW_TRACKING_URI``: every test names its store."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402

from convscope.servers.servers import (  # noqa: E402
    free_port,
    mlflow_server_command,
    start_process_group,
    stop_process_group,
    wait_for_http,
)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 (sqlite backend, proxied artifacts) for the
    whole session; yields its ``http://127.0.0.1:PORT`` URI and stops its process group."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    cmd = mlflow_server_command(
        f"sqlite:///{root / 'mlflow.db'}",
        "127.0.0.1",
        port,
        artifacts_destination=str(root / "artifacts"),
        workers=1,
    )
    log_path = root / "server.log"
    proc = start_process_group(cmd, log_path)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{uri}/health", timeout=120, proc=proc, log_path=log_path)
        yield uri
    finally:
        stop_process_group(proc)


@pytest.fixture
def new_database() -> Iterator:
    """Call it for the SQLAlchemy URL of a new, empty PostgreSQL database (dropped after the
    test); the test needs ``@needs_postgres`` from ``postgres_db``."""
    from postgres_db import databases

    with databases() as new:
        yield new


@pytest.fixture
def fresh_db(new_database) -> str:
    """The SQLAlchemy URL of one new, empty PostgreSQL database (see ``new_database``)."""
    return new_database()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``CONVSCOPE_*`` setting (but the PostgreSQL test URL) or MLflow URI leaks in from outside."""
    from convscope.cli.env_flags import PREFIX

    for name in list(os.environ):
        if name.startswith(PREFIX) and name != "CONVSCOPE_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def capturable_on_cpu() -> Iterator[None]:
    """torch's ``capturable`` optimizers allowed on the CPU for the test (``host_syncs``)."""
    from host_syncs import capturable_on_cpu as allow

    with allow():
        yield
