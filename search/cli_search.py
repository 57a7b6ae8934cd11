"""``convscope search``: a hyperparameter study over conv depth, width and dropout."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from search.run_flags import add_run_flags, run_overrides
from search.space import SPEC_SYNTAX
from train.config import build_config
from train.errors import ConfigError

SPACE_FLAGS = ("depth", "base_width", "growth", "layer_width", "dropout", "lr", "weight_decay", "batch_size")
EXAMPLES = SPEC_SYNTAX + """

examples:
  convscope search --trials 20 --jobs 2                       # depth, width, dropout on the synthetic data
  convscope search --depth 2..5 --dropout 0..0.3 --lr 1e-4..1e-2:log --fix epochs=8
  convscope search --widths per-layer --data ~/PetImages --trials 50
  convscope search --storage postgresql://user@db/optuna --study-name pets   # one of many workers
  convscope search --config study.yaml                        # a `search:` section plus run settings
"""


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
    space.add_argument("--depth", metavar="SPEC", help="conv blocks (default: 1..the largest depth that fits)")
    space.add_argument("--widths", choices=("growth", "per-layer"), help="width as base width × growth "
                       "(default) or one width per block (sampled together with TPESampler(group=True))")
    space.add_argument("--base-width", metavar="SPEC", help="channels of conv1 (default: 8..64, log)")
    space.add_argument("--growth", metavar="SPEC", help="channel multiplier per block (default: 1.0..2.5)")
    space.add_argument("--layer-width", metavar="SPEC", help="each block's width with --widths per-layer "
                       "(default: 8,16,32,64,128,256)")
    space.add_argument("--dropout", metavar="SPEC", help="Dropout2d after every block (default: 0.0..0.5)")
    space.add_argument("--lr", metavar="SPEC", help="peak learning rate (default: the run's value; on = 1e-4..3e-2:log)")
    space.add_argument("--weight-decay", metavar="SPEC", help="AdamW weight decay (default: the run's value; on = 1e-5..1e-1:log)")
    space.add_argument("--batch-size", metavar="SPEC", help="batch size (default: the run's value; on = 32,64,128,256)")
    space.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE",
                       help="fix any run setting or search parameter, e.g. --fix epochs=3 (repeatable)")
    study = parser.add_argument_group("study")
    study.add_argument("--study-name", default="convscope-study", help="the study's name; rerunning continues it")
    study.add_argument("--storage", default="", help="SQLAlchemy URL (postgresql://…) or a journal file; "
                       "default: <runs-dir>/optuna/journal.log")
    study.add_argument("--heartbeat", type=int, default=10, metavar="SECONDS",
                       help="with a database storage: a worker silent for 3 heartbeats is dead and its trial "
                       "is retried (default: 10)")
    study.add_argument("--trials", type=int, default=20, help="total finished trials the study should hold "
                       "(counts earlier runs and other workers; default: 20)")
    study.add_argument("--jobs", type=int, default=1, help="worker processes on this machine (default: 1)")
    study.add_argument("--trials-per-gpu", type=int, default=0, metavar="K",
                       help="on a GPU: K workers share it (sets --jobs K); default: --jobs")
    study.add_argument("--metric", choices=("val/accuracy", "val/loss"), default="val/accuracy",
                       help="what trials report every epoch and the study optimises (default: val/accuracy)")
    study.add_argument("--pruner", choices=("median", "hyperband", "none"), default="median",
                       help="stop unpromising trials early (default: median)")
    study.add_argument("--seed", type=int, default=0, help="seed of the sampler and of every trial (default: 0)")
    study.add_argument("--quiet", action="store_true", help="only the final summary")
    run = parser.add_argument_group("run settings shared by every trial (more with --fix)")
    add_run_flags(run, config_help="YAML or TOML: run settings and a `search:` section",
                  data_help="synthetic (default), cifar10, oxford-pets or an image folder",
                  epochs_help="epochs per trial (default: 10)")
    parser.set_defaults(handler=handle_search)


def build_settings(args: argparse.Namespace) -> Any:
    from search.objective import StudySettings
    from search.fixes import apply_fixes, parse_fixes
    from search.space import space_from_settings
    from search.storage import resolve_storage
    from train.model import validate

    preset, overrides, file_search = run_overrides(args)
    base = build_config(preset, overrides)
    fixes = parse_fixes(args.fix)
    base = apply_fixes(base, fixes)
    flags = {name: getattr(args, name) for name in SPACE_FLAGS if getattr(args, name) is not None}
    if args.widths:
        flags["widths"] = args.widths
    space = space_from_settings({**file_search, **flags}, fixes, base)
    validate(base.model)
    jobs = args.trials_per_gpu or args.jobs
    if args.trials < 1 or jobs < 1:
        raise ConfigError("--trials and --jobs must be at least 1")
    return StudySettings(
        study_name=args.study_name,
        storage=resolve_storage(Path(base.tracking.runs_dir), args.storage, args.heartbeat),
        base=base, space=space, metric=args.metric, pruner=args.pruner, trials=args.trials, jobs=jobs,
        seed=args.seed, device=base.optim.device,
    )


def handle_search(args: argparse.Namespace) -> int:
    from search.session import run_study
    from search.study import StudyStopped

    settings = build_settings(args)
    try:
        run_study(settings, quiet=args.quiet)
    except StudyStopped as stopped:
        print(f"convscope search: {stopped}")
        return 1
    return 0

