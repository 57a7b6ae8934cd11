"""``convscope search``: a hyperparameter study over conv depth, width and dropout."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from convscope.cli.setting_flags import add_config_flags, add_setting_flags, setting_layers
from convscope.search.defaults import default_jobs, photo_space, study_defaults
from convscope.search.space import SPEC_SYNTAX, SearchSpace
from convscope.train.config import build_config
from convscope.train.config_sections import RunConfig
from convscope.train.errors import ConfigError
from convscope.cli.setting_flags import field_comments
from convscope.search.space import OPTIONAL_RANGES, SETTINGS, WORDS
from convscope.search.spec import format_spec

EXCLUDED = ("run_name", *SETTINGS)  # trials are named by the study; the space flags take a range


class _DefaultTrials(int):
    """``--trials``'s default: equal to 20, but told apart from a ``--trials 20`` the user gave
    (with ``--timeout`` and no ``--trials`` a study runs trials until the budget is spent)."""


DEFAULT_TRIALS = _DefaultTrials(20)
EXAMPLES = SPEC_SYNTAX + """

examples:
  convscope search --trials 20 --jobs 2                       # depth, width, dropout on the synthetic data
  convscope search --timeout 1h                               # as many trials as fit in an hour
  convscope search --depth 2..5 --dropout 0..0.3 --lr 1e-4..1e-2:log --fix epochs=8
  convscope search --widths per-layer --data ~/PetImages --trials 50
  convscope search --storage postgresql://user@db/optuna --study-name pets   # one of many workers
  convscope search --config study.yaml                        # a `search:` section plus run settings
"""


def search_flag_help(name: str) -> str:
    """A search flag's help: the ``SearchSpace`` field's comment and its default spec."""
    default = getattr(SearchSpace(), name)
    shown = "the run's value" if default is None else format_spec(default)
    shown += "the largest depth that fits" if shown.endswith("..") else ""
    on = OPTIONAL_RANGES.get(name) or WORDS.get(name)
    asked = f"; on = {format_spec(on).lower()}" if default is None and on is not None else ""
    return f"{field_comments(SearchSpace).get(name, '')} (default: {shown}{asked})"


def add_search_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search",
        help="search conv depth, width and dropout with Optuna; every trial is a tracked training run",
        description=(
            "Run an Optuna study. Every trial is a full `convscope train` run — feature maps, saliency and "
            "activation artifacts included — logged as an MLflow child run of one parent run and as its own "
            "TensorBoard run with its hyperparameters in the HParams tab."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    space = parser.add_argument_group("search space (a spec per parameter; see below)")
    specs = [(f"--{name.replace('_', '-')}", search_flag_help(name)) for name in SETTINGS]
    for flag, help_text in specs:
        action = space.add_argument(flag, dest=f"space.{flag[2:].replace('-', '_')}", metavar="SPEC",
                                    default=argparse.SUPPRESS, help=help_text)
        action.fixable = True  # type: ignore[attr-defined]  # --fix lr=1e-3 is --lr 1e-3: a fixed value
    study = parser.add_argument_group("study")
    study.add_argument("--study-name", default="convscope-study", help="the study's name; rerunning continues it")
    study.add_argument("--storage", default="", help="SQLAlchemy URL (postgresql://…) or a journal file; "
                       "default: <runs-dir>/optuna/journal.log")
    study.add_argument("--heartbeat", type=int, default=10, metavar="SECONDS",
                       help="with a database storage: a worker silent for 3 heartbeats is dead and its trial "
                       "is retried (default: 10)")
    study.add_argument("--trials", type=int, default=DEFAULT_TRIALS, help="total finished trials the study "
                       "should hold (counts earlier runs and other workers; default: 20, or no limit with --timeout)")
    study.add_argument("--timeout", metavar="DURATION", default=None,
                       help="time budget of this invocation: 3600 (seconds), 45s, 90m, 1h, 2h30m. After it no "
                       "trial starts and running trials stop at the end of their epoch (MLflow run KILLED, "
                       "Optuna trial FAIL marked stopped_by_budget; the next run retries them first), so the "
                       "command returns about then. Every run of the study gets a fresh budget; --trials "
                       "stays a total")
    study.add_argument("--jobs", type=int, default=None, help="worker processes on this machine (default: one "
                       "per visible GPU with --device auto or cuda; one per core, up to 8, for a folder of photos "
                       "on a CPU; else 1)")
    study.add_argument("--trials-per-gpu", type=int, default=0, metavar="K",
                       help="on GPUs: K workers share each visible GPU (sets --jobs to K × GPUs; "
                       "workers go round-robin over the GPUs); default: --jobs")
    study.add_argument("--workers-in", choices=("processes", "threads"), default="processes",
                       help="where several workers run: processes (each its own process; on a GPU their "
                       "kernels take turns) or threads (the workers of each device are threads of one "
                       "process, each on its own CUDA stream, so their kernels run at once; for GPUs: on a "
                       "CPU threads contend for one interpreter). Default: processes")
    study.add_argument("--metric", choices=("val/accuracy", "val/loss", "val/accuracy_tta", "val/loss_tta"),
                       default="val/accuracy",
                       help="what trials report every epoch and the study optimises; the _tta ones (flip "
                       "test-time augmentation) need --tta (default: val/accuracy)")
    study.add_argument("--pruner", choices=("median", "hyperband", "none"), default="median",
                       help="stop unpromising trials early (default: median)")
    study.add_argument("--model-name", default="", help="the MLflow Model Registry name of the study's best "
                       "networks: one version per improving trial, alias champion on the best "
                       "(default: the study's name)")
    study.add_argument("--final-share", type=float, default=None, metavar="X",
                       help="with --timeout: the share of the budget kept at the end to train the best trial's "
                       "network again on train+validation for as many epochs as fit; that network becomes the "
                       "champion (default: 0.35 for a study of a folder of photos with --timeout and MLflow, "
                       "else 0 = none)")
    study.add_argument("--keep-all", action="store_true",
                       help="keep everything every trial wrote: its pictures and probe activations of every "
                       "epoch (--visual-epochs all) and its resumable checkpoint (default: pictures of the "
                       "first and last epoch, the latest probe activations; a trial that finished or was "
                       "pruned keeps no checkpoint, its network being in its MLflow run; a trial stopped by "
                       "the time budget or failed keeps its checkpoint; without MLflow every checkpoint is kept)")
    study.add_argument("--quiet", action="store_true", help="only the final summary")
    study.add_argument("--check", action="store_true",
                       help="run no trial: exit 0 when the study's storage holds the study and the MLflow "
                       "server (if one is set) answers, else 1; the stack's worker health check")
    study.add_argument("--init-only", action="store_true",
                       help="create the study (and a database's tables) and exit: run once before starting "
                       "many workers, as the stack's study-init service does")
    add_config_flags(parser, "YAML or TOML: run settings and a `search:` section")
    add_setting_flags(parser, exclude=EXCLUDED, title="{section} settings shared by every trial")
    parser.set_defaults(handler=handle_search)


def study_space(args: argparse.Namespace) -> tuple[RunConfig, SearchSpace]:
    """(the trials' base config, the search space) from the flags, the environment and the config file."""
    from convscope.search.space import space_from_settings, spec_values
    from convscope.train.geometry import validate

    preset, overrides, file_search = setting_layers(args)
    base = study_defaults(build_config(preset or "seed", overrides), overrides, keep_all=args.keep_all)
    flags = {dest.removeprefix("space."): value for dest, value in vars(args).items() if dest.startswith("space.")}
    labels = {str(name).replace("-", "_"): f"--config {args.config}: search.{name} {value}"
              for name, value in file_search.items() if str(name).replace("-", "_") not in flags}
    labels.update({dest.removeprefix("space."): label for dest, label in getattr(args, "fix_labels", {}).items()
                   if dest.startswith("space.")})
    space = space_from_settings(photo_space(base, {**file_search, **flags}), base, labels=labels)  # fits the input
    if space.image_size is not None:  # every setting must suit the smallest input searched
        from convscope.train.setting_values import check_values

        smallest = min(spec_values(space.image_size))
        check_values(dataclasses.replace(base, model=dataclasses.replace(base.model, image_size=smallest)))
        if isinstance(space.image_size, int):
            base = dataclasses.replace(base, model=dataclasses.replace(base.model, image_size=smallest))
    if space.depth is None:
        validate(base.model)
    else:  # the other shape settings, at the smallest depth searched
        lowest = min(spec_values(space.depth))
        widths = space.widths[:lowest] if isinstance(space.widths, tuple) else ()
        side = min(spec_values(space.image_size)) if space.image_size is not None else base.model.image_size
        validate(dataclasses.replace(base.model, depth=lowest, widths=widths, image_size=side))
    return base, space


def final_share_for(given: float | None, timeout: float | None, base: RunConfig) -> float:
    """``--final-share``: as given (checked), else the default for this study (see its help)."""
    from convscope.search.defaults import FOLDER_FINAL_SHARE, is_photo_folder

    if given is None:
        wanted = timeout is not None and base.tracking.mlflow and is_photo_folder(base.data.data)
        return FOLDER_FINAL_SHARE if wanted else 0.0
    if not 0 <= given < 0.9:
        raise ConfigError(f"--final-share must be in [0, 0.9) (got {given})")
    if given and timeout is None:
        raise ConfigError("--final-share needs --timeout: it is a share of the time budget")
    if given and not base.tracking.mlflow:
        raise ConfigError("--final-share needs MLflow (no --no-mlflow): the final network is read from and "
                          "registered in it")
    return given


def build_settings(args: argparse.Namespace) -> Any:
    """The study's settings from the flags, the environment and the config file; every value is
    checked (ConfigError naming it) before torch or a study storage is touched."""

    started = time.time()  # the budget counts from here, in every worker process alike
    from convscope.train.durations import parse_timeout

    timeout = parse_timeout(args.timeout) if args.timeout is not None else None
    if args.trials < 1:
        raise ConfigError(f"--trials must be at least 1 (got {args.trials})")
    trials = None if timeout is not None and isinstance(args.trials, _DefaultTrials) else int(args.trials)
    if (args.jobs is not None and args.jobs < 1) or args.trials_per_gpu < 0:
        raise ConfigError(f"--jobs must be at least 1 and --trials-per-gpu at least 0 "
                          f"(got {args.jobs} and {args.trials_per_gpu})")
    if args.heartbeat < 1:
        raise ConfigError(f"--heartbeat must be at least 1 second (got {args.heartbeat})")
    if not args.study_name.strip():
        raise ConfigError("--study-name must not be empty: it names the study that reruns and workers share")
    base, space = study_space(args)
    if args.metric.endswith("_tta") and not base.optim.tta:
        raise ConfigError(f"--metric {args.metric} needs --tta: only then do trials also evaluate with flip "
                          "test-time augmentation")
    from convscope.train.preflight import preflight

    preflight(base, tracking=not args.init_only)  # --init-only creates the study and logs nothing to MLflow
    from convscope.search.storage import resolve_storage

    storage = resolve_storage(Path(base.tracking.runs_dir), args.storage, args.heartbeat)
    from convscope.search.objective import StudySettings
    from convscope.search.workers import visible_gpus

    gpus = visible_gpus()
    jobs = args.trials_per_gpu * max(1, gpus) if args.trials_per_gpu else args.jobs or default_jobs(base, gpus)
    final_share = final_share_for(args.final_share, timeout, base)
    trials_end = started + timeout * (1 - final_share) if timeout is not None else None
    return StudySettings(
        study_name=args.study_name,
        storage=storage,
        base=base, space=space, metric=args.metric, pruner=args.pruner, trials=trials, jobs=jobs,
        workers_in=args.workers_in,
        seed=base.optim.seed, device=base.optim.device,
        timeout=timeout, deadline=trials_end, started=started, final_share=final_share,
        budget_end=started + timeout if timeout is not None else None,
        model_name=args.model_name.strip(), keep_all=args.keep_all,
    )


def check_worker(args: argparse.Namespace) -> int:
    """The worker's health: can it reach the study and the MLflow server it logs to?"""
    import os

    import optuna

    from convscope.cli.serve_cmd import check
    from convscope.search.storage import resolve_storage

    preset, overrides, _ = setting_layers(args)  # the runs folder and MLflow URI may come from --config
    tracking = build_config(preset or "seed", overrides).tracking
    storage = resolve_storage(Path(tracking.runs_dir), args.storage, args.heartbeat)
    problems = []
    try:
        if storage.kind == "rdb":
            store: optuna.storages.BaseStorage = optuna.storages.RDBStorage(storage.url, skip_table_creation=True)
        elif Path(storage.url).is_file():
            store = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage.url))
        else:
            raise FileNotFoundError(storage.url)
        store.get_study_id_from_name(args.study_name)
    except Exception as error:  # any storage failure is what this check reports
        problems.append(f"study {args.study_name!r} in {storage.display}: {type(error).__name__}: {error}")
    uri = tracking.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri.startswith(("http://", "https://")):
        healthy, detail = check(uri.rstrip("/") + "/health")
        if not healthy:
            problems.append(f"MLflow {uri}: {detail}")
    from convscope.tracking.secrets import mask_secrets

    for problem in problems:
        print(f"convscope search: unhealthy: {mask_secrets(problem)}", file=sys.stderr)
    return 1 if problems else 0


def handle_search(args: argparse.Namespace) -> int:
    if args.check:  # before the heavy imports: a health check runs every minute
        return check_worker(args)
    from convscope.train.interrupts import sigterm_as_interrupt

    with sigterm_as_interrupt():  # docker stop / kill: the running trials end KILLED, as on Ctrl-C
        return _search(args)


def _search(args: argparse.Namespace) -> int:
    settings = build_settings(args)  # --runs-dir is checked writable there
    if settings.workers_in == "threads" and settings.jobs > 1 and not _on_cuda(settings.device):
        print(f"convscope search: --workers-in threads without a GPU: the {settings.jobs} workers share one "
              "Python interpreter; worker processes (the default) use a CPU's cores better", file=sys.stderr)
    if not args.init_only and settings.base.tracking.mlflow:
        from convscope.cli.orphan_runs import end_orphaned_runs

        end_orphaned_runs(settings.stores())
    from convscope.search.session import run_study
    from convscope.search.study import StudyStopped

    if args.init_only:
        from convscope.search.study import create

        study = create(settings)
        print(f"study {settings.study_name!r} ready in {settings.storage.display} "
              f"({len(study.get_trials(deepcopy=False))} trials so far)")
        return 0
    try:
        run_study(settings, quiet=args.quiet)
    except StudyStopped as stopped:
        from convscope.tracking.secrets import mask_secrets

        print(f"convscope search: {mask_secrets(str(stopped))}")
        return 1
    return 0


def _on_cuda(device: str) -> bool:
    from convscope.train.loop import select_device

    return select_device(device).type == "cuda"
