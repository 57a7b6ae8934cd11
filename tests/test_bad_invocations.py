"""Bad invocations of every ``convscope`` command, run as a user would (a new process each).

One table (``bad_invocation_table.py``), one row per mistake: the command line, any environment
additions, and any files the mistake needs (a config file, a damaged checkpoint, an empty data
folder). Every row runs in a folder of its own (also the working directory) with
``--runs-dir <tmp>/runs`` where the command takes it, no ``CONVSCOPE_*`` or ``MLFLOW_*`` variable
from outside, and the repository first on ``PYTHONPATH``. The contract checked for every row:

- exit code 2, within the row's time limit, and no ``Traceback`` on stdout or stderr;
- stderr names the mistake in ONE line, the *error line*, and nothing else: for convscope's own
  checks and for argparse's (an unknown flag, a value of the wrong type, a choice not offered:
  no usage block, a pointer to ``--help`` instead). The error line is ``convscope …: error: …``
  and it is the only stderr line holding ``: error:``;
- rows that set a ``CONVSCOPE_*`` variable may have ONE more line after the error line,
  ``convscope: note: flags were also taken from the environment: …``; no other row may.
  An environment row's stderr (error line or note) names its variable, so the user learns
  where the value came from;
- the error line holds every substring the row names (the flag, the config key, the
  variable or the file at fault, as the user wrote it);
- nothing is left behind: if ``<tmp>/runs/mlflow.db`` exists it holds no run, no file lies
  under ``<tmp>/runs/checkpoints``, a missing folder given (``<tmp>/no/…``) is not created,
  the working directory stays empty, and no process the row started is still running.

A separate test plants a password in URLs that fail and checks it never reaches stdout or stderr.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from bad_invocation_table import ALL_CASES, NO_RUN, RUNS_DIR_COMMANDS, SERVER_TIMEOUT, Case
from e2e_helpers import convscope

REPO = Path(__file__).resolve().parents[1]
NOTE = "convscope: note: flags were also taken from the environment"
TOKEN_VAR = "BAD_INVOCATION_TOKEN"  # marks every process a row starts, to find what it left running


# -- running a row ------------------------------------------------------------------------


@pytest.fixture
def bare_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No ``CONVSCOPE_*`` (but the test-only ones) or ``MLFLOW_*`` setting from outside, and an
    empty working directory; yields that directory."""
    for name in list(os.environ):
        if (name.startswith("CONVSCOPE_") and "_TEST_" not in name) or name.startswith("MLFLOW_"):
            monkeypatch.delenv(name)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield cwd


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fill(text: str, tmp: Path, port: int) -> str:
    """``text`` with its ``{tmp}`` and ``{port}`` placeholders filled in."""
    return text.replace("{tmp}", str(tmp)).replace("{port}", str(port))


def make_files(tmp: Path, files: Mapping[str, str | bytes | None], port: int) -> None:
    """Write a row's files below ``tmp``."""
    for relative, content in files.items():
        path = tmp / relative
        if content is None:
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(fill(content, tmp, port))


def marked_processes(token: str) -> list[int]:
    """Processes whose environment holds ``token``: what one row started and left running."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if f"{TOKEN_VAR}={token}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def stop_marked(token: str, grace: float = 2.0) -> list[int]:
    """Kill (by pid) the processes one row left running, after ``grace`` seconds to exit."""
    deadline = time.monotonic() + grace
    while (left := marked_processes(token)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


def run_row(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int | None, str, str, list[int]]:
    """(exit code or None when it timed out, stdout, stderr, pids it left running)."""
    token = uuid.uuid4().hex
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))  # the tree under test first
    env = {**env, TOKEN_VAR: token, "PYTHONPATH": path}
    try:
        done = convscope(*argv, env=env, timeout=timeout)
        code, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as expired:
        code, out, err = None, _text(expired.stdout), _text(expired.stderr)
    return code, out, err, stop_marked(token)


def _text(output: bytes | str | None) -> str:
    """What a timed-out process had written (bytes or text or nothing) as text."""
    return output.decode(errors="replace") if isinstance(output, bytes) else (output or "")


def runs_in(database: Path) -> int:
    """Runs an MLflow sqlite store holds (0 when it has no ``runs`` table yet)."""
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return int(connection.execute("select count(*) from runs").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        connection.close()


ERROR_LINE = re.compile(r"^convscope(?: [\w-]+)*: error: ")


def contract_problems(case: Case, code: int | None, out: str, err: str, tmp: Path, needles: list[str]) -> list[str]:
    """Everything in one row's outcome that breaks the contract of this module's docstring."""
    problems = []
    if code != 2:
        problems.append(f"exit code {'none: still running at the time limit' if code is None else code}, not 2")
    if "Traceback" in out or "Traceback" in err:
        problems.append("a traceback")
    lines = [line for line in err.splitlines() if line.strip()]
    from_env = any(name.startswith("CONVSCOPE_") for name in case.env)
    if from_env and lines and lines[-1].startswith(NOTE):
        lines = lines[:-1]
    elif any(line.startswith(NOTE) for line in lines):
        problems.append("an environment note where none belongs" if not from_env else "the note is not last")
    if len(lines) != 1:
        problems.append(f"{len(lines)} stderr lines (besides a note), not 1")
    error = lines[-1] if lines else ""
    if not ERROR_LINE.match(error):
        problems.append("the last line is not 'convscope …: error: …'")
    if sum(": error:" in line for line in err.splitlines()) != 1:
        problems.append("not exactly one ': error:' line")
    missing = [needle for needle in needles if needle not in error]
    if missing:
        problems.append(f"the error line does not name {missing}")
    for name in (n for n in case.env if n.startswith("CONVSCOPE_")):
        if name not in err:
            problems.append(f"stderr does not name {name}")
    database = tmp / "runs" / "mlflow.db"
    if database.is_file() and (count := runs_in(database)):
        problems.append(f"{count} MLflow run(s) left in {database}")
    checkpoints = tmp / "runs" / "checkpoints"
    if checkpoints.is_dir() and (files := [p for p in checkpoints.rglob("*") if p.is_file()]):
        problems.append(f"checkpoint files left: {[str(p.relative_to(tmp)) for p in files[:3]]}")
    if (tmp / "no").exists():
        problems.append("created the missing folder it was given")
    if stray := sorted(p.name for p in Path.cwd().iterdir()):
        problems.append(f"written into the working directory: {stray}")
    return problems


def describe(code: int | None, err: str, problems: list[str]) -> str:
    """The failure message: what is wrong, the exit code and the last three stderr lines."""
    tail = "\n".join("    " + line[:300] for line in err.strip().splitlines()[-3:])
    return f"{'; '.join(problems)}\n  exit code: {code}\n  last stderr lines:\n{tail}"


@pytest.mark.parametrize("case", ALL_CASES)
@pytest.mark.usefixtures("bare_env")
def test_bad_invocation_is_one_line_and_exit_2(case: Case, tmp_path: Path) -> None:
    """The contract of this module's docstring, for one row of the table."""
    if case.no_cuda:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA device is present: --device cuda is a valid choice here")
    tmp, port = tmp_path / "case", free_port()
    tmp.mkdir()
    make_files(tmp, case.files, port)
    argv = [fill(arg, tmp, port) for arg in case.argv]
    if case.runs:
        argv += ["--runs-dir", str(tmp / "runs")]
    env = {name: fill(value, tmp, port) for name, value in case.env.items()}
    started = time.monotonic()
    code, out, err, left = run_row(argv, env, case.timeout)
    problems = contract_problems(case, code, out, err, tmp, [fill(n, tmp, port) for n in case.needles])
    if left:
        problems.append(f"left {len(left)} process(es) running (killed)")
    if problems:
        problems.append(f"took {time.monotonic() - started:.1f} s")
    assert not problems, describe(code, err, problems)


# -- no password on the console ----------------------------------------------------------

PASSWORD = "S3CRETPW"
SECRET_URL = f"postgresql://u:{PASSWORD}@127.0.0.1:1/db"
SECRET_TRAIN = ("train", "--epochs", "1", "--synthetic-size", "200")
SECRET_SEARCH = ("search", "--trials", "1", "--fix", "synthetic_size=200")
SECRET_CASES = [  # (id, argv, env)
    ("train-mlflow-uri", (*SECRET_TRAIN, "--mlflow-uri", SECRET_URL), {}),
    ("train-MLFLOW_TRACKING_URI", SECRET_TRAIN, {"MLFLOW_TRACKING_URI": SECRET_URL}),
    ("search-storage", (*SECRET_SEARCH, "--storage", SECRET_URL), {}),
    ("search-CONVSCOPE_STORAGE", SECRET_SEARCH, {"CONVSCOPE_STORAGE": SECRET_URL}),
    ("depth-study-storage", ("depth", "--study", "s", "--storage", SECRET_URL), {}),
    ("compare-mlflow-uri", ("compare", NO_RUN, "--mlflow-uri", SECRET_URL), {}),
    ("serve-dashboard-CONVSCOPE_STORAGE", ("serve", "optuna-dashboard", "--port", "{port}"),
     {"CONVSCOPE_STORAGE": SECRET_URL}),
    ("serve-mlflow-MLFLOW_BACKEND_STORE_URI", ("serve", "mlflow", "--port", "{port}"),
     {"MLFLOW_BACKEND_STORE_URI": SECRET_URL, "MLFLOW_ARTIFACTS_DESTINATION": "{tmp}/art"}),
]


@pytest.mark.parametrize(("argv", "env"), [pytest.param(*row[1:], id=row[0]) for row in SECRET_CASES])
@pytest.mark.usefixtures("bare_env")
def test_failing_url_password_never_printed(argv: tuple[str, ...], env: dict[str, str], tmp_path: Path) -> None:
    """A URL with a password that cannot connect fails without the password on stdout or stderr."""
    port = free_port()
    full = [fill(arg, tmp_path, port) for arg in argv]
    if full[0] in RUNS_DIR_COMMANDS:
        full += ["--runs-dir", str(tmp_path / "runs")]
    code, out, err, _ = run_row(full, {k: fill(v, tmp_path, port) for k, v in env.items()}, SERVER_TIMEOUT)
    assert PASSWORD not in out and PASSWORD not in err, describe(code, err, ["the password was printed"])
    assert code not in (0, None), describe(code, err, ["did not fail"])
