"""``convscope serve``'s command lines and health checks, GPU round-robin, masked storage URLs,
and ``convscope search --init-only`` / ``--check`` (no server is exec'd, no training runs)."""

from __future__ import annotations

import configparser
import http.server
import importlib.util
import os
import stat
import tempfile
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

import convscope.cli.main

from convscope import cli
from convscope.cli.serve_cmd import HEALTH_PATHS, health_url
from convscope.cli.env_flags import PREFIX
from convscope.search.storage import display_url, resolve_storage
from convscope.search.defaults import default_jobs
from convscope.train.config import build_config
from convscope.search.workers import worker_devices
from convscope.servers.servers import TENSORBOARD_IMAGE_SAMPLES, free_port

ExecCall = tuple[str, list[str], dict[str, str]]
SERVER_ENV = ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION", "MLFLOW_AUTH_ADMIN_USERNAME",
              "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_CONFIG_PATH",
              "MLFLOW_TRACKING_URI")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``CONVSCOPE_*`` setting (but the PostgreSQL test URL) or server variable leaks in from outside."""
    for name in list(os.environ):
        if name.startswith(PREFIX) and name != "CONVSCOPE_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    for name in SERVER_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def exec_calls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[ExecCall]:
    """Every ``os.execvpe`` call, recorded instead of replacing the test process; the config
    files ``serve`` writes go to a ``tmp_path`` sub-folder."""
    calls: list[ExecCall] = []
    monkeypatch.setattr(os, "execvpe", lambda file, args, env: calls.append((file, list(args), dict(env))))
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    return calls


@pytest.fixture(autouse=True)
def free_default_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve``'s port, unless a test sets its own: a free one, not the default a developer's own
    ``convscope ui`` or server may hold (serve refuses a port in use)."""
    monkeypatch.setenv("CONVSCOPE_PORT", str(free_port()))


@pytest.fixture
def mlflow_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """What docker-compose gives the mlflow service (sqlite instead of PostgreSQL)."""
    env = {"MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"),
           "MLFLOW_AUTH_ADMIN_USERNAME": "admin", "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-pw-Zq9",
           "MLFLOW_FLASK_SERVER_SECRET_KEY": "form-key-Xy7"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def serve(exec_calls: list[ExecCall], *argv: str) -> tuple[list[str], dict[str, str]]:
    """``convscope serve ARGV``'s one exec: (argv, environment)."""
    cli.main.main(["serve", *argv])  # returns only because the fake exec does
    assert len(exec_calls) == 1, exec_calls
    file, args, env = exec_calls[0]
    assert file == args[0]
    return args, env


def after(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_mlflow_command_from_the_environment(
    exec_calls: list[ExecCall], mlflow_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("CONVSCOPE_HOST", "0.0.0.0")
    monkeypatch.setenv("CONVSCOPE_PORT", "5123")
    cmd, env = serve(exec_calls, "mlflow")
    assert "server" in cmd and "--serve-artifacts" in cmd and "--app-name" not in cmd
    assert "--backend-store-uri" not in cmd, "the database URL (with its password) stays out of ps"
    assert not any(mlflow_env["MLFLOW_BACKEND_STORE_URI"] in part for part in cmd)
    assert after(cmd, "--artifacts-destination") == mlflow_env["MLFLOW_ARTIFACTS_DESTINATION"]
    assert (after(cmd, "--host"), after(cmd, "--port")) == ("0.0.0.0", "5123")
    assert env["MLFLOW_BACKEND_STORE_URI"] == mlflow_env["MLFLOW_BACKEND_STORE_URI"]
    assert "MLFLOW_AUTH_CONFIG_PATH" not in env
    assert "http://0.0.0.0:5123" in capsys.readouterr().out


@pytest.mark.parametrize("how", ["flag", "env"])
def test_mlflow_auth_writes_a_private_config_without_the_password(
    how: str, exec_calls: list[ExecCall], mlflow_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    auth_db = "postgresql+psycopg2://convscope@db:5432/mlflow_auth"
    if how == "env":
        monkeypatch.setenv("CONVSCOPE_AUTH", "true")
        monkeypatch.setenv("CONVSCOPE_AUTH_DATABASE_URI", auth_db)
        cmd, env = serve(exec_calls, "mlflow")
    else:
        cmd, env = serve(exec_calls, "mlflow", "--auth", "--auth-database-uri", auth_db)
    assert after(cmd, "--app-name") == "basic-auth"
    config_path = Path(env["MLFLOW_AUTH_CONFIG_PATH"])
    assert config_path.parent == Path(tempfile.tempdir or "")
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o600
    text = config_path.read_text()
    assert mlflow_env["MLFLOW_AUTH_ADMIN_PASSWORD"] not in text and "password" not in text
    config = configparser.ConfigParser()
    config.read(config_path)
    assert config["mlflow"]["database_uri"] == auth_db
    assert config["mlflow"]["default_permission"] == "READ"
    for secret in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert env[secret] == mlflow_env[secret]  # MLflow reads them from its environment
        assert not any(mlflow_env[secret] in arg for arg in cmd) and mlflow_env[secret] not in text


def test_mlflow_auth_database_defaults_to_sqlite_beside_local_artifacts(
    exec_calls: list[ExecCall], mlflow_env: dict[str, str], tmp_path: Path
) -> None:
    _, env = serve(exec_calls, "mlflow", "--auth")
    config = configparser.ConfigParser()
    config.read(env["MLFLOW_AUTH_CONFIG_PATH"])
    assert config["mlflow"]["database_uri"] == f"sqlite:///{tmp_path.resolve() / 'basic_auth.db'}"
    assert (tmp_path / "artifacts").is_dir()


@pytest.mark.parametrize(
    "missing", ["MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"]
)
def test_mlflow_auth_without_its_secrets_exits_2(
    missing: str, exec_calls: list[ExecCall], mlflow_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv(missing)
    assert cli.main.main(["serve", "mlflow", "--auth"]) == 2
    assert missing in capsys.readouterr().err and exec_calls == []
    _, env = serve(exec_calls, "mlflow", "--no-auth")  # without auth the account is not needed
    assert "MLFLOW_AUTH_CONFIG_PATH" not in env


def test_mlflow_auth_without_the_auth_extra_exits_2(
    exec_calls: list[ExecCall], mlflow_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "flask_wtf" else find_spec(name, *args))
    assert cli.main.main(["serve", "mlflow", "--auth"]) == 2
    assert "mlflow[auth]" in capsys.readouterr().err and exec_calls == []


@pytest.mark.parametrize(
    ("unset", "extra_env", "argv", "named"),
    [("MLFLOW_BACKEND_STORE_URI", {}, [], "MLFLOW_BACKEND_STORE_URI"),
     ("MLFLOW_ARTIFACTS_DESTINATION", {}, [], "MLFLOW_ARTIFACTS_DESTINATION"),
     (None, {"MLFLOW_BACKEND_STORE_URI": "  "}, [], "MLFLOW_BACKEND_STORE_URI"),
     (None, {"MLFLOW_ARTIFACTS_DESTINATION": "s3://bucket/artifacts"}, ["--auth"], "--auth-database-uri")],
    ids=["no-backend", "no-artifacts", "blank-backend", "remote-artifacts-need-auth-db"],
)
def test_mlflow_configuration_errors_exit_2(
    unset: str | None, extra_env: dict[str, str], argv: list[str], named: str, exec_calls: list[ExecCall],
    mlflow_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    if unset:
        monkeypatch.delenv(unset)
    for name, value in extra_env.items():
        monkeypatch.setenv(name, value)
    assert cli.main.main(["serve", "mlflow", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("convscope serve: error:") and named in err
    assert exec_calls == []


def test_tensorboard_command(exec_calls: list[ExecCall], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONVSCOPE_LOGDIR", str(tmp_path / "tb"))
    monkeypatch.setenv("CONVSCOPE_PORT", "6123")
    cmd, _ = serve(exec_calls, "tensorboard", "--host", "0.0.0.0")
    assert Path(cmd[0]).name == "tensorboard" or "tensorboard" in cmd[:3]
    assert after(cmd, "--samples_per_plugin") == f"images={TENSORBOARD_IMAGE_SAMPLES}"
    assert after(cmd, "--logdir") == str(tmp_path / "tb")
    assert (after(cmd, "--host"), after(cmd, "--port")) == ("0.0.0.0", "6123")
    exec_calls.clear()
    assert after(serve(exec_calls, "tensorboard", "--logdir", "other")[0], "--logdir") == "other"


def test_optuna_dashboard_reads_the_storage_from_a_private_file(
    exec_calls: list[ExecCall], monkeypatch: pytest.MonkeyPatch
) -> None:
    password = 'pa"ss\\word#1'
    storage = f"postgresql+psycopg2://convscope:{password}@postgres:5432/optuna"
    monkeypatch.setenv("CONVSCOPE_STORAGE", storage)
    checked: list[str] = []  # the stack's host "postgres" exists only inside compose: record the check instead
    monkeypatch.setattr("convscope.tracking.stores.check_database", lambda url, flag, given="": checked.append(flag))
    cmd, env = serve(exec_calls, "optuna-dashboard", "--port", "8123")
    assert checked == ["CONVSCOPE_STORAGE"]
    config_path = Path(after(cmd, "--from-config"))
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o600
    with config_path.open("rb") as config:
        assert tomllib.load(config)["optuna_dashboard"]["storage"] == storage
    assert not any("pa\"ss" in arg or storage in arg for arg in cmd)
    assert (after(cmd, "--host"), after(cmd, "--port")) == ("127.0.0.1", "8123")
    assert "postgresql" not in " ".join(cmd)


def test_optuna_dashboard_without_storage_exits_2(
    exec_calls: list[ExecCall], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main.main(["serve", "optuna-dashboard"]) == 2
    assert "CONVSCOPE_STORAGE" in capsys.readouterr().err and exec_calls == []


def test_health_url() -> None:
    assert health_url("mlflow", "0.0.0.0", 5000) == "http://127.0.0.1:5000/health"
    assert health_url("mlflow", "::", 5000) == "http://127.0.0.1:5000/health"
    assert health_url("tensorboard", "tb.example", 6006) == "http://tb.example:6006/data/environment"
    assert health_url("optuna-dashboard", "10.0.0.2", 8080) == "http://10.0.0.2:8080/api/studies"


@pytest.fixture
def health_server() -> Iterator[tuple[int, dict[str, int]]]:
    """A local HTTP server on 127.0.0.1: (its port, path → status); any other path is 404."""
    statuses: dict[str, int] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            code = statuses.get(self.path, 404)
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], statuses
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize("service", sorted(HEALTH_PATHS))
def test_check_against_a_local_server(
    service: str, health_server: tuple[int, dict[str, int]], exec_calls: list[ExecCall],
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    port, statuses = health_server
    monkeypatch.setenv("CONVSCOPE_PORT", str(port))
    assert cli.main.main(["serve", service, "--check"]) == 1  # its health path answers 404
    assert "unhealthy: HTTP 404" in capsys.readouterr().err
    statuses[HEALTH_PATHS[service]] = 200
    assert cli.main.main(["serve", service, "--check", "--host", "0.0.0.0"]) == 0  # checked on loopback
    statuses[HEALTH_PATHS[service]] = 500
    assert cli.main.main(["serve", service, "--check"]) == 1
    assert "HTTP 500" in capsys.readouterr().err
    assert exec_calls == []


def test_check_with_nothing_listening(exec_calls: list[ExecCall], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main.main(["serve", "mlflow", "--check", "--port", str(free_port())]) == 1
    assert "convscope serve mlflow: unhealthy:" in capsys.readouterr().err
    assert exec_calls == []


@pytest.mark.parametrize(
    ("device", "jobs", "gpus", "expected"),
    [("auto", 3, 0, [None, None, None]),
     ("auto", 2, 1, [None, None]),
     ("cuda", 2, 2, ["cuda:0", "cuda:1"]),
     ("auto", 4, 2, ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]),
     ("auto", 5, 3, ["cuda:0", "cuda:1", "cuda:2", "cuda:0", "cuda:1"]),
     ("cpu", 2, 2, [None, None]),
     ("cuda:1", 2, 2, [None, None])],
)
def test_worker_devices(device: str, jobs: int, gpus: int, expected: list[str | None]) -> None:
    assert worker_devices(device, jobs, gpus) == expected


@pytest.mark.parametrize(("device", "gpus", "expected"),
                         [("auto", 8, 8), ("cuda", 2, 2), ("auto", 1, 1), ("cuda:1", 4, 1), ("cpu", 4, 1)])
def test_a_study_uses_every_visible_gpu_unless_told_otherwise(device: str, gpus: int, expected: int) -> None:
    assert default_jobs(build_config("tiny", {"optim": {"device": device}}), gpus) == expected


def test_storage_urls_are_displayed_without_password(tmp_path: Path) -> None:
    shown = display_url("postgresql+psycopg2://u:secret@h:5432/db")
    assert "secret" not in shown and "h:5432" in shown and shown.endswith("/db") and "u:" in shown
    assert "p%40ss" not in display_url("postgresql://u:p%40ss@h/db")
    assert display_url("postgresql://u@h/db") == "postgresql://u@h/db"
    rdb = resolve_storage(tmp_path, "postgresql+psycopg2://u:secret@h:5432/db")
    assert rdb.kind == "rdb" and "secret" not in rdb.display and "secret" in rdb.url
    journal = resolve_storage(tmp_path)
    assert journal.display == journal.url == str((tmp_path / "optuna" / "journal.log").resolve())


def test_search_init_only_then_check(
    tmp_path: Path, health_server: tuple[int, dict[str, int]], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    flags = ["search", "--runs-dir", str(tmp_path), "--study-name", "s"]
    assert cli.main.main([*flags, "--check"]) == 1  # no journal yet
    assert "unhealthy" in capsys.readouterr().err
    assert cli.main.main([*flags, "--init-only"]) == 0
    assert "study 's' ready" in capsys.readouterr().out
    assert (tmp_path / "optuna" / "journal.log").is_file()
    assert cli.main.main([*flags, "--init-only"]) == 0  # a second worker's init loads it
    assert cli.main.main([*flags, "--check"]) == 0
    assert capsys.readouterr().err == ""
    assert cli.main.main([*flags, "--check", "--study-name", "other"]) == 1
    err = capsys.readouterr().err
    assert "convscope search: unhealthy:" in err and "'other'" in err
    monkeypatch.setenv("CONVSCOPE_RUNS_DIR", str(tmp_path))  # the worker's health check in the stack
    monkeypatch.setenv("CONVSCOPE_STUDY_NAME", "s")
    port, statuses = health_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    assert cli.main.main(["search", "--check"]) == 1  # MLflow's /health answers 404
    assert f"MLflow http://127.0.0.1:{port}" in capsys.readouterr().err
    statuses["/health"] = 200
    assert cli.main.main(["search", "--check"]) == 0
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}/")
    assert cli.main.main(["search", "--check"]) == 1
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")  # embedded: not checked
    assert cli.main.main(["search", "--check"]) == 0


def test_check_finds_the_runs_folder_of_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--init-only`` and ``--check`` agree on where the study lives when ``--config`` says it."""
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "study.yaml"
    config.write_text(f"tracking:\n  runs_dir: {tmp_path / 'elsewhere'}\n")
    flags = ["search", "--config", str(config), "--study-name", "s"]
    assert cli.main.main([*flags, "--init-only"]) == 0
    assert (tmp_path / "elsewhere" / "optuna" / "journal.log").is_file()
    assert cli.main.main([*flags, "--check"]) == 0


def test_auth_database_uri_with_percent_escapes_reads_back_in_mlflow(
    exec_calls: list[ExecCall], mlflow_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A URL-encoded password (``%40``) must survive MLflow's configparser-based reader."""
    from mlflow.server.auth.config import read_auth_config

    auth_db = "postgresql+psycopg2://convscope:p%40ss@db:5432/mlflow_auth"
    _, env = serve(exec_calls, "mlflow", "--auth", "--auth-database-uri", auth_db)
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", env["MLFLOW_AUTH_CONFIG_PATH"])
    assert read_auth_config().database_uri == auth_db
    assert cli.main.main(["serve", "mlflow", "--auth", "--auth-database-uri", "sqlite:///a\nadmin_password = x"]) == 2


def test_a_port_already_listened_on_is_one_line_at_once(tmp_path: Path) -> None:
    """``convscope ui`` and ``serve`` check their ports before starting anything: a port another
    server listens on is named at once (not 20 s later in a log)."""
    import socket

    from e2e_helpers import convscope

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        (tmp_path / "runs").mkdir()
        for argv, flag in ((["ui", "--runs-dir", str(tmp_path / "runs"), "--mlflow-port", port], "--mlflow-port"),
                           (["serve", "tensorboard", "--logdir", str(tmp_path), "--port", port], "--port")):
            done = convscope(*argv)
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            assert done.returncode == 2 and len(lines) == 1, done.stderr
            assert f"{flag} {port}: already in use" in lines[0]
