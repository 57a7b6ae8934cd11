"""``convscope compare``: CKA, linear probes and activation statistics across runs, as an MLflow report."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import tempfile
from pathlib import Path
from typing import Any

from convscope.cli.setting_flags import add_store_flags
from convscope.train.errors import ConfigError


def add_compare_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare what the conv layers of several runs learned (CKA, linear probes, statistics)",
        description=(
            "Download the runs' activation artifacts from MLflow and compute linear CKA between every pair "
            "of conv layers (within and across runs), per-layer linear-probe accuracy on the analysis set, "
            "and the activation statistics side by side. The report goes into a new MLflow run."
        ),
    )
    parser.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="MLflow run ids to compare")
    parser.add_argument("--study", help="compare the best trials of this study instead")
    parser.add_argument("--top", type=int, default=3, help="with --study: how many best trials (default: 3)")
    parser.add_argument("--storage", default="", help="the study's storage (default: <runs-dir>/optuna/journal.log)")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds of the linear probes")
    parser.add_argument("--epochs", default="", metavar="LIST",
                        help="the epochs (logged steps, e.g. 0,5,10) whose pictures go side by side (default: "
                        "each run's last; for a single run its first, middle and last)")
    add_store_flags(parser)
    parser.add_argument("--experiment", default="convscope", help="MLflow experiment of the report run")
    parser.set_defaults(handler=handle_compare)


def study_run_ids(runs_dir: Path, study_name: str, storage: str, top: int) -> list[str]:
    import optuna

    from convscope.search.report import best_trials
    from convscope.search.storage import open_storage, resolve_storage

    resolved = resolve_storage(runs_dir, storage)
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(resolved))
    except KeyError:
        raise ConfigError(f"--study {study_name}: no such study in {resolved.url} (see --storage)") from None
    ids = [t.user_attrs["mlflow_run_id"] for t in best_trials(study, top) if "mlflow_run_id" in t.user_attrs]
    if not ids:
        raise ConfigError(f"--study {study_name}: no completed trial with an MLflow run yet")
    return ids


def _side_by_side_to_tensorboard(stores: Any, experiment: str, name: str, pictures: dict[str, Any]) -> None:
    """The side-by-side pictures as one TensorBoard run beside the compared runs."""
    if not pictures:
        return
    from convscope.tracking.tensorboard_sink import TensorBoardTracker

    board = TensorBoardTracker(stores.layout.tensorboard_run(experiment, name))
    try:
        for key, picture in pictures.items():
            board.log_image(f"side_by_side/{key}", picture, step=0)
    finally:
        board.close()


def parse_epochs(text: str) -> list[int] | None:
    """``--epochs 0,5,10`` as steps; None when empty."""
    if not text.strip():
        return None
    try:
        steps = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--epochs {text}: give logged steps as whole numbers, e.g. --epochs 0,5,10") from None
    if not steps or min(steps) < 0:
        raise ConfigError(f"--epochs {text}: give logged steps of 0 or more, e.g. --epochs 0,5,10")
    return steps


def handle_compare(args: argparse.Namespace) -> int:
    epochs = parse_epochs(args.epochs)
    if args.folds < 2:
        raise ConfigError(f"--folds must be at least 2 (got {args.folds})")
    if args.top < 1:
        raise ConfigError(f"--top must be at least 1 (got {args.top})")
    if args.study and args.run_ids:
        raise ConfigError("give RUN_IDs or --study NAME, not both")
    if not args.study and not args.run_ids:
        raise ConfigError("give one or more RUN_IDs, or --study NAME")
    from convscope.tracking.stores import require_runs, resolve_stores

    stores = resolve_stores(args.runs_dir, args.mlflow_uri)
    if args.run_ids:
        require_runs(stores, f"RUN_ID {args.run_ids[0]}")
    from convscope.analysis.compare import compare_runs, load_run_activations
    from convscope.analysis.compare_report import comparison_figures, probe_map_sizes, summary_lines, write_report
    from convscope.analysis.fetch import fetch_run, run_record
    from convscope.analysis.probes import chance_accuracy
    from convscope.analysis.verdicts import Training
    from convscope.tracking.faults import store_errors
    from convscope.tracking.lifecycle import open_parent_run, tracked_run

    if args.study:
        run_ids = study_run_ids(stores.runs_dir, args.study, args.storage, args.top)
    else:
        run_ids = list(dict.fromkeys(args.run_ids))  # each run once, in the order given
    if not run_ids:
        raise ConfigError("give one or more RUN_IDs, or --study NAME")
    with tempfile.TemporaryDirectory(prefix="convscope-compare-") as tmp:
        runs = []
        for index, run_id in enumerate(run_ids):
            try:
                fetched = fetch_run(stores.mlflow_uri, run_id, Path(tmp) / f"run{index}")
                loaded = load_run_activations(fetched.run_id, fetched.name, fetched.activations)
            except ValueError as error:
                raise ConfigError(str(error)) from None
            runs.append(dataclasses.replace(loaded, stats=fetched.stats))
        comparison = compare_runs(runs, folds=args.folds)
        for run in runs:
            record = run_record(stores.mlflow_uri, run.run_id)
            chance = record.val_chance  # the validation split's; older runs: the analysis set's
            if chance is None:
                chance = chance_accuracy(run.labels) if run.labels is not None else 0.5
            comparison.training[run.run_id] = Training(run.name, record.curve, record.val_images, chance)
        figures = comparison_figures(comparison)
        from mlflow import MlflowClient

        from convscope.analysis.side_by_side import probes_problem, run_pictures, side_by_side

        client = MlflowClient(stores.mlflow_uri)
        drawn = [run_pictures(client, run.run_id, epochs, single_run=len(runs) == 1) for run in runs]
        pictures, different_probes = side_by_side(drawn), probes_problem(drawn)
        report_dir = Path(tmp) / "report"
        files = write_report(comparison, report_dir, figures, map_sizes=probe_map_sizes(runs))
        name = f"compare-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"
        with store_errors(args.runs_dir, "--runs-dir", server="" if stores.embedded else stores.mlflow_uri):
            tracker = open_parent_run(stores, args.experiment, name,
                                      tags={"convscope.kind": "compare", "convscope.compared_runs": ",".join(run_ids)})
            with tracked_run(tracker, name):
                # run names, spaced: a param without a break point widens MLflow's image cards past their
                # frame (the ids are in the tag convscope.compared_runs)
                tracker.log_params({"compare.runs": ", ".join(run.name for run in runs), "compare.folds": args.folds})
                for path in files:
                    tracker.log_file(path, "report")
                for key, picture in pictures.items():  # one card per layer in MLflow, one image tag in TensorBoard
                    tracker.log_image(f"side_by_side/{key}", picture, step=0)
            _side_by_side_to_tensorboard(stores, args.experiment, name, pictures)
    for line in summary_lines(comparison):
        print(line)
    if pictures:
        print(f"side by side: {len(pictures)} pictures (side_by_side/feature_maps/convK, side_by_side/saliency)")
    else:
        print("side by side: no pictures, as not every run logged feature maps"
              + (f" at --epochs {args.epochs}" if epochs else ""))
    if different_probes:
        print(f"note: {different_probes}")
    where = tracker.run_url or f"run {tracker.run_id} in {stores.mlflow_uri}"
    print(f"report: {where} (artifacts report/report.html, report/*.csv, report/*.png)")
    return 0
