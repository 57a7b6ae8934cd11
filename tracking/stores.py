"""Where runs are stored: the embedded default under one folder, or URLs.

Embedded default (no server): MLflow's sqlite store and its artifacts, TensorBoard's
events and the checkpoints all under the runs folder (``tracking.layout`` says where).
``--mlflow-uri`` or ``MLFLOW_TRACKING_URI`` replaces the MLflow store (e.g. a tracking
server that proxies artifacts).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from convscope.tracking.base import FanOut, Tracker
from convscope.tracking.errors import ConfigError
from convscope.tracking.layout import RunsLayout
from convscope.tracking.secrets import mask_secrets, without_password

DEFAULT_UI_HOST = "127.0.0.1"
DEFAULT_MLFLOW_PORT = 5000
DEFAULT_TENSORBOARD_PORT = 6006


@dataclass(frozen=True)
class Stores:
    runs_dir: Path
    mlflow_uri: str
    artifact_location: str | None  # only for the embedded store; a server decides its own
    ui_url: str | None  # where `convscope ui` (or the server) shows MLflow runs

    @property
    def layout(self) -> RunsLayout:
        return RunsLayout(self.runs_dir)

    @property
    def tensorboard_root(self) -> Path:
        return self.layout.tensorboard

    def tensorboard_dir(self, experiment: str, run_name: str) -> Path:
        return self.layout.tensorboard_run(experiment, run_name)

    def checkpoint_dir(self, experiment: str, run_name: str) -> Path:
        return self.layout.checkpoint(experiment, run_name)

    @property
    def embedded(self) -> bool:
        return self.artifact_location is not None


def resolve_stores(runs_dir: str | Path, mlflow_uri: str = "", *, check: bool = True) -> Stores:
    """Flag, then ``MLFLOW_TRACKING_URI``, then the embedded sqlite store under ``runs_dir``.

    A given URI goes through ``tracking_uri``: a bare ``postgresql://`` gets the installed
    driver and, with ``check``, the store must answer now (before any run is opened); any
    problem is a one-line ``ConfigError`` naming ``--mlflow-uri`` or ``MLFLOW_TRACKING_URI``.
    """
    root = Path(runs_dir).expanduser().resolve()
    uri = mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri:
        uri = tracking_uri(uri, "--mlflow-uri" if mlflow_uri else "MLFLOW_TRACKING_URI", check=check)
        ui = uri.rstrip("/") if uri.startswith(("http://", "https://")) else None
        return Stores(root, uri, None, ui)
    layout = RunsLayout(root)
    return Stores(root, layout.mlflow_uri, layout.artifacts.as_uri(), ui_address(layout))


def ui_address(layout: RunsLayout) -> str:
    """Where links to runs point: the address a running ``convscope ui`` wrote (``<url> <pid>``, its
    process still there), else the one it serves at by default."""
    default = f"http://{DEFAULT_UI_HOST}:{DEFAULT_MLFLOW_PORT}"
    try:
        url, pid = layout.ui_address.read_text().split()
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return default
    return url if url.startswith(("http://", "https://")) else default


def require_runs(stores: Stores, what: str) -> None:
    """ConfigError naming ``what`` (``--ablate RUN_ID``) when the embedded store does not exist:
    looking a run up there would only create an empty store to find nothing in it."""
    if stores.embedded and not stores.layout.mlflow_db.is_file():
        raise ConfigError(f"{what}: no such run: {stores.runs_dir} holds no MLflow runs; give --runs-dir "
                          "(or --mlflow-uri) where the run was logged")


def open_tracker(
    stores: Stores,
    experiment: str,
    run_name: str,
    *,
    mlflow: bool = True,
    tensorboard: bool = True,
    parent_run_id: str | None = None,
    resume_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    tensorboard_dir: Path | None = None,
    hparams: Mapping[str, Any] | None = None,
) -> Tracker:
    """The sinks asked for, fanned out, behind one background worker.

    The caller owns the returned tracker and must ``close`` it with a status.
    ``tensorboard_dir`` overrides where the TensorBoard run goes (a study puts its
    trials under one folder); ``hparams`` are written through TensorBoard's hparams plugin.
    """
    from convscope.tracking.background import BackgroundTracker
    from convscope.tracking.orphans import process_tags

    sinks: list[Tracker] = []
    if mlflow:
        from convscope.tracking.mlflow_sink import MlflowTracker

        with first_open_lock(stores):
            mlflow_sink = MlflowTracker(
                stores.mlflow_uri,
                experiment,
                run_name,
                artifact_location=stores.artifact_location,
                parent_run_id=parent_run_id,
                run_id=resume_run_id,
                tags={**process_tags(), **(tags or {})},  # whose run it is: closed KILLED if that process dies
                ui_url=stores.ui_url,
            )
        sinks.append(mlflow_sink)
    if tensorboard:
        from convscope.tracking.tensorboard_sink import TensorBoardTracker

        log_dir = tensorboard_dir or stores.tensorboard_dir(experiment, run_name)
        sinks.append(TensorBoardTracker(log_dir, hparams=hparams) if hparams else TensorBoardTracker(log_dir))
    return BackgroundTracker(FanOut(sinks))


@contextmanager
def first_open_lock(stores: Stores) -> Iterator[None]:
    """Serialise opening the embedded MLflow store across processes: two processes creating
    ``mlflow.db`` at once race in MLflow's schema migration. A no-op for a server URI."""
    if not stores.embedded:
        yield
        return
    stores.runs_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (a single process per runs folder is safe anyway)
        yield
        return
    with open(stores.layout.open_lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            create_embedded_store(stores)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


STORE_CREATION_ATTEMPTS = 3
"""How often a new embedded MLflow store is created before its error is shown."""


def create_embedded_store(stores: Stores) -> None:
    """Create the embedded MLflow store (its schema migrations) if it does not exist yet.

    SQLAlchemy 2.1 can fail a migration with ``CircularDependencyError`` now and then (it
    sorts the tables of a flush in an order that varies between runs); the half-built
    database is then removed and created again, up to ``STORE_CREATION_ATTEMPTS`` times.
    Any other error, and an existing store, are left alone. Call it holding ``first_open_lock``."""
    database = stores.layout.mlflow_db
    if not stores.embedded or database.exists():
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    for attempt in range(1, STORE_CREATION_ATTEMPTS + 1):
        try:
            SqlAlchemyStore(stores.mlflow_uri, stores.artifact_location)
            return
        except Exception as error:  # noqa: BLE001 — only the known flaky one is retried
            if type(error).__name__ != "CircularDependencyError" or attempt == STORE_CREATION_ATTEMPTS:
                raise
            engine = SqlAlchemyStore._engine_map.pop(stores.mlflow_uri, None)  # a retry opens the new file
            if engine is not None:
                engine.dispose()
            for leftover in (database, database.with_name(database.name + "-journal")):
                leftover.unlink(missing_ok=True)


CONNECT_TIMEOUT_SECONDS = 5
"""How long a URL check waits for a server before calling it unreachable."""

DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mssql")
"""URL schemes (before any ``+driver``) that MLflow stores through SQLAlchemy."""

_POSTGRES_DRIVERS = (("psycopg2", "postgresql+psycopg2"), ("psycopg", "postgresql+psycopg"))
_TIMEOUT_DRIVERS = ("psycopg2", "psycopg", "pymysql", "mysqldb")  # they take connect_args["connect_timeout"]
_checked_uris: set[str] = set()  # tracking URIs that answered once in this process


def database_url(url: str, flag: str) -> str:
    """``url`` as SQLAlchemy should load it, or ``ConfigError`` naming ``flag``; no I/O.

    A bare ``postgresql://`` or ``postgres://`` gets the PostgreSQL driver that is installed
    (psycopg2, the ``postgres`` extra, else psycopg 3): SQLAlchemy's own default for
    ``postgresql://`` is psycopg 3, which the package does not install. Every other URL is
    returned unchanged. A malformed URL, an unknown scheme, a missing driver or a server URL
    without host and database is a one-line ``ConfigError`` that never shows the password.
    """
    import importlib.util

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = f"{flag} {without_password(url)}"
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError(f"{shown}: not a database URL; give e.g. postgresql://USER@HOST:5432/DATABASE "
                          "or sqlite:///PATH.db") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres") and not driver:
        installed = [name for module, name in _POSTGRES_DRIVERS if importlib.util.find_spec(module) is not None]
        if not installed:
            raise ConfigError(f"{shown}: no PostgreSQL driver is installed; pip install 'convscope[postgres]'")
        parsed = parsed.set(drivername=installed[0])
        backend, _, driver = parsed.drivername.partition("+")
    elif backend == "postgres":
        parsed = parsed.set(drivername=f"postgresql+{driver}")
        backend = "postgresql"
    try:
        dialect = parsed.get_dialect()
        getattr(dialect, "import_dbapi", getattr(dialect, "dbapi", lambda: None))()  # the driver itself
    except NoSuchModuleError:
        raise ConfigError(f"{shown}: unknown database scheme {parsed.drivername!r}; give postgresql://USER@HOST/"
                          "DATABASE, sqlite:///PATH.db (or, for --storage, the path of a journal file)") from None
    except ImportError as error:
        extra = " (pip install 'convscope[postgres]')" if driver == "psycopg2" else ""
        raise ConfigError(f"{shown}: the driver of {parsed.drivername!r} is not installed ({error}); "
                          f"install it{extra} or use postgresql://") from None
    if backend != "sqlite" and not ((parsed.host or parsed.query.get("host")) and parsed.database):
        raise ConfigError(f"{shown}: the URL names no host or no database; give "
                          f"{backend}://USER@HOST[:PORT]/DATABASE")
    return parsed.render_as_string(hide_password=False)


def engine_kwargs(url: str) -> dict[str, Any]:
    """``create_engine`` keywords that make a first connection give up after
    ``CONNECT_TIMEOUT_SECONDS`` instead of hanging on an unreachable server."""
    from sqlalchemy.engine import make_url

    driver = make_url(url).get_driver_name()
    return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_SECONDS}} if driver in _TIMEOUT_DRIVERS else {}


def connection_problem(error: BaseException) -> str:
    """What went wrong connecting to a database and what to do, in one line without secrets."""
    text = str(getattr(error, "orig", None) or error)
    lower = text.lower()
    hints = (
        ("connection refused", "cannot connect (connection refused); start the database or fix host/port"),
        ("timeout expired", f"cannot connect (no answer within {CONNECT_TIMEOUT_SECONDS} s); "
                            "start the database or fix host/port"),
        ("timed out", f"cannot connect (no answer within {CONNECT_TIMEOUT_SECONDS} s); "
                      "start the database or fix host/port"),
        ("could not translate host name", "unknown host; fix the host name"),
        ("name or service not known", "unknown host; fix the host name"),
        ("password authentication failed", "authentication failed; fix the user name or password"),
        ("no password supplied", "the server wants a password; put it in the URL (USER:PASSWORD@HOST)"),
        ("unable to open database file", "cannot open the database file; create its folder or fix the path"),
    )
    for needle, hint in hints:
        if needle in lower:
            return hint
    missing = re.search(r'database "([^"]+)" does not exist', text)
    if missing:
        return f"database {missing.group(1)!r} does not exist; create it (createdb {missing.group(1)}) or fix the name"
    role = re.search(r'role "([^"]+)" does not exist', text)
    if role:
        return f"user {role.group(1)!r} does not exist on the server; fix the user name"
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)
    return f"cannot connect ({mask_secrets(first)})"


def check_database(url: str, flag: str, given: str = "") -> None:
    """Connect to ``url`` once (at most ``CONNECT_TIMEOUT_SECONDS``) or raise a one-line
    ``ConfigError`` naming ``flag`` and quoting ``given`` (what the user wrote; default ``url``)
    without its password. A sqlite URL is only checked for its folder: the check creates no file."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    shown = f"{flag} {without_password(given or url)}"
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            folder = Path(database).expanduser().parent
            if not folder.is_dir():
                raise ConfigError(f"{shown}: folder {folder} does not exist; "
                                  "create it or fix the path")
        return
    engine = create_engine(url, **engine_kwargs(url))
    try:
        with engine.connect():
            pass
    except (SQLAlchemyError, OSError) as error:
        raise ConfigError(f"{shown}: {connection_problem(error)}") from None
    finally:
        engine.dispose()


def tracking_uri(uri: str, flag: str, *, check: bool = True) -> str:
    """The MLflow tracking URI to use for ``uri`` given through ``flag``, checked to answer.

    Database URIs go through ``database_url`` (a bare ``postgresql://`` gets the installed
    driver) and, with ``check``, ``check_database``; an ``http(s)://`` server must answer
    within ``CONNECT_TIMEOUT_SECONDS`` (any HTTP status counts: auth and routing are the
    server's business). A scheme MLflow has no store for is a ``ConfigError``; plain paths and
    other schemes MLflow knows pass unchanged. A URI that answered once is not checked again
    in this process. Every failure is a one-line ``ConfigError`` without the password.
    """
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError as error:
        raise ConfigError(f"{flag} {without_password(uri)}: not a well-formed URL ({error}); give http://HOST:PORT, "
                          "postgresql://USER@HOST/DATABASE or sqlite:///PATH.db") from None
    scheme = parts.scheme.lower() if "://" in uri else ""
    if scheme.partition("+")[0] in DATABASE_SCHEMES:
        given, uri = uri, database_url(uri, flag)
        if check and uri not in _checked_uris:
            check_database(uri, flag, given)
            _checked_uris.add(uri)
    elif scheme in ("http", "https"):
        if check and uri not in _checked_uris:
            _check_server(uri, flag)
            _checked_uris.add(uri)
    elif scheme and scheme not in _mlflow_schemes():
        raise ConfigError(f"{flag} {without_password(uri)}: MLflow has no store for scheme {scheme!r}; give "
                          "http://HOST:PORT (a tracking server), postgresql://USER@HOST/DATABASE or sqlite:///PATH.db")
    return uri


def _check_credentials(bare: str, parts: Any, flag: str, uri: str) -> None:
    """ConfigError when the server refuses the credentials MLflow would send (401/403 on a read)."""
    import os

    username = parts.username or os.environ.get("MLFLOW_TRACKING_USERNAME", "")
    password = parts.password or os.environ.get("MLFLOW_TRACKING_PASSWORD", "")
    from convscope.tracking.http_probe import probe

    status, _ = probe(bare.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1", CONNECT_TIMEOUT_SECONDS,
                      auth=(username, password) if username else None)
    if status in (401, 403):
        given = "the credentials given were refused" if username else "no credentials were given"
        raise ConfigError(f"{flag} {without_password(uri)}: the server asks for a user name and password (HTTP "
                          f"{status}: {given}); set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")


def _check_server(uri: str, flag: str) -> None:
    from urllib.parse import urlsplit, urlunsplit

    from convscope.tracking.http_probe import probe, reason

    parts = urlsplit(uri)
    bare = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))  # urllib takes no user-info
    status, error = probe(bare.rstrip("/") + "/health", CONNECT_TIMEOUT_SECONDS)
    if status is not None or error is None:
        _check_credentials(bare, parts, flag, uri)
        return  # it answered
    cause = reason(error)
    problem = connection_problem(cause if isinstance(cause, BaseException) else error)
    problem = problem.replace("start the database", "start the MLflow server (convscope serve mlflow)")
    raise ConfigError(f"{flag} {without_password(uri)}: {problem}") from None


def _mlflow_schemes() -> set[str]:
    """The URI schemes MLflow has a tracking store for, plugins included (read from the
    ``mlflow.tracking_store`` entry points, so MLflow itself need not be imported)."""
    from importlib.metadata import entry_points

    known = {"file", "databricks", "databricks-uc", "uc", "http", "https", *DATABASE_SCHEMES}
    known.update(point.name for point in entry_points(group="mlflow.tracking_store"))
    return known
