"""``convscope evaluate MODEL --data DIR``: a trained network scored on a folder of photos it never saw,
logged as an MLflow evaluation run linked to the model."""

from __future__ import annotations

import argparse
import datetime
import tempfile
from pathlib import Path
from typing import Any

from convscope.cli.setting_flags import add_store_flags
from convscope.cli.model_source import load_network, model_uri

def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a trained network on a folder of photos it never saw (accuracy with its 95%% interval)",
        description=(
            "Load MODEL (an MLflow run id, a models:/ or runs:/ URI, or a study's name: its registered "
            "champion) and score every photo of --data, a folder with one sub-folder per class. Prints the "
            "accuracy with its 95% interval, per-class accuracy and the confusion matrix, and logs them with "
            "the most confidently wrong photos as an MLflow evaluation run (metric test/accuracy)."
        ),
    )
    parser.add_argument("model", metavar="MODEL", help="run id, models:/NAME@ALIAS, models:/NAME/VERSION, "
                        "runs:/ID/model, or a study name (models:/<study>@champion)")
    parser.add_argument("--data", required=True, help="folder of photos, one sub-folder per class (the model's classes)")
    add_store_flags(parser)
    parser.add_argument("--experiment", default="convscope", help="MLflow experiment of the evaluation run")
    parser.add_argument("--no-log", action="store_true", help="print only: log no evaluation run")
    parser.set_defaults(handler=handle_evaluate)


def handle_evaluate(args: argparse.Namespace) -> int:
    uri = model_uri(args.model)
    root = Path(args.data).expanduser()
    from convscope.train.folders import check_folder

    check_folder(root)
    from convscope.analysis.evaluate import confusion_figure, evaluate_folder, summary_lines, wrong_figure
    from convscope.tracking.stores import resolve_stores

    stores = resolve_stores(args.runs_dir, args.mlflow_uri)
    network = load_network(uri, stores.mlflow_uri)
    evaluation, images = evaluate_folder(network, root)
    for line in summary_lines(evaluation, uri):
        print(line)
    for path, reason in evaluation.skipped[:5]:
        print(f"  skipped {path}: {reason}")
    if len(evaluation.skipped) > 5:
        print(f"  … and {len(evaluation.skipped) - 5} more (listed in the evaluation run's data/skipped_files.csv)")
    if args.no_log:
        return 0
    _log(args, stores, uri, root, evaluation, images, confusion_figure, wrong_figure)
    return 0


def _log(args: argparse.Namespace, stores: Any, uri: str, root: Path, evaluation: Any, images: Any,
         confusion_figure: Any, wrong_figure: Any) -> None:
    import csv

    import matplotlib.pyplot as plt

    from convscope.tracking.faults import store_errors
    from convscope.tracking.lifecycle import open_parent_run, tracked_run

    low, high = evaluation.interval()
    name = f"evaluate-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    source_run = uri.split("/")[1] if uri.startswith("runs:/") else ""
    with store_errors(args.runs_dir, "--runs-dir", server="" if stores.embedded else stores.mlflow_uri):
        tracker = open_parent_run(stores, args.experiment, name, tags={
            "convscope.kind": "evaluation", "convscope.evaluated_model": uri, "convscope.data": str(root),
            **({"convscope.model_run_id": source_run} if source_run else {})})
        with tracked_run(tracker, name):
            tracker.log_params({"model": uri, "data": str(root), "photos": len(evaluation.labels)})
            tracker.log_metrics({"test/accuracy": evaluation.accuracy, "test/accuracy_low95": low,
                                 "test/accuracy_high95": high,
                                 **{f"test/accuracy/{k}": v for k, v in evaluation.per_class().items()}}, step=0)
            for key, figure in (("test_confusion_matrix", confusion_figure(evaluation)),
                                ("test_most_confidently_wrong", wrong_figure(evaluation, images))):
                tracker.log_figure(key, figure)
                plt.close(figure)
            with tempfile.TemporaryDirectory() as tmp:
                predictions = Path(tmp) / "predictions.csv"
                with predictions.open("w", newline="") as handle:
                    writer = csv.writer(handle)
                    writer.writerow(["file", "true", "predicted", *[f"p_{c}" for c in evaluation.class_names]])
                    for i, path in enumerate(evaluation.files):
                        writer.writerow([path, evaluation.class_names[evaluation.labels[i]],
                                         evaluation.class_names[evaluation.predicted[i]],
                                         *[f"{p:.6f}" for p in evaluation.probabilities[i]]])
                tracker.log_file(predictions, "evaluation")
                if evaluation.skipped:
                    skipped = Path(tmp) / "skipped_files.csv"
                    skipped.write_text("file,reason\n" + "".join(f'"{p}",{r}\n' for p, r in evaluation.skipped))
                    tracker.log_file(skipped, "data")
    where = tracker.run_url or f"run {tracker.run_id} in {stores.mlflow_uri}"
    print(f"evaluation run: {where}")
    print("  in it: figures/test_most_confidently_wrong.png (the photos it got most confidently wrong), "
          "figures/test_confusion_matrix.png, evaluation/predictions.csv (every photo's class probabilities)")
