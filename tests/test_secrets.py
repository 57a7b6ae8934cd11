"""No password reaches the console, a runs folder, MLflow or TensorBoard.

A unique password is planted in the MLflow tracking URI (and the study storage) of real
runs against PostgreSQL (trust auth accepts any password), then every place a run writes
is searched for it: stdout, stderr, every file under the runs folder and the artifact
folder (TensorBoard event files and checkpoints as bytes), every MLflow param and tag of
every run, every artifact. Also: the masking function itself, the resumed run that gets
its real URI again, and ``convscope serve``'s private config files, removed once unused.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from postgres_db import databases, needs_postgres
from convscope.servers.servers import free_port
from convscope.tracking.secrets import SECRET_MASK, has_masked_secret, mask_secrets, without_password

REPO = Path(__file__).resolve().parents[1]
TINY = ["--preset", "tiny", "--image-size", "32"]


# -- the masking function ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("postgresql+psycopg2://postgres:pw-1@127.0.0.1:5432/db", "postgresql+psycopg2://postgres:***@127.0.0.1:5432/db"),
        ("postgresql://u:p%40ss@h/db", "postgresql://u:***@h/db"),
        ("https://alice:tok3n@mlflow.example.org/", "https://alice:***@mlflow.example.org/"),
        ("mysql://u:p@ss@h/db", "mysql://u:***@h/db"),  # an unencoded @: the whole password goes
        ("postgresql://u@h/db?sslmode=require&sslpassword=k3y", "postgresql://u@h/db?sslmode=require&sslpassword=***"),
        ("http://h:5000/?password=a&x=1&api_token=b", "http://h:5000/?password=***&x=1&api_token=***"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("http://127.0.0.1:5000/#/experiments/1/runs/abc", "http://127.0.0.1:5000/#/experiments/1/runs/abc"),
        ("http://h:5000/users/a@b.org", "http://h:5000/users/a@b.org"),  # an @ in the path is no password
        ("sqlite:////tmp/runs/mlflow.db", "sqlite:////tmp/runs/mlflow.db"),
        ("postgresql://u:@h/db", "postgresql://u:@h/db"),  # an empty password: nothing to hide
    ],
)
def test_mask_secrets_masks_passwords_only(text: str, masked: str) -> None:
    assert mask_secrets(text) == masked
    assert mask_secrets(masked) == masked  # idempotent
    assert without_password(text) == masked


def test_mask_secrets_masks_every_url_in_a_text() -> None:
    line = ('run r: mlflow_tracking_uri postgresql://a:first@h/db, storage {"url": "mysql://b:second@h2/o"}\n'
            "| tracking.mlflow_uri | https://c:third@server/ |")
    masked = mask_secrets(line)
    for secret in ("first", "second", "third"):
        assert secret not in masked
    assert masked.count(SECRET_MASK) == 3
    assert "postgresql://a:***@h/db," in masked and '"mysql://b:***@h2/o"' in masked


def test_has_masked_secret_tells_a_masked_url_from_a_plain_one() -> None:
    assert has_masked_secret(mask_secrets("postgresql://u:pw@h/db"))
    assert has_masked_secret(mask_secrets("postgresql://u@h/db?password=pw"))
    assert not has_masked_secret("postgresql://u:pw@h/db")
    assert not has_masked_secret("postgresql://u@h/db")
    assert not has_masked_secret("")


def test_hparams_and_tensorboard_text_never_hold_a_password(tmp_path: Path) -> None:
    from convscope.tracking.hparams import session_start_summary
    from convscope.tracking.tensorboard_sink import TensorBoardTracker

    secret = f"S3cr3tPw-{uuid.uuid4().hex[:8]}"
    uri = f"postgresql://u:{secret}@h/db"
    assert secret not in str(session_start_summary({"uri": uri, "pair": (uri, 1)}))
    tracker = TensorBoardTracker(tmp_path / "tb", hparams={"uri": uri, "depth": 3})
    tracker.log_params({"uri": uri})
    tracker.log_config({"tracking": {"mlflow_uri": uri}})
    tracker.set_tags({"store": uri})
    tracker.close()
    events = b"".join(path.read_bytes() for path in (tmp_path / "tb").rglob("*") if path.is_file())
    assert b"u:***@h/db" in events  # the values were written, masked
    assert secret.encode() not in events


def test_resume_takes_a_masked_uri_from_the_environment_or_asks_for_it() -> None:
    import dataclasses

    from convscope.train.checkpoint import resume_tracking
    from convscope.train.config import build_config
    from convscope.train.errors import ConfigError

    saved = build_config("tiny", {"tracking": {"mlflow_uri": "postgresql://u:***@h/db"}})
    real = "postgresql://u:pw@h/db"
    assert resume_tracking(saved, {"MLFLOW_TRACKING_URI": real}).tracking.mlflow_uri == ""  # the env is used
    with pytest.raises(ConfigError, match="--mlflow-uri or MLFLOW_TRACKING_URI"):
        resume_tracking(saved, {})
    plain = dataclasses.replace(saved, tracking=dataclasses.replace(saved.tracking, mlflow_uri=real))
    assert resume_tracking(plain, {}) is plain  # --mlflow-uri gave the real one again


def test_checkpoint_config_json_is_masked_and_loads(tmp_path: Path) -> None:
    from torch import nn

    from convscope.train.checkpoint import CONFIG_FILE, load_checkpoint, save_checkpoint
    from convscope.train.config import build_config

    secret = f"S3cr3tPw-{uuid.uuid4().hex[:8]}"
    uri = f"postgresql://u:{secret}@h/db"
    config = build_config("tiny", {"tracking": {"mlflow_uri": uri}})
    save_checkpoint(tmp_path, nn.Linear(2, 2), config, {"links": {"mlflow_tracking_uri": uri}}, {"epoch": 1})
    assert secret not in (tmp_path / CONFIG_FILE).read_text()
    loaded = load_checkpoint(tmp_path)
    assert loaded.config.tracking.mlflow_uri == "postgresql://u:***@h/db"
    assert loaded.extra["links"]["mlflow_tracking_uri"] == "postgresql://u:***@h/db"
    assert config.tracking.mlflow_uri == uri  # the running config keeps the real URI


# -- convscope serve's private config files ------------------------------------------------


def _serve_env(tmp_path: Path, secret: str) -> dict[str, str]:
    private = tmp_path / "tmp"
    private.mkdir(exist_ok=True)
    env = {name: value for name, value in os.environ.items() if not name.startswith("CONVSCOPE_")}
    # A URL that passes serve's storage check without a server (sqlite: its folder must exist) and
    # carries a credential (a query parameter named like a password) to look for.
    storage = f"sqlite:///{tmp_path / 'optuna.db'}?password={secret}"
    env.update(TMPDIR=str(private), CONVSCOPE_STORAGE=storage, CONVSCOPE_PORT=str(free_port()))  # not one in use
    return env


def test_serve_removes_its_config_file_once_the_server_has_exited(tmp_path: Path) -> None:
    secret = f"S3cr3tPw-{uuid.uuid4().hex[:8]}"
    env = _serve_env(tmp_path, secret)
    # The "server" is a process that lists the config file it was given and exits.
    fake_exec = ("import os, sys, cli.main\n"
                 "os.execvpe = lambda f, args, env: print('CONFIG', args[args.index('--from-config') + 1])\n"
                 "sys.exit(cli.main.main(['serve', 'optuna-dashboard']))\n")
    done = subprocess.run([sys.executable, "-c", fake_exec], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1, done.stderr  # handle_serve's "not reached" return
    assert secret not in done.stdout + done.stderr
    config = Path(next(line for line in done.stdout.splitlines() if line.startswith("CONFIG")).split(" ", 1)[1])
    assert config.parent == tmp_path / "tmp" and config.suffix == ".toml"
    deadline = time.monotonic() + 10
    while config.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not config.exists(), "the storage URL's config file outlived the server"


def test_serve_removes_its_config_file_when_the_server_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    import convscope.cli.main


    from convscope import cli
    secret = f"S3cr3tPw-{uuid.uuid4().hex[:8]}"
    for name, value in _serve_env(tmp_path, secret).items():
        if name in ("CONVSCOPE_STORAGE", "CONVSCOPE_PORT"):
            monkeypatch.setenv(name, value)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setattr("convscope.cli.serve_cmd.remove_after_exit", lambda pid, paths: None)

    def no_such_program(file: str, args: list[str], env: dict[str, str]) -> None:
        assert list((tmp_path / "tmp").glob("convscope-dashboard-*.toml")), "written before the exec"
        raise FileNotFoundError(2, "No such file or directory", file)

    monkeypatch.setattr(os, "execvpe", no_such_program)
    with pytest.raises(FileNotFoundError):
        cli.main.main(["serve", "optuna-dashboard"])
    assert list((tmp_path / "tmp").iterdir()) == []


# -- real runs against PostgreSQL -----------------------------------------------------------


@pytest.fixture
def secret_dbs() -> Iterator[tuple[str, Callable[[], str]]]:
    """(a password no one else uses, a factory of new PostgreSQL databases' URLs carrying it);
    every database is dropped after the test."""
    from sqlalchemy.engine import make_url

    secret = f"S3cr3tPw-{uuid.uuid4().hex[:12]}"
    with databases() as new:

        def new_url() -> str:
            url = make_url(new()).set(password=secret).render_as_string(hide_password=False)
            assert secret in url
            return url

        yield secret, new_url


def _convscope(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {name: value for name, value in os.environ.items() if name != "MLFLOW_TRACKING_URI"}
    full_env.update(env or {}, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "convscope", *argv], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=600)


def _files_holding(secret: str, *roots: Path) -> list[Path]:
    needle = secret.encode()
    return [path for root in roots if root.exists() for path in root.rglob("*")
            if path.is_file() and needle in path.read_bytes()]


def _mlflow_leaks(secret: str, url: str, tmp_path: Path) -> tuple[int, list[str]]:
    """(how many runs were searched, where in their params, tags and artifacts ``secret`` is)."""
    from mlflow import MlflowClient

    client = MlflowClient(url)
    leaks, runs = [], 0
    for experiment in client.search_experiments():
        leaks += [f"experiment tag {key}" for key, value in experiment.tags.items() if secret in value]
        for run in client.search_runs([experiment.experiment_id]):
            runs += 1
            leaks += [f"{run.info.run_id} param {k}" for k, v in run.data.params.items() if secret in v]
            leaks += [f"{run.info.run_id} tag {k}" for k, v in run.data.tags.items() if secret in v]
            destination = tmp_path / "downloaded" / run.info.run_id
            destination.mkdir(parents=True)
            client.download_artifacts(run.info.run_id, "", str(destination))
            leaks += [f"{run.info.run_id} artifact {p.relative_to(destination)}"
                      for p in _files_holding(secret, destination)]
    return runs, leaks


@needs_postgres
@pytest.mark.slow
def test_a_run_with_a_password_in_its_mlflow_uri_writes_it_nowhere(
    secret_dbs: tuple[str, Callable[[], str]], tmp_path: Path
) -> None:
    secret, new_url = secret_dbs
    url = new_url()
    runs = tmp_path / "runs"
    first = _convscope("train", *TINY, "--synthetic-size", "200", "--epochs", "1", "--runs-dir", str(runs),
                       "--run-name", "r", "--mlflow-uri", url, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "postgres:***@" in first.stdout  # the tracking URI is shown, masked
    checkpoint = runs / "checkpoints" / "convscope" / "r"

    without = _convscope("train", "--resume", str(checkpoint), "--quiet", cwd=tmp_path)
    assert without.returncode == 2
    error_lines = [line for line in without.stderr.splitlines() if "error" in line]
    assert len(error_lines) == 1 and "--mlflow-uri or MLFLOW_TRACKING_URI" in error_lines[0]

    resumed = _convscope("train", "--resume", str(checkpoint), cwd=tmp_path, env={"MLFLOW_TRACKING_URI": url})
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    for done in (first, without, resumed):
        assert secret not in done.stdout and secret not in done.stderr
    assert (runs / "tensorboard").is_dir() and (checkpoint / "config.json").is_file()
    assert _files_holding(secret, runs, tmp_path / "mlruns") == []
    searched, leaks = _mlflow_leaks(secret, url, tmp_path)
    assert searched == 1 and leaks == []


@needs_postgres
@pytest.mark.slow
def test_a_study_with_passwords_in_its_urls_writes_them_nowhere(
    secret_dbs: tuple[str, Callable[[], str]], tmp_path: Path
) -> None:
    secret, new_url = secret_dbs
    url, storage = new_url(), new_url()  # MLflow and Optuna each keep their own schema
    runs = tmp_path / "runs"
    done = _convscope("search", *TINY, "--trials", "1", "--storage", storage, "--mlflow-uri", url,
                      "--runs-dir", str(runs), "--fix", "epochs=1", "--fix", "synthetic_size=200",
                      "--fix", "analysis_size=32", "--fix", "probes_per_class=2", "--pruner", "none", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "postgres:***@" in done.stdout  # the storage is shown, masked
    assert secret not in done.stdout and secret not in done.stderr
    assert (runs / "tensorboard").is_dir()
    assert _files_holding(secret, runs, tmp_path / "mlruns") == []
    searched, leaks = _mlflow_leaks(secret, url, tmp_path)
    assert searched == 2 and leaks == []  # the study's parent run and its one trial


@pytest.mark.slow
def test_a_password_in_a_tracking_server_uri_is_printed_nowhere(mlflow_server: str, tmp_path: Path) -> None:
    """MLflow itself prints "View run … at: <tracking URI>" when a run ends; with user:password in the
    URI that line would show the password. Neither the training's output nor the explain report's
    holds it."""
    secret = "Secret-in-the-url-42"
    url = mlflow_server.replace("http://", f"http://admin:{secret}@")
    runs = tmp_path / "runs"
    done = _convscope("train", *TINY, "--synthetic-size", "200", "--epochs", "1", "--runs-dir", str(runs),
                      "--mlflow-uri", url, "--experiment", "secret-http", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert secret not in done.stdout and secret not in done.stderr
    assert "View run" not in done.stdout
    assert _files_holding(secret, runs) == []
