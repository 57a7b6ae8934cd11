"""``convscope train``: train one network, tracked in MLflow and TensorBoard."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from convscope.cli.setting_flags import add_config_flags, add_setting_flags, resolve_config
from convscope.tracking.secrets import mask_secrets
from convscope.train.errors import ConfigError

EXAMPLES = """examples:
  convscope train                                  # seed network on the built-in synthetic data
  convscope train --data PetImages --epochs 12     # a folder with one sub-folder per class
  convscope train --depth 3 --widths 32 64 128 --dropout 0.2 --dry-run
  convscope train --config run.yaml --lr 1e-3      # flags override the file
  convscope ui                                     # browse runs in MLflow and TensorBoard
"""


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train one CNN and log feature maps, saliency and statistics every epoch",
        description=(
            "Train one CNN. Before training and after every epoch, every conv block's feature maps, "
            "saliency maps and activation statistics for fixed probe images go to MLflow and TensorBoard."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_flags(parser, "YAML or TOML file of settings; flags override it")
    parser.add_argument("--dry-run", action="store_true", help="build the model, print its layer table and exit")
    parser.add_argument("--resume", metavar="DIR", help="continue from a checkpoint folder (runs/checkpoints/…)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    add_setting_flags(parser)
    parser.set_defaults(handler=handle_train)


def handle_train(args: argparse.Namespace) -> int:
    from convscope.train.geometry import validate

    checkpoint = None
    if args.resume:
        from convscope.train.checkpoint import load_checkpoint, resume_tracking

        checkpoint = load_checkpoint(args.resume)
        config = resume_tracking(resolve_config(args, checkpoint.config))  # its saved MLflow URI has no password
        check_resumable(args.resume, checkpoint, config)
        if checkpoint.epoch >= config.optim.epochs:
            links = checkpoint.extra.get("links", {})
            where = links.get("mlflow_run_url") or links.get("mlflow_run_id") or str(args.resume)
            print(f"{args.resume}: the run already finished its {checkpoint.epoch} epoch"
                  f"{'' if checkpoint.epoch == 1 else 's'} (--epochs "
                  f"{config.optim.epochs}); its results: {where}. To train it longer, give --epochs "
                  f"{checkpoint.epoch + 5} (or more) with --resume.")
            return 0
    else:
        config = resolve_config(args)  # every flag and the config file checked before torch is imported
    validate(config.model)
    if args.dry_run:  # what needs no data or store: the device and the tracking URI's form
        from convscope.tracking.stores import tracking_uri
        from convscope.train.loop import select_device
        from convscope.train.model import build_model, layer_table

        select_device(config.optim.device)
        if config.tracking.mlflow_uri:
            tracking_uri(config.tracking.mlflow_uri, "--mlflow-uri", check=False)

        print(layer_table(build_model(config.model)))
        return 0
    from convscope.train.preflight import preflight

    preflight(config)
    if config.tracking.mlflow:
        from convscope.cli.orphan_runs import end_orphaned_runs
        from convscope.tracking.stores import resolve_stores

        end_orphaned_runs(resolve_stores(config.tracking.runs_dir, config.tracking.mlflow_uri))
    from convscope.train.interrupts import sigterm_as_interrupt
    from convscope.train.run import run

    with sigterm_as_interrupt():
        result = run(config, progress=not args.quiet, resume=checkpoint, echo=_echo(args.quiet))
    summary = result.final
    print(
        f"finished {result.run_name}: val accuracy {summary.get('val/accuracy', float('nan')):.3f} "
        f"(best {result.best_val_accuracy:.3f}), val loss {summary.get('val/loss', float('nan')):.4f}"
        + (f", flip-TTA accuracy {summary['val/accuracy_tta']:.3f}" if "val/accuracy_tta" in summary else "")
    )
    from convscope.analysis.verdicts import Training, problems

    curve = tuple(epoch["val/accuracy"] for epoch in result.history)
    record = Training(result.run_name, curve, result.val_images, result.chance)
    for line in problems([record], needs_learning=[record]) if curve else []:
        print(f"  note: {line}")
    for key in ("mlflow_run_url", "tensorboard_dir"):
        if key in result.links:
            print(f"  {key.replace('_', ' ')}: {mask_secrets(result.links[key])}")
    if "mlflow_run_id" in result.links and config.tracking.visuals:
        print(f"  what it learned: convscope explain {result.links['mlflow_run_id']}")
    print(f"  checkpoint: {result.checkpoint_dir}")
    if "mlflow_run_url" in result.links and result.links["mlflow_run_url"].startswith("http://127.0.0.1:5000"):
        print("  browse: convscope ui")
    return 0


#: Settings a resumed run must keep: the network its weights fit and the photos it trains and validates on.
RESUME_FIXED = ("model.", "data.data", "data.val_fraction", "data.folds", "data.fold", "data.test_fraction",
                "data.train_limit", "data.synthetic_size", "data.classes", "data.data_seed")


def check_resumable(folder: str, checkpoint: Any, config: Any) -> None:
    """ConfigError naming every setting this command changes that the checkpoint's weights or its
    train/validation split depend on."""
    from convscope.train.config import flatten

    before, after = flatten(checkpoint.config), flatten(config)
    changed = [f"{key.split('.', 1)[1]} {before[key]!r} → {after.get(key)!r}" for key in before
               if key.startswith(RESUME_FIXED) and key not in ("model.in_channels", "model.num_classes")
               and before[key] != after.get(key)]
    if changed:
        raise ConfigError(f"--resume {folder}: this command changes what the run's weights or data split depend on "
                          f"({'; '.join(changed)}); drop those flags to resume, or start a new run without --resume")


def _echo(quiet: bool) -> Callable[[str], None]:
    """What a run prints its lines with: nothing when ``quiet``, and never a password."""
    def echo(line: str) -> None:
        if not quiet:
            print(mask_secrets(line), flush=True)

    return echo
