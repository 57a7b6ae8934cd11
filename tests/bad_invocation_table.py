"""The table of bad invocations that ``test_bad_invocations.py`` runs: one row per mistake, with
the command line, any environment additions and the files the mistake needs. The contract every
row is held to is in that module's docstring."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

CASE_TIMEOUT = 60.0  # a usage error takes seconds; a row that has not exited by then failed
SERVER_TIMEOUT = 25.0  # rows that could start a server when the check is missing
NO_RUN = "0123456789abcdef0123456789abcdef"  # a well-formed MLflow run id that no store holds
RUNS_DIR_COMMANDS = ("train", "search", "depth", "compare", "explain", "ui")
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAFElEQVR4nGM8oaHBgA0wYRUdtBIA4DgBKJ8lCQoAAA"
                       "AASUVORK5CYII=")  # an 8x8 RGB image
ABSENT = object()  # ``conf``'s text for a config file that does not exist


@dataclass(frozen=True)
class Case:
    """One bad invocation. ``{tmp}`` in argv, env, files and needles is the row's folder and
    ``{port}`` a free TCP port; ``files`` maps a path below ``{tmp}`` to its text or bytes
    (None: an empty folder)."""

    argv: tuple[str, ...]
    needles: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, str | bytes | None] = field(default_factory=dict)
    runs: bool = True  # append --runs-dir {tmp}/runs
    timeout: float = CASE_TIMEOUT
    no_cuda: bool = False  # only wrong on a machine without a CUDA device


def bad(case_id: str, *argv: str, needles: str | tuple[str, ...], **options: Any) -> Any:
    """A table row: ``bad("train-epochs-0", *TRAIN, "--epochs", "0", needles="--epochs")``. It gets
    ``--runs-dir`` when its command takes one and it gives none, and the servers' time limit
    when it could start a server."""
    command = argv[0] if argv else ""
    options.setdefault("runs", command in RUNS_DIR_COMMANDS and "--runs-dir" not in argv)
    options.setdefault("timeout", SERVER_TIMEOUT if command in ("serve", "ui") else CASE_TIMEOUT)
    return pytest.param(Case(tuple(argv), (needles,) if isinstance(needles, str) else needles, **options),
                        id=case_id)


def conf(case_id: str, name: str, text: str | None | object, *needles: str, command: tuple[str, ...] = ()) -> Any:
    """A row whose ``--config {tmp}/name`` holds ``text`` (None: a folder; ABSENT: no file)."""
    files = {} if text is ABSENT else {name: text}
    return bad(case_id, *(command or TRAIN), "--config", f"{{tmp}}/{name}", needles=(name, *needles), files=files)


# Cheap settings first, the row's flags after them (the last flag wins): a check that is
# missing then costs one short epoch instead of the seed network's default ten.
TRAIN = ("train", "--synthetic-size", "200", "--epochs", "1", "--quiet", "--no-tensorboard")
SEARCH = ("search", "--trials", "1", "--fix", "synthetic_size=200", "--quiet", "--no-tensorboard")
DEPTH = ("depth", "--epochs", "1", "--folds", "2", "--fix", "synthetic_size=200", "--no-tensorboard")
SQLITE_BACKEND = {"MLFLOW_BACKEND_STORE_URI": "sqlite:///{tmp}/serve.db", "MLFLOW_ARTIFACTS_DESTINATION": "{tmp}/art"}
CHECKPOINT_CONFIG = '{"config": {"preset": "tiny", "model": {"depth": 3}}, "epoch": 1}'
FILE = {"afile": "a regular file, not a folder\n"}
ENV_TRAIN = ("train", "--synthetic-size", "200", "--quiet", "--no-tensorboard")  # no flag the variables set
ENV_SEARCH = ("search", "--fix", "synthetic_size=200", "--quiet", "--no-tensorboard")


def flag_rows(prefix: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[Any]:
    """Rows ``(flag, value…)`` run after ``prefix`` whose error line must name the flag: id ``train-lr=nan``."""
    return [bad(f"{prefix[0]}-{flag.lstrip('-')}" + (f"={' '.join(values)}" if values else ""), *prefix, flag,
                *values, needles=flag) for flag, *values in rows]


TRAIN_CASES = [
    *flag_rows(TRAIN, [
        ("--epochs", "0"), ("--epochs", "-1"), ("--epochs", "1.5"), ("--batch-size", "0"), ("--batch-size", "1"),
        ("--lr", "nan"), ("--lr", "-1"), ("--lr", "inf"), ("--lr", "0"), ("--lr", "fast"), ("--weight-decay", "-1"),
        ("--depth", "50"), ("--depth", "0"), ("--dropout", "1.5"), ("--dropout", "-0.1"), ("--image-size", "0"),
        ("--image-size", "7"), ("--val-fraction", "1"), ("--folds", "1"), ("--precision", "fp16"), ("--cuda-graph", "on"),
        ("--preset", "bogus"), ("--experiment", ""), ("--device", "tpu"), ("--nope",),
        ("--mlflow-uri", "nonsense://x"), ("--mlflow-uri", "postgresql://127.0.0.1:1/nodb"),
        ("--mlflow-uri", "http://127.0.0.1:1"),
    ]),
    bad("train-widths-depth-mismatch", *TRAIN, "--widths", "8", "16", "--depth", "3", needles=("--widths", "--depth")),
    bad("train-crop-padding-too-big", *TRAIN, "--image-size", "32", "--crop-padding", "40", needles="--crop-padding"),
    bad("train-device-cuda-without-gpu", *TRAIN, "--device", "cuda", needles="--device", no_cuda=True),
    bad("train-dry-run-device-gpu", "train", "--device", "gpu", "--dry-run", needles="--device"),
    bad("train-dry-run-cuda-without-gpu", "train", "--device", "cuda", "--dry-run", needles="--device", no_cuda=True),
    bad("train-dry-run-unknown-scheme", "train", "--mlflow-uri", "foo://bar", "--dry-run", needles="--mlflow-uri"),
    bad("train-dry-run-malformed-uri", "train", "--mlflow-uri", "http://[::bad", "--dry-run", needles="--mlflow-uri"),
    bad("train-mlflow-uri-port-not-a-number", *TRAIN, "--mlflow-uri", "http://host:abc", needles="--mlflow-uri"),
    bad("train-image-size-huge", "train", "--image-size", "100000", "--dry-run", needles="--image-size"),
    bad("train-image-size-head-too-big", "train", "--image-size", "16000", "--depth", "1", "--dry-run",
        needles=("--image-size", "--head gap")),
    bad("train-seed-too-big", *TRAIN, "--seed", "99999999999999999999", needles="--seed"),
    bad("train-one-photo-per-class", *TRAIN, "--data", "{tmp}/pets", needles=("{tmp}/pets", "validation split"),
        files={"pets/Cat/a.png": PNG, "pets/Dog/b.png": PNG}),
    bad("train-config-is-a-folder", *TRAIN, "--config", "{tmp}/conf", needles=("--config", "a folder"),
        files={"conf": None}),
    bad("train-type-error-no-usage", *TRAIN, "--epochs", "abc", needles=("--epochs", "--help")),
    bad("train-type-error-from-env", *ENV_TRAIN, needles=("--epochs", "CONVSCOPE_EPOCHS"),
        env={"CONVSCOPE_EPOCHS": "abc"}),
    bad("train-data-missing-folder", *TRAIN, "--data", "{tmp}/no/such/folder", needles="{tmp}/no/such/folder"),
    bad("train-data-empty-folder", *TRAIN, "--data", "{tmp}/empty", needles="{tmp}/empty", files={"empty": None}),
    bad("train-data-one-class", *TRAIN, "--data", "{tmp}/one", needles="{tmp}/one",
        files={f"one/cats/{i}.png": PNG for i in range(4)}),
    bad("train-data-regular-file", *TRAIN, "--data", "{tmp}/afile", needles="{tmp}/afile", files=FILE),
    bad("train-probe-missing-file", *TRAIN, "--probe", "{tmp}/nope.png", needles="{tmp}/nope.png"),
    conf("train-config-missing", "missing.yaml", ABSENT),
    conf("train-config-json-suffix", "run.json", '{"optim": {"epochs": 1}}\n'),
    conf("train-config-a-folder", "conf.yaml", None),
    conf("train-config-broken-yaml", "broken.yaml", "model: {depth: 3\noptim: [\n"),
    conf("train-config-yaml-list", "list.yaml", "- depth\n- 3\n"),
    conf("train-config-toml-widths-text", "run.toml", 'widths = "8,x"\n', "widths"),  # "8,16" is fine: 2 blocks
    conf("train-config-depth-three", "run.yaml", 'model: {depth: "three"}\n', "model.depth"),
    conf("train-config-lr-fast", "run.yaml", 'optim: {lr: "fast"}\n', "optim.lr"),
    conf("train-config-unknown-key", "run.yaml", "depht: 3\n", "depht"),
    conf("train-config-bad-preset", "run.yaml", "preset: huge\n", "preset"),
    bad("train-resume-missing-folder", *TRAIN, "--resume", "{tmp}/nocheckpoint", needles="{tmp}/nocheckpoint"),
    bad("train-resume-empty-folder", *TRAIN, "--resume", "{tmp}/ck", needles="{tmp}/ck", files={"ck": None}),
    bad("train-resume-corrupt-state", *TRAIN, "--resume", "{tmp}/ck", needles="state.pt",
        files={"ck/config.json": CHECKPOINT_CONFIG, "ck/state.pt": b"\x00not a torch file",
               "ck/model.safetensors": b"\x00not safetensors"}),
    bad("train-resume-corrupt-config", *TRAIN, "--resume", "{tmp}/ck", needles="config.json",
        files={"ck/config.json": "{not json", "ck/state.pt": b"\x00", "ck/model.safetensors": b"\x00"}),
    bad("train-resume-config-bad-value", *TRAIN, "--resume", "{tmp}/ck", needles=("config.json", "epochs"),
        files={"ck/config.json": '{"config": {"optim": {"epochs": 0}}}', "ck/state.pt": b"\x00",
               "ck/model.safetensors": b"\x00"}),
    bad("train-runs-dir-is-a-file", *TRAIN, "--runs-dir", "{tmp}/afile", needles="--runs-dir", files=FILE),
    bad("train-env-epochs-0", *ENV_TRAIN, needles="CONVSCOPE_EPOCHS", env={"CONVSCOPE_EPOCHS": "0"}),
    bad("train-env-epochs-text", *ENV_TRAIN, needles="--epochs", env={"CONVSCOPE_EPOCHS": "abc"}),
    bad("train-env-batch-size-1", *ENV_TRAIN, needles="CONVSCOPE_BATCH_SIZE", env={"CONVSCOPE_BATCH_SIZE": "1"}),
    bad("train-env-mlflow-maybe", *ENV_TRAIN, needles="CONVSCOPE_MLFLOW", env={"CONVSCOPE_MLFLOW": "maybe"}),
    bad("train-env-preset-bogus", *ENV_TRAIN, needles="--preset", env={"CONVSCOPE_PRESET": "bogus"}),
]

SEARCH_CASES = [
    *flag_rows(SEARCH, [
        ("--trials", "0"), ("--jobs", "0"), ("--depth", "5..2"), ("--depth", "abc"), ("--dropout", "0..2"),
        ("--lr", "0..1:log"), ("--batch-size", "1..8"), ("--widths", "bogus"), ("--epochs", "0"), ("--metric", "val/accuracy_tta"),
        ("--storage", "nonsense://"), ("--storage", "postgresql://127.0.0.1:1/x"), ("--metric", "bogus"),
        ("--pruner", "bogus"), ("--trials-per-gpu", "-1"), ("--heartbeat", "0"), ("--study-name", ""),
    ]),
    bad("search-storage-sqlite-missing-dir", *SEARCH, "--storage", "sqlite:///{tmp}/no/such/dir/x.db",
        needles="--storage"),
    bad("search-storage-journal-under-a-file", *SEARCH, "--storage", "{tmp}/afile/journal.log", needles="--storage",
        files=FILE),
    bad("search-fix-unknown-name", *SEARCH, "--fix", "nope=1", needles="nope"),
    bad("search-fix-epochs-0", *SEARCH, "--fix", "epochs=0", needles="epochs=0"),
    bad("search-fix-no-value", *SEARCH, "--fix", "lr", needles="--fix lr"),
    conf("search-config-search-section", "study.yaml", 'search: {depth: "x..y"}\n', "depth", command=SEARCH),
    bad("search-env-trials-0", *ENV_SEARCH, needles="CONVSCOPE_TRIALS", env={"CONVSCOPE_TRIALS": "0"}),
]

SEARCH_CASES += [
    bad("search-depth-beyond-any-input", *SEARCH, "--depth", "2..50", needles=("--depth", "the largest depth")),
    bad("search-storage-folder", *SEARCH, "--storage", "{tmp}", needles=("--storage", "a folder")),
    bad("search-storage-bad-port", *SEARCH, "--storage", "postgresql://::bad::url", needles="--storage"),
    bad("search-storage-driver-missing", *SEARCH, "--storage", "postgresql+pg8000://u@h/d",
        needles=("--storage", "not installed")),
]
DEPTH_CASES = [
    bad("depth-folds-1", *DEPTH, "--max-depth", "2", "--folds", "1", needles="--folds"),
    bad("depth-folds-0", *DEPTH, "--max-depth", "2", "--folds", "0", needles="--folds"),
    bad("depth-max-depth-0", *DEPTH, "--max-depth", "0", needles="--max-depth"),
    bad("depth-max-depth-50", *DEPTH, "--max-depth", "50", needles="--max-depth"),
    bad("depth-ablate-last-without-ablate", *DEPTH, "--max-depth", "2", "--ablate-last", "2", needles="--ablate-last"),
    bad("depth-ablate-last-negative", *DEPTH, "--ablate", NO_RUN, "--ablate-last", "-1", needles="--ablate-last"),
    bad("depth-ablate-missing-run", *DEPTH, "--ablate", NO_RUN, needles=("--ablate", NO_RUN)),
    bad("depth-from-run-missing-run", *DEPTH, "--from-run", NO_RUN, needles=("--from-run", NO_RUN)),
    bad("depth-timeout-zero", *DEPTH, "--max-depth", "2", "--timeout", "0", needles="--timeout"),
    bad("depth-timeout-words", *DEPTH, "--max-depth", "2", "--timeout", "soon", needles="--timeout"),
    bad("depth-timeout-and-prune-folds", *DEPTH, "--max-depth", "2", "--timeout", "5m", "--prune-folds",
        needles=("--prune-folds", "--timeout")),
    bad("depth-prune-folds-on-2-folds", *DEPTH, "--max-depth", "2", "--prune-folds", needles=("--prune-folds", "--folds")),
    bad("depth-timeout-too-short", "depth", "--folds", "2", "--fix", "synthetic_size=200", "--no-tensorboard",
        "--max-depth", "2", "--timeout", "1s", needles=("--timeout", "need about")),
    bad("depth-study-missing", *DEPTH, "--max-depth", "2", "--study", "nosuchstudy",
        needles=("--study", "nosuchstudy")),
    bad("depth-widths-zero", *DEPTH, "--widths", "0", "8", needles="--widths"),
    bad("depth-widths-and-study", *DEPTH, "--widths", "8", "16", "--study", "s", needles="--study"),
    bad("depth-epochs-0", *DEPTH, "--max-depth", "2", "--epochs", "0", needles="--epochs"),
]

OTHER_CASES = [
    bad("ui-host-not-an-address", "ui", "--host", "999.1.1.1", needles="--host"),
    bad("serve-tensorboard-logdir-missing", "serve", "tensorboard", "--logdir", "{tmp}/does/not/exist",
        "--port", "{port}", needles="--logdir"),
    bad("no-command", needles="COMMAND"),
    bad("unknown-command", "bogus", needles="bogus"),
    bad("compare-no-run-ids", "compare", needles="RUN_ID"),
    bad("compare-missing-run", "compare", NO_RUN, needles=NO_RUN),
    bad("compare-study-missing", "compare", "--study", "nosuchstudy", needles=("--study", "nosuchstudy")),
    bad("compare-mlflow-uri-nonsense", "compare", NO_RUN, "--mlflow-uri", "nonsense://x", needles="--mlflow-uri"),
    bad("explain-no-run-id", "explain", needles="RUN_ID"),
    bad("explain-missing-run", "explain", NO_RUN, needles=NO_RUN),
    bad("explain-folds-1", "explain", NO_RUN, "--folds", "1", needles="--folds"),
    bad("serve-no-service", "serve", needles="SERVICE"),
    bad("serve-mlflow-no-backend", "serve", "mlflow", "--port", "{port}", needles="MLFLOW_BACKEND_STORE_URI"),
    bad("serve-mlflow-backend-nonsense", "serve", "mlflow", "--port", "{port}", needles="MLFLOW_BACKEND_STORE_URI",
        env={**SQLITE_BACKEND, "MLFLOW_BACKEND_STORE_URI": "nonsense://x"}),
    bad("serve-dashboard-storage-unreachable", "serve", "optuna-dashboard", "--port", "{port}",
        needles="CONVSCOPE_STORAGE", env={"CONVSCOPE_STORAGE": "postgresql://127.0.0.1:1/x"}),
    *(bad(f"serve-mlflow-port={port}", "serve", "mlflow", "--port", port, needles="--port", env=SQLITE_BACKEND)
      for port in ("0", "-1", "70000")),
    bad("serve-tensorboard-port-70000", "serve", "tensorboard", "--logdir", "{tmp}", "--port", "70000",
        needles="--port"),
    bad("serve-tensorboard-logdir-file", "serve", "tensorboard", "--logdir", "{tmp}/afile", "--port", "{port}",
        needles="--logdir", files=FILE),
    bad("ui-runs-dir-missing", "ui", "--runs-dir", "{tmp}/nope", needles="--runs-dir"),
    bad("ui-runs-dir-is-a-file", "ui", "--runs-dir", "{tmp}/afile", needles="--runs-dir", files=FILE),
    bad("ui-mlflow-port-70000", "ui", "--runs-dir", "{tmp}/runs", "--mlflow-port", "70000", "--tensorboard-port",
        "{port}", "--dashboard-port", "{port}", needles="--mlflow-port", files={"runs": None}),
]

ALL_CASES = [*TRAIN_CASES, *SEARCH_CASES, *DEPTH_CASES, *OTHER_CASES]
