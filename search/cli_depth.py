"""``convscope depth``: k-fold cross-validation per depth (or per removed block) and the 1-SE rule."""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from search.run_flags import add_run_flags, run_overrides
from train.config import RunConfig, build_config, from_dict, to_dict
from train.errors import ConfigError

EXAMPLES = """
examples:
  convscope depth --folds 5                                   # depth 1..5 of the seed network, synthetic data
  convscope depth --data ~/PetImages --widths 16 32 64 128 256 --epochs 8
  convscope depth --study pets --max-depth 6 --image-size 96  # widths, dropout, lr of a study's best trial
  convscope depth --ablate 3f2c9a…                            # bypass one block at a time in a trained run's network
  convscope depth --ablate 3f2c9a… --ablate-last 2            # bypass its last block, then its last two together
  convscope depth --data synthetic-depth3 --image-size 32 --max-depth 4 --fix flip=false --fix crop_padding=0
"""


def add_depth_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "depth",
        help="how many conv blocks are enough: k-fold cross-validation per depth and the one-standard-error rule",
        description=(
            "Train every depth 1 … --max-depth (or, with --ablate, a trained network with conv blocks bypassed) "
            "on the same k stratified folds. Mean ± standard error of the validation accuracy per depth; the "
            "recommendation is the shallowest depth within one standard error of the best, labelled a tie when "
            "others are within it too. Nothing is recommended while a variant is still improving or the best "
            "(in an ablation, the full network) did not learn: the output says what to rerun. Every fold is an "
            "MLflow child run of one parent run, which holds the table, the accuracy-vs-depth plot and the "
            "verdict."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = parser.add_argument_group("what to compare (one of; default: the preset's base width × growth)")
    which = what.add_mutually_exclusive_group()
    which.add_argument("--widths", type=int, nargs="+", metavar="W", help="per-block widths; depth d uses the first d")
    which.add_argument("--study", metavar="NAME", help="take widths, dropout and the rest from a study's best trial")
    which.add_argument("--ablate", metavar="RUN_ID", help="retrain this run's network with one conv block at a time "
                       "bypassed (average pooling + a 1x1 conv to its width: every other block keeps its shapes)")
    what.add_argument("--ablate-last", type=int, default=0, metavar="N", help="with --ablate: bypass the last "
                      "block, then the last two, … the last N together, instead of one block at a time")
    what.add_argument("--max-depth", type=int, help="deepest network (default: the largest depth that fits, "
                      "or the number of --widths)")
    what.add_argument("--storage", default="", help="where --study lives (default: <runs-dir>/optuna/journal.log)")
    cv = parser.add_argument_group("cross-validation")
    cv.add_argument("--folds", type=int, default=5, help="stratified folds; every variant trains on each (default: 5)")
    cv.add_argument("--prune-folds", action="store_true", help="stop a variant early when a Wilcoxon signed-rank "
                    "test says it is worse than the best so far (p < 0.1: needs 4 or more folds)")
    cv.add_argument("--name", help="the parent run's name and the prefix of the fold runs (default: depth-<time>)")
    cv.add_argument("--visuals", action=argparse.BooleanOptionalAction, default=False,
                    help="per-epoch feature maps and activation artifacts for every fold run (default: off)")
    run = parser.add_argument_group("run settings shared by every fold run (more with --fix)")
    add_run_flags(run, config_help="YAML or TOML run settings",
                  data_help="synthetic (default), synthetic-depthK, an image folder with one sub-folder per class "
                  "(pre-split folders and torchvision sets have no folds)",
                  epochs_help="epochs per fold run (default: 10)")
    run.add_argument("--seed", type=int, help="seed of initialisation and shuffling, and of the data and folds "
                     "unless --fix data_seed=N sets them apart (default: 0)")
    run.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE",
                     help="set any run setting, e.g. --fix synthetic_size=2000 (repeatable)")
    parser.set_defaults(handler=handle_depth)


def build_depth_settings(args: argparse.Namespace) -> Any:
    from search.depth import DepthSettings, ablation_variants, default_name, depth_variants
    from search.fixes import apply_fixes, parse_fixes
    from train.model import max_depth

    preset, overrides, _ = run_overrides(args)
    fixes = parse_fixes(args.fix)
    command = apply_fixes(build_config(preset, overrides), fixes)
    tracking = replace(command.tracking, visuals=args.visuals)
    if args.folds < 2:
        raise ConfigError(f"--folds must be at least 2 (got {args.folds})")
    mode, source, widths = "depth", "the preset's base width x growth", tuple(args.widths or command.model.widths)
    if args.ablate_last and not args.ablate:
        raise ConfigError("--ablate-last needs --ablate RUN_ID (the trained run whose last blocks to bypass)")
    if args.ablate:
        if args.preset or args.max_depth:
            raise ConfigError("--ablate takes the network of the run: drop --preset and --max-depth")
        trained = run_config(command, args.ablate)
        merged = to_dict(trained)
        for section, values in overrides.items():
            merged.setdefault(section, {}).update(values)
        base = replace(apply_fixes(from_dict(merged), fixes), tracking=tracking)
        mode, source = "ablate", f"run {args.ablate}"
        variants = ablation_variants(base, args.ablate_last)
    else:
        base = replace(command, tracking=tracking)
        if args.study:
            base, widths, source = study_config(base, args.study, args.storage)
        elif widths:
            source = "--widths" if args.widths else "the config's widths"
        deepest = args.max_depth or (min(len(widths), max_depth(base.model)) if widths and not args.study
                                     else max_depth(base.model))
        if widths and len(widths) < deepest:  # a study's per-layer widths: go on doubling
            widths = widths + tuple(widths[-1] * 2 ** (i + 1) for i in range(deepest - len(widths)))
        variants = depth_variants(base, deepest, widths)
    return DepthSettings(name=args.name or default_name(mode), variants=variants, folds=args.folds, mode=mode,
                         prune_folds=args.prune_folds, source=source, ablate_run=args.ablate or "")


def run_config(command: RunConfig, run_id: str) -> RunConfig:
    """The RunConfig a run trained: its ``model/config.json`` artifact (a finished run), else its
    ``config.yaml`` artifact (logged when the run starts)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from tracking.mlflow_sink import CONFIG_ARTIFACT
    from tracking.stores import resolve_stores

    stores = resolve_stores(command.tracking.runs_dir, command.tracking.mlflow_uri)
    client = MlflowClient(stores.mlflow_uri)
    try:
        client.get_run(run_id)
    except MlflowException as error:
        raise ConfigError(f"--ablate {run_id}: no such run in {stores.mlflow_uri} "
                          f"({str(error).splitlines()[0]})") from None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, "model/config.json", tmp)
            return from_dict(json.loads(Path(path).read_text())["config"])
        except Exception:  # no model artifact (a run that did not finish): the config it started with
            pass
        try:
            path = client.download_artifacts(run_id, CONFIG_ARTIFACT, tmp)
        except Exception:
            raise ConfigError(f"--ablate {run_id}: the run has neither a model/config.json nor a {CONFIG_ARTIFACT} "
                              "artifact; give a run made by convscope train or search") from None
        return from_dict(yaml.safe_load(Path(path).read_text()) or {})


def study_config(base: RunConfig, name: str, storage_url: str) -> tuple[RunConfig, tuple[int, ...], str]:
    """``base`` with the best trial's parameters of study ``name``; its per-layer widths, if any."""
    import optuna

    from search.space import IntRange, SearchSpace, config_from_params
    from search.storage import open_storage, resolve_storage
    from search.study import best_trial

    storage = resolve_storage(Path(base.tracking.runs_dir), storage_url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(storage))
    except KeyError:
        raise ConfigError(f"--study {name}: no such study in {storage.display} (give --storage where it lives)") from None
    best = best_trial(study)
    if best is None:
        raise ConfigError(f"--study {name}: the study has no completed trial yet")
    params, drawn = best.params, {name: _spec(d) for name, d in best.distributions.items()}
    space = SearchSpace(  # the study's own ranges (a value outside today's defaults must still fit)
        depth=IntRange(1, None) if "depth" in params else None,  # up to what fits this run's image size
        widths="per-layer" if "width_1" in params else "growth", layer_width=drawn.get("width_1"),
        **{key: drawn.get(key) for key in ("base_width", "growth", "dropout", "lr", "weight_decay", "batch_size")},
    )
    with warnings.catch_warnings():  # FixedTrial warns when the best depth is above what fits: validate says more
        warnings.simplefilter("ignore")
        config = config_from_params(params, space, base)
    shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
    return config, tuple(config.model.widths), f"study {name!r}, best trial #{best.number} ({shown})"


def _spec(distribution: Any) -> Any:
    """An Optuna distribution as a search-space spec."""
    from optuna.distributions import FloatDistribution, IntDistribution

    from search.space import Choice, FloatRange, IntRange

    if isinstance(distribution, IntDistribution):
        return IntRange(distribution.low, distribution.high, distribution.log, distribution.step)
    if isinstance(distribution, FloatDistribution):
        return FloatRange(distribution.low, distribution.high, distribution.log)
    return Choice(tuple(distribution.choices))


def handle_depth(args: argparse.Namespace) -> int:
    from search.depth import run_depth_study
    from train.interrupts import sigterm_as_interrupt

    with sigterm_as_interrupt():  # SIGTERM: the running fold and the parent end KILLED, as on Ctrl-C
        run_depth_study(build_depth_settings(args))
    return 0
