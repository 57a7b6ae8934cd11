"""``convscope train`` and ``convscope ui``: parsers and handlers.

The top-level ``convscope`` command (``search.cli``) mounts these; ``train``
itself knows nothing about studies.
"""

from __future__ import annotations

import argparse
import sys
import time

from train.cliargs import add_config_arguments, load_config_file, merge, overrides_from_args
from train.config import PRESETS, RunConfig, build_config, to_dict
from train.errors import ConfigError
from train.interrupts import sigterm_as_interrupt
from tracking.stores import mask_secrets

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
    parser.add_argument("--config", metavar="FILE", help="YAML or TOML file of settings; flags override it")
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default=argparse.SUPPRESS,
        help="named starting point: seed = the 5-block reference network (default), tiny = a 3-block net",
    )
    parser.add_argument("--dry-run", action="store_true", help="build the model, print its layer table and exit")
    parser.add_argument("--resume", metavar="DIR", help="continue from a checkpoint folder (runs/checkpoints/…)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    add_config_arguments(parser)
    parser.set_defaults(handler=handle_train)


def resolve_config(args: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    """Preset (or the resumed run's config) ← config file ← flags."""
    file_preset, file_overrides = load_config_file(args.config) if args.config else (None, {})
    file_overrides.pop("search", None)  # a study's search space: not a training setting
    if base is not None:
        base_overrides = {section: values for section, values in to_dict(base).items() if section != "preset"}
        preset = base.preset
    else:
        base_overrides, preset = {}, "seed"
    preset = getattr(args, "preset", None) or file_preset or preset
    return build_config(preset, merge(base_overrides, file_overrides, overrides_from_args(args)))


def handle_train(args: argparse.Namespace) -> int:
    from train.checkpoint import load_checkpoint, resume_tracking
    from train.model import build_model, layer_table, validate

    checkpoint = load_checkpoint(args.resume) if args.resume else None
    config = resolve_config(args, checkpoint.config if checkpoint else None)
    if checkpoint is not None:
        config = resume_tracking(config)  # its saved MLflow URI has no password
    if args.dry_run:
        validate(config.model)
        print(layer_table(build_model(config.model)))
        return 0
    from train.run import run

    with sigterm_as_interrupt():
        result = run(config, progress=not args.quiet, resume=checkpoint, echo=_echo(args.quiet))
    summary = result.final
    print(
        f"finished {result.run_name}: val accuracy {summary.get('val/accuracy', float('nan')):.3f} "
        f"(best {result.best_val_accuracy:.3f}), val loss {summary.get('val/loss', float('nan')):.4f}"
    )
    from tracking.verdicts import Training, problems

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


def _echo(quiet: bool):  # type: ignore[no-untyped-def]
    """What a run prints its lines with: nothing when ``quiet``, and never a password."""
    def echo(line: str) -> None:
        if not quiet:
            print(mask_secrets(line), flush=True)

    return echo


def add_ui_parser(subparsers: argparse._SubParsersAction) -> None:
    from tracking.stores import DEFAULT_MLFLOW_PORT, DEFAULT_TENSORBOARD_PORT, DEFAULT_UI_HOST

    parser = subparsers.add_parser(
        "ui",
        help="start the MLflow UI and TensorBoard on the runs folder",
        description="Start `mlflow ui` and `tensorboard` against the embedded stores and print both URLs.",
    )
    parser.add_argument("--runs-dir", default="runs", help="the runs folder (default: runs)")
    parser.add_argument("--host", default=DEFAULT_UI_HOST, help=f"address to bind (default: {DEFAULT_UI_HOST})")
    parser.add_argument("--mlflow-port", type=int, default=DEFAULT_MLFLOW_PORT, help="MLflow UI port (default: 5000)")
    parser.add_argument(
        "--tensorboard-port", type=int, default=DEFAULT_TENSORBOARD_PORT, help="TensorBoard port (default: 6006)"
    )
    parser.add_argument("--dashboard-port", type=int, default=8080,
                        help="optuna-dashboard port, started when the runs folder holds a study (default: 8080)")
    parser.set_defaults(handler=handle_ui)


def handle_ui(args: argparse.Namespace) -> int:
    from tracking.servers import (
        mlflow_server_command,
        optuna_dashboard_command,
        start_process_group,
        stop_process_group,
        tensorboard_command,
        wait_for_http,
    )
    from tracking.stores import resolve_stores

    stores = resolve_stores(args.runs_dir)
    if not stores.embedded:
        raise ConfigError("MLFLOW_TRACKING_URI points at a server: open that server's own UI instead of `convscope ui`")
    runs = stores.runs_dir
    if not runs.is_dir():
        raise ConfigError(f"--runs-dir {args.runs_dir}: no such folder; train a run first (convscope train)")
    logs = runs / "logs"
    logs.mkdir(exist_ok=True)
    processes = []
    try:
        mlflow_cmd = mlflow_server_command(stores.mlflow_uri, args.host, args.mlflow_port, ui_only=True)
        tensorboard_cmd = tensorboard_command(stores.tensorboard_root, args.host, args.tensorboard_port)
        stores.tensorboard_root.mkdir(parents=True, exist_ok=True)
        processes.append(start_process_group(mlflow_cmd, logs / "mlflow-ui.log"))
        processes.append(start_process_group(tensorboard_cmd, logs / "tensorboard.log"))
        mlflow_url = f"http://{args.host}:{args.mlflow_port}"
        tensorboard_url = f"http://{args.host}:{args.tensorboard_port}"
        journal = runs / "optuna" / "journal.log"
        if journal.is_file():
            processes.append(start_process_group(
                optuna_dashboard_command(journal, args.host, args.dashboard_port), logs / "optuna-dashboard.log"
            ))
        wait_for_http(mlflow_url + "/health", timeout=60, proc=processes[0])
        wait_for_http(tensorboard_url, timeout=60, proc=processes[1])
        print(f"MLflow:      {mlflow_url}/#/experiments?workflowType=machine_learning")
        print(f"TensorBoard: {tensorboard_url}")
        if journal.is_file():
            dashboard_url = f"http://{args.host}:{args.dashboard_port}"
            wait_for_http(dashboard_url, timeout=60, proc=processes[2])
            print(f"Optuna:      {dashboard_url}")
        print("Ctrl-C stops both.", flush=True)
        while all(p.poll() is None for p in processes):
            time.sleep(1)
        print("a UI process exited; see " + str(logs), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for process in processes:
            stop_process_group(process)
