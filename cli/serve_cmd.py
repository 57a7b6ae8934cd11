"""``convscope serve``: one tracking or dashboard server in the foreground, configured from the environment.

This is what each long-running service of docker-compose.yml runs, and what the
process-level stack tests run; outside Docker it starts the same server on any host.
The command line is built by ``servers.servers`` (shared with ``convscope ui``) and
the server replaces this process (``exec``), so a container's stop signal reaches it.

``--check`` is the matching health check: one HTTP request to the server's health
endpoint on the same host and port; exit 0 when it answers 200, else 1.

Secrets are only read from the environment, never from flags: MLflow's own
``MLFLOW_BACKEND_STORE_URI``, ``MLFLOW_AUTH_ADMIN_USERNAME`` / ``MLFLOW_AUTH_ADMIN_PASSWORD``
and ``MLFLOW_FLASK_SERVER_SECRET_KEY``,
and ``CONVSCOPE_STORAGE`` for optuna-dashboard (written to a private config file
rather than onto its command line). Such a config file lives as long as the server:
a small watcher process removes it once the server exits (and it is removed at once
when the server cannot be started). Every flag can also be set as ``CONVSCOPE_<FLAG>``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from convscope.train.errors import ConfigError
from convscope.tracking.http_probe import probe, reason

DEFAULT_PORTS = {"mlflow": 5000, "tensorboard": 6006, "optuna-dashboard": 8080}
HEALTH_PATHS = {"mlflow": "/health", "tensorboard": "/data/environment", "optuna-dashboard": "/api/studies"}
DEFAULT_MLFLOW_WORKERS = 2  # a few study workers uploading at once; MLflow's own default is 4
AUTH_DEFAULT_PERMISSION = "READ"  # what a signed-in user without an explicit grant may do


def add_serve_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the MLflow server, TensorBoard or optuna-dashboard of a multi-machine stack",
        description="Run one server of the multi-machine stack in the foreground, configured from the "
        "environment: what the services of docker-compose.yml run, and the same server on any host "
        "without Docker. `convscope serve SERVICE --check` is its health check.",
    )
    services = parser.add_subparsers(dest="service", metavar="SERVICE", required=True)
    mlflow = _service(services, "mlflow", "MLflow tracking server with proxied artifacts "
                      "(MLFLOW_BACKEND_STORE_URI, MLFLOW_ARTIFACTS_DESTINATION)")
    mlflow.add_argument("--auth", action=argparse.BooleanOptionalAction, default=False,
                        help="MLflow's basic-auth app: sign-in required; the admin account comes from "
                        "MLFLOW_AUTH_ADMIN_USERNAME and MLFLOW_AUTH_ADMIN_PASSWORD (default: off)")
    mlflow.add_argument("--auth-database-uri", default="",
                        help="where basic-auth keeps users and permissions (default: sqlite beside the artifacts)")
    mlflow.add_argument("--workers", type=int, default=DEFAULT_MLFLOW_WORKERS,
                        help="web worker processes: more serve more workers' uploads at once, each ~150 MB "
                        f"(default: {DEFAULT_MLFLOW_WORKERS}). MLflow's server-side job execution stays off "
                        "unless MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true")
    tensorboard = _service(services, "tensorboard", "TensorBoard keeping every logged image step")
    tensorboard.add_argument("--logdir", default="runs/tensorboard", help="event folder (default: runs/tensorboard)")
    _service(services, "optuna-dashboard", "optuna-dashboard on the study storage (CONVSCOPE_STORAGE)")
    parser.set_defaults(handler=handle_serve)


def _service(services: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    parser = services.add_parser(name, help=help_text, description=help_text + ". Every flag can also be "
                                 "set as CONVSCOPE_<FLAG>, e.g. CONVSCOPE_PORT.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORTS[name], help=f"default: {DEFAULT_PORTS[name]}")
    parser.add_argument("--check", action="store_true",
                        help="do not start: exit 0 if the server on --host/--port is healthy, else 1")
    return parser


def health_url(service: str, host: str, port: int) -> str:
    """The URL a health check asks; a wildcard listen address is checked on loopback."""
    reachable = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    if ":" in reachable:
        reachable = f"[{reachable}]"  # IPv6 literal
    return f"http://{reachable}:{port}{HEALTH_PATHS[service]}"


def check(url: str, timeout: float = 5.0) -> tuple[bool, str]:
    """Whether ``url`` answers 200, and what it answered (``HTTP 503``) or why nothing did."""
    status, error = probe(url, timeout)
    if status is None:
        return False, str(reason(error)) if error is not None else "no answer"
    return status == 200, f"HTTP {status}"


def _required(environ: Mapping[str, str], name: str, what: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is not set: set it to {what}")
    return value


def mlflow_command(
    args: argparse.Namespace, environ: Mapping[str, str], temp_files: list[Path] | None = None
) -> tuple[list[str], dict[str, str]]:
    """The MLflow server's command line and the environment additions it needs; a private
    config file it writes is appended to ``temp_files`` (the caller removes it)."""
    from convscope.servers.servers import mlflow_server_command

    from convscope.tracking.stores import tracking_uri

    backend = _required(environ, "MLFLOW_BACKEND_STORE_URI", "the tracking database, e.g. postgresql+psycopg2://…")
    artifacts = _required(environ, "MLFLOW_ARTIFACTS_DESTINATION", "the folder or URI proxied artifacts go to")
    extra_env: dict[str, str] = {}
    resolved = tracking_uri(backend, "MLFLOW_BACKEND_STORE_URI")  # parsed, its driver added, and it answers
    if _scheme(resolved) != _scheme(backend):  # a bare postgresql:// gets the installed driver
        extra_env["MLFLOW_BACKEND_STORE_URI"] = resolved
    app_name = None
    if args.auth:
        import importlib.util

        if importlib.util.find_spec("flask_wtf") is None:
            raise ConfigError("--auth needs MLflow's auth extra: pip install 'mlflow[auth]'")
        for name in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"):
            _required(environ, name, "the admin account of MLflow's basic-auth app (--auth)")
        _required(environ, "MLFLOW_FLASK_SERVER_SECRET_KEY",
                  "a long random string that signs sign-in forms (--auth; the same on every server)")
        from convscope.tracking.stores import database_url

        if "\n" in args.auth_database_uri or "\r" in args.auth_database_uri:
            raise ConfigError("--auth-database-uri must be one line")
        auth_db = database_url(args.auth_database_uri or _beside(artifacts, "basic_auth.db"), "--auth-database-uri")
        auth_config = write_auth_config(auth_db)
        if temp_files is not None:
            temp_files.append(auth_config)
        extra_env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_config)
        app_name = "basic-auth"
    del backend  # MLflow reads MLFLOW_BACKEND_STORE_URI itself: its password stays off the command line
    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1 (got {args.workers})")
    return mlflow_server_command(None, args.host, args.port, artifacts_destination=artifacts,
                                 app_name=app_name, workers=args.workers), extra_env


def _beside(artifacts: str, filename: str) -> str:
    if "://" in artifacts and not artifacts.startswith("file://"):
        raise ConfigError("--auth-database-uri is needed when MLFLOW_ARTIFACTS_DESTINATION is not a local folder")
    folder = Path(artifacts.removeprefix("file://")).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder.parent / filename}"


def write_auth_config(database_uri: str) -> Path:
    """A private basic-auth config (MLFLOW_AUTH_CONFIG_PATH). It holds no password: MLflow
    reads the admin account from MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD."""
    if "\n" in database_uri or "\r" in database_uri:
        raise ConfigError("--auth-database-uri must be one line")
    handle, path = tempfile.mkstemp(prefix="convscope-mlflow-auth-", suffix=".ini")
    with os.fdopen(handle, "w") as config:
        config.write(
            "[mlflow]\n"
            f"default_permission = {AUTH_DEFAULT_PERMISSION}\n"
            f"database_uri = {database_uri.replace('%', '%%')}\n"  # configparser interpolates %
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
    return Path(path)


def dashboard_command(
    args: argparse.Namespace, environ: Mapping[str, str], temp_files: list[Path] | None = None
) -> list[str]:
    """optuna-dashboard's command line; the private config file holding the storage URL (with
    its password) is appended to ``temp_files`` (the caller removes it)."""
    from convscope.servers.servers import optuna_dashboard_command

    storage = _required(environ, "CONVSCOPE_STORAGE", "the study storage URL (postgresql+psycopg2://…)")
    storage = _checked_storage(storage)
    handle, path = tempfile.mkstemp(prefix="convscope-dashboard-", suffix=".toml")  # mode 0600
    if temp_files is not None:
        temp_files.append(Path(path))
    with os.fdopen(handle, "w") as config:
        config.write(f"[optuna_dashboard]\nstorage = {json.dumps(storage, ensure_ascii=False)}\n")
    return optuna_dashboard_command(None, args.host, args.port, config_file=path)


def _checked_storage(storage: str) -> str:
    """The study storage optuna-dashboard opens: a database URL (its driver added) that answers,
    or a journal file in an existing folder; ConfigError naming CONVSCOPE_STORAGE otherwise."""
    from convscope.tracking.stores import check_database, database_url

    if "://" not in storage:
        folder = Path(storage).expanduser().parent
        if not folder.is_dir():
            raise ConfigError(f"CONVSCOPE_STORAGE {storage}: folder {folder} does not exist; give the journal "
                              "file of a study (convscope search writes one) or a database URL")
        return storage
    url = database_url(storage, "CONVSCOPE_STORAGE")
    check_database(url, "CONVSCOPE_STORAGE", storage)
    return storage if _scheme(url) == _scheme(storage) else url  # only a bare postgresql:// is rewritten


def _scheme(url: str) -> str:
    return url.split("://", 1)[0]


def check_port(port: int, flag: str = "--port") -> int:
    """``port`` if it is a TCP port a server can listen on, else ConfigError naming ``flag``."""
    if not 1 <= port <= 65535:
        raise ConfigError(f"{flag} must be between 1 and 65535 (got {port})")
    return port


def check_port_free(host: str, port: int, flag: str = "--port") -> None:
    """ConfigError naming ``flag`` when a server already listens on ``port`` at ``host``: said at
    once, instead of the server failing in its log a while later."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: only a listener counts
        try:
            probe.bind((host or "0.0.0.0", port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise ConfigError(f"{flag} {port}: already in use on {host or '0.0.0.0'} (another server?); "
                                  f"choose another with {flag}") from None


def check_host(host: str, flag: str = "--host") -> str:
    """``host`` if a server can listen on it (an address of this machine, or every address), else
    ConfigError naming ``flag``."""
    import socket

    try:
        infos = socket.getaddrinfo(host or None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as error:
        raise ConfigError(f"{flag} {host}: not an address or a name this machine resolves ({error}); give "
                          "127.0.0.1, 0.0.0.0 (every address) or one of this machine's addresses") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        try:
            probe.bind((address[0], 0))
        except OSError as error:
            raise ConfigError(f"{flag} {host}: not an address of this machine ({error.strerror}); give 127.0.0.1, "
                              "0.0.0.0 (every address) or one of this machine's addresses") from None
    return host


def handle_serve(args: argparse.Namespace) -> int:
    from convscope.servers.servers import server_environment, tensorboard_command

    check_port(args.port)
    if not args.check:
        check_host(args.host)
        check_port_free(args.host, args.port)
    if args.check:
        healthy, detail = check(health_url(args.service, args.host, args.port))
        if not healthy:
            print(f"convscope serve {args.service}: unhealthy: {detail}", file=sys.stderr)
        return 0 if healthy else 1
    environ = server_environment()
    temp_files: list[Path] = []
    try:
        if args.service == "mlflow":
            cmd, extra_env = mlflow_command(args, environ, temp_files)
            environ.update(extra_env)
        elif args.service == "tensorboard":
            logdir = Path(args.logdir).expanduser()
            if logdir.exists() and not logdir.is_dir():
                raise ConfigError(f"--logdir {args.logdir}: not a folder; give the folder of the event files")
            if not logdir.exists():  # a runs folder before its first run: its tensorboard/ folder is made
                if not logdir.parent.is_dir():
                    raise ConfigError(f"--logdir {args.logdir}: no such folder (nor {logdir.parent}); give the folder "
                                      "of the event files, e.g. runs/tensorboard")
                logdir.mkdir()
            cmd = tensorboard_command(args.logdir, args.host, args.port)
        else:
            cmd = dashboard_command(args, environ, temp_files)
        print(f"convscope serve {args.service}: http://{args.host}:{args.port}", flush=True)
        if temp_files:
            remove_after_exit(os.getpid(), temp_files)
        os.execvpe(cmd[0], cmd, environ)
    except BaseException:  # no server started: its config files go now
        _remove(temp_files)
        raise
    return 1  # not reached: exec replaced this process


_WATCHER = """
import os, signal, sys, time
def stop(signum, frame):
    raise SystemExit(0)
for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(signum, stop)
try:
    while os.getppid() == int(sys.argv[1]):
        time.sleep(0.5)
finally:
    for path in sys.argv[2:]:
        try:
            os.unlink(path)
        except OSError:
            pass
"""


def remove_after_exit(pid: int, paths: list[Path]) -> None:
    """Start a watcher that removes ``paths`` once process ``pid`` (this process, about to
    become the server through ``exec``) has exited, however it ends: a server reads its
    config file at start and again in every worker it spawns, so the file must outlive
    the ``exec`` but not the server. The watcher runs in a session of its own with no
    terminal or pipes of ours, polls every half second and also cleans up when it is
    signalled itself; only a SIGKILL of the watcher leaves the files behind."""
    import subprocess

    subprocess.Popen(
        [sys.executable, "-c", _WATCHER, str(pid), *map(str, paths)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, close_fds=True,
    )


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
