"""``convscope depth``: k-fold cross-validation per depth (or per removed block) and the 1-SE rule."""

from __future__ import annotations

import argparse
from typing import Any

from convscope.cli.setting_flags import SEPARATOR, add_config_flags, add_setting_flags, setting_layers
from convscope.train.config import build_config, from_dict, to_dict
from convscope.train.config_file import merge
from convscope.train.errors import ConfigError

EXCLUDED = ("depth", "folds", "fold", "run_name")  # what the depth study varies and names itself

EXAMPLES = """
examples:
  convscope depth --folds 5                                   # depth 1..5 of the seed network, synthetic data
  convscope depth --data ~/PetImages --timeout 12m            # epochs and folds planned to answer within 12 minutes
  convscope depth --from-run 3f2c9a… --timeout 12m            # depth 1..N of a trained run's network, every setting kept
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
            "recommendation is the shallowest depth within one standard error (at least 0.02) of the best, "
            "labelled a tie when others are within it too. Nothing is recommended while a variant is still improving or the best "
            "(in an ablation, the full network) did not learn: the output says what to rerun. Every fold is an "
            "MLflow child run of one parent run, which holds the table, the accuracy-vs-depth plot and the "
            "verdict."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = parser.add_argument_group("what to compare (one of --widths, --study, --from-run, --ablate; default: the "
                                     "preset's base width × growth; --widths: depth d uses the first d)")
    which = what.add_mutually_exclusive_group()
    which.add_argument("--study", metavar="NAME", help="take widths, dropout and the rest from a study's best trial")
    which.add_argument("--from-run", metavar="RUN_ID", help="depth 1 … N of a trained run's network: its widths "
                       "(doubling on past its depth), data, augmentation, optimiser and every other setting; N: its "
                       "depth + 1 where that fits (or --max-depth)")
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
    cv.add_argument("--timeout", metavar="DURATION", help="answer within this time (e.g. 12m, 1h): the epochs of "
                    "every fold run are planned so that 3 rounds of folds fit, more rounds run until the answer holds, "
                    "and the verdict says what more time would settle when it cannot answer")
    cv.add_argument("--name", help="the parent run's name and the prefix of the fold runs (default: depth-<time>)")
    add_config_flags(parser, "YAML or TOML run settings")
    add_setting_flags(parser, exclude=EXCLUDED, title="{section} settings shared by every fold run")
    widths = next(action for action in parser._actions if action.dest == f"model{SEPARATOR}widths")
    which._group_actions.append(widths)  # --widths, --study and --ablate exclude each other
    parser.set_defaults(**{f"tracking{SEPARATOR}visuals": False})  # fold runs: no per-epoch pictures unless asked
    parser.set_defaults(handler=handle_depth)


def build_depth_settings(args: argparse.Namespace) -> Any:
    from convscope.train.geometry import max_depth

    if args.folds < 2:
        raise ConfigError(f"--folds must be at least 2 (got {args.folds})")
    if args.max_depth is not None and args.max_depth < 1:
        raise ConfigError(f"--max-depth must be at least 1 (got {args.max_depth})")
    if args.prune_folds and args.timeout:
        raise ConfigError("--prune-folds goes with a fixed number of folds; with --timeout the study stops by itself "
                          "once the answer holds: drop one of them")
    if args.prune_folds and args.folds < 4:
        raise ConfigError(f"--prune-folds needs --folds 4 or more: its Wilcoxon test cannot reject anything on "
                          f"{args.folds} folds (got --folds {args.folds})")
    if args.ablate_last < 0:
        raise ConfigError(f"--ablate-last must be at least 0 (got {args.ablate_last})")
    preset, overrides, _ = setting_layers(args)
    command = build_config(preset or "seed", overrides)
    given_widths = "widths" in overrides.get("model", {})
    mode, source, widths = "depth", "the preset's base width x growth", tuple(command.model.widths)
    if given_widths and (args.study or args.ablate or args.from_run):
        raise ConfigError(f"--widths goes with neither --study, --from-run nor --ablate: "
                          f"{'the study' if args.study else 'the run'} sets the widths")
    if args.from_run and preset:
        raise ConfigError("--from-run takes the network and settings of the run: drop --preset")
    if args.ablate_last and not args.ablate:
        raise ConfigError("--ablate-last needs --ablate RUN_ID (the trained run whose last blocks to bypass)")
    if args.ablate and (preset or args.max_depth):
        raise ConfigError("--ablate takes the network of the run: drop --preset and --max-depth")
    if not args.ablate and not args.study and args.max_depth and args.max_depth > max_depth(command.model):
        side = command.model.image_size
        raise ConfigError(f"--max-depth {args.max_depth}: the largest depth that fits {side}x{side} inputs is "
                          f"{max_depth(command.model)} (use a larger --image-size or --padding)")
    if args.name is not None and not args.name.strip():
        raise ConfigError("--name must not be empty: it names the parent run and prefixes the fold runs")
    from convscope.train.preflight import preflight

    preflight(command)
    from convscope.analysis.depth import DepthSettings, ablation_variants, default_name, depth_variants
    from convscope.search.sources import run_config, study_config

    if args.ablate:
        trained = to_dict(run_config(command, args.ablate))
        merged = merge({k: v for k, v in trained.items() if k != "preset"}, overrides)
        base = from_dict({**merged, "preset": trained["preset"]})
        mode, source = "ablate", f"run {args.ablate}"
        variants = ablation_variants(base, args.ablate_last)
    else:
        base = command
        if args.from_run:
            trained = to_dict(run_config(command, args.from_run, "--from-run"))
            merged = merge({k: v for k, v in trained.items() if k != "preset"}, overrides)
            base = from_dict({**merged, "preset": trained["preset"]})
            widths, source = base.model.channel_widths(), f"run {args.from_run}"
            if not args.max_depth:
                args.max_depth = min(len(widths) + 1, max_depth(base.model))
        if args.study:
            base, widths, source = study_config(base, args.study, args.storage, overrides)
        elif widths:
            source = "--widths" if given_widths else "the config's widths"
        deepest = args.max_depth or (min(len(widths), max_depth(base.model)) if widths and not args.study
                                     else max_depth(base.model))
        if widths and len(widths) < deepest:  # a study's per-layer widths: go on doubling
            widths = widths + tuple(widths[-1] * 2 ** (i + 1) for i in range(deepest - len(widths)))
        variants = depth_variants(base, deepest, widths)
    from convscope.train.durations import parse_timeout

    timeout = parse_timeout(args.timeout) if args.timeout is not None else None
    return DepthSettings(name=args.name or default_name(mode), variants=variants, folds=args.folds, mode=mode,
                         prune_folds=args.prune_folds, source=source, ablate_run=args.ablate or "", timeout=timeout,
                         epochs_given="epochs" in overrides.get("optim", {}))


def handle_depth(args: argparse.Namespace) -> int:
    settings = build_depth_settings(args)
    from convscope.analysis.depth import run_depth_study
    from convscope.train.interrupts import sigterm_as_interrupt

    with sigterm_as_interrupt():  # SIGTERM: the running fold and the parent end KILLED, as on Ctrl-C
        run_depth_study(settings)
    return 0
