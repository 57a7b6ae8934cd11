"""Storage (``--storage``) and tracking (``--mlflow-uri``, ``MLFLOW_TRACKING_URI``) URLs either
work or fail with one line that names the flag, says what is wrong and hides the password."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from e2e_helpers import convscope
from postgres_db import POSTGRES_URL, needs_postgres
from convscope.cli.main import main
from convscope.search.storage import open_storage, resolve_storage
from convscope.tracking.stores import database_url, resolve_stores, tracking_uri
from convscope.train.errors import ConfigError

SECRET = "hunter2-secret"


def bare(url: str) -> str:
    """``url`` with a bare ``postgresql://`` scheme (no driver), as the README writes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def assert_one_line(message: str, flag: str) -> None:
    assert message.startswith(f"{flag} "), message
    assert "\n" not in message.strip(), message
    assert SECRET not in message, message
    assert "Traceback" not in message


@pytest.mark.parametrize("url", ["postgresql://u@h/db", "postgres://u@h/db"])
def test_bare_postgres_gets_the_installed_driver(url: str) -> None:
    assert database_url(url, "--storage") == "postgresql+psycopg2://u@h/db"


def test_a_url_with_a_driver_and_its_password_stay_as_given() -> None:
    url = f"postgresql+psycopg2://u:{SECRET}@h:5433/db?sslmode=require"
    assert database_url(url, "--storage") == url
    assert database_url(f"postgresql://u:{SECRET}@h/db", "--storage") == f"postgresql+psycopg2://u:{SECRET}@h/db"


def test_journal_paths_and_the_default_are_untouched(tmp_path: Path) -> None:
    assert resolve_storage(tmp_path).kind == "journal"
    assert resolve_storage(tmp_path, str(tmp_path / "j.log")).url == str(tmp_path / "j.log")


BAD_STORAGE = [
    ("postgresql://", "no host or no database"),
    (f"postgresql://u:{SECRET}@", "no host or no database"),
    ("nosuchscheme://x", "unknown database scheme"),
    (f"postgresql+psycopg2://postgres:{SECRET}@127.0.0.1:1/test", "connection refused"),
    (f"postgresql://postgres:{SECRET}@127.0.0.1:1/test", "connection refused"),
    ("sqlite:////nonexistent/dir/x.db", "cannot open the database file"),
]


@pytest.mark.parametrize(("url", "says"), BAD_STORAGE)
def test_bad_storage_is_one_config_error_line(tmp_path: Path, url: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_storage(resolve_storage(tmp_path, url))
    assert_one_line(str(caught.value), "--storage")
    assert says in str(caught.value)


BAD_TRACKING = [
    ("http://127.0.0.1:1", "connection refused"),
    ("postgresql://", "no host or no database"),
    ("nosuchscheme://x", "no store for scheme"),
    (f"postgresql+psycopg2://postgres:{SECRET}@127.0.0.1:1/test", "connection refused"),
    ("sqlite:////nonexistent/dir/x.db", "does not exist"),
]


@pytest.mark.parametrize(("url", "says"), BAD_TRACKING)
def test_bad_tracking_uri_is_one_config_error_line(tmp_path: Path, url: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_stores(tmp_path, url)
    assert_one_line(str(caught.value), "--mlflow-uri")
    assert says in str(caught.value)


def test_a_bad_environment_uri_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://u:{SECRET}@127.0.0.1:1")
    with pytest.raises(ConfigError) as caught:
        resolve_stores(tmp_path)
    assert_one_line(str(caught.value), "MLFLOW_TRACKING_URI")


def test_the_embedded_store_and_local_paths_need_no_check(tmp_path: Path) -> None:
    assert resolve_stores(tmp_path).embedded
    assert resolve_stores(tmp_path, str(tmp_path / "mlruns")).mlflow_uri == str(tmp_path / "mlruns")
    assert tracking_uri("postgresql://u@h/db", "--mlflow-uri", check=False) == "postgresql+psycopg2://u@h/db"


def test_a_live_mlflow_server_passes(tmp_path: Path, mlflow_server: str) -> None:
    assert resolve_stores(tmp_path, mlflow_server).mlflow_uri == mlflow_server


def test_cli_search_with_an_unreachable_database_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["search", "--storage", f"postgresql://postgres:{SECRET}@127.0.0.1:1/optuna", "--trials", "1",
                 "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("convscope search: error: --storage postgresql://postgres:***@127.0.0.1:1/optuna: "
                          "cannot connect (connection refused)"), err
    assert "\n" not in err and SECRET not in err


def test_cli_train_with_an_unreachable_server_exits_2_without_a_traceback(tmp_path: Path) -> None:
    done = convscope("train", "--mlflow-uri", f"http://u:{SECRET}@127.0.0.1:1", "--epochs", "1",
                     "--runs-dir", str(tmp_path))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr and SECRET not in done.stderr, done.stderr
    assert "--mlflow-uri http://u:***@127.0.0.1:1: cannot connect" in lines[0]


def test_cli_compare_study_with_an_unknown_scheme_exits_2(tmp_path: Path) -> None:
    done = convscope("compare", "--study", "s", "--storage", "nosuchscheme://x", "--runs-dir", str(tmp_path))
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "--storage nosuchscheme://x: unknown database scheme" in done.stderr


@needs_postgres
def test_bare_postgresql_url_opens_an_optuna_storage(new_database) -> None:  # type: ignore[no-untyped-def]
    import optuna

    url = bare(new_database())
    storage = open_storage(resolve_storage(Path("."), url))
    optuna.create_study(study_name="s", storage=storage).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 2


@needs_postgres
def test_the_readme_example_url_connects() -> None:
    server = make_url(POSTGRES_URL)
    url = f"postgresql://{server.username}@{server.host}:{server.port or 5432}/{server.database}"
    stores = resolve_stores(Path("."), url)  # connects only: creates no MLflow table in the shared database
    assert stores.mlflow_uri.startswith("postgresql+psycopg2://")


@needs_postgres
def test_a_missing_database_is_one_line(tmp_path: Path) -> None:
    url = make_url(POSTGRES_URL).set(database="no_such_db_xyz", password=SECRET)
    url = url.render_as_string(hide_password=False)
    with pytest.raises(ConfigError) as caught:
        open_storage(resolve_storage(tmp_path, url))
    assert_one_line(str(caught.value), "--storage")
    assert "'no_such_db_xyz' does not exist" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        resolve_stores(tmp_path, url)
    assert_one_line(str(caught.value), "--mlflow-uri")


@needs_postgres
def test_bare_postgresql_url_is_an_mlflow_store(new_database, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    stores = resolve_stores(tmp_path, bare(new_database()))
    assert [e.name for e in MlflowClient(stores.mlflow_uri).search_experiments()] == ["Default"]
