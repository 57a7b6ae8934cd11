"""``convscope explain RUN_ID``: the three questions answered for one run, as a report inside that run."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import tempfile
from pathlib import Path

from convscope.cli.setting_flags import add_store_flags
from convscope.train.errors import ConfigError

REPORT_FOLDER = "explain"


def add_explain_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="answer what a run's conv layers learned, whether its last layers are useful and how many it needs",
        description=(
            "Read a run back from MLflow and answer three questions with evidence per layer: what the feature "
            "maps show (linear probes, noise against shuffled maps, silent units, saliency), whether the last "
            "layers are useful (probe gain ± SE, CKA with the layer before, the accuracy lost when an ablation "
            "study bypassed them) and how many layers are enough (a depth study on the same data, else the "
            "command to run). Nothing is concluded from a run that did not learn or was still improving. The "
            f"report goes into the run itself ({REPORT_FOLDER}/report.html); a short version is printed."
        ),
    )
    parser.add_argument("run_id", metavar="RUN_ID", help="the MLflow run id of a convscope train or search run")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds of the linear probes")
    add_store_flags(parser)
    parser.set_defaults(handler=handle_explain)


def suggested_commands(run_id: str, timeout: str, store_flags: str = "") -> tuple[str, str]:
    """(depth study, ablation) commands that start from the run itself — its network, data,
    augmentation and every other setting — and answer within ``timeout``."""
    depth = f"convscope depth --from-run {run_id} --timeout {timeout}{store_flags}"
    ablate = f"convscope depth --ablate {run_id} --ablate-last 2 --timeout {timeout}{store_flags}"
    return depth, ablate


def handle_explain(args: argparse.Namespace) -> int:
    if args.folds < 2:
        raise ConfigError(f"--folds must be at least 2 (got {args.folds})")
    from convscope.tracking.stores import require_runs, resolve_stores

    stores = resolve_stores(args.runs_dir, args.mlflow_uri)
    require_runs(stores, f"RUN_ID {args.run_id}")
    from convscope.cli.orphan_runs import end_orphaned_runs

    end_orphaned_runs(stores)
    from convscope.search.sources import run_config
    from convscope.analysis.compare import load_run_activations
    from convscope.analysis.evidence import Ablation, DepthAnswer, drops_from_results, explain, further_drops_from_results
    from convscope.analysis.explain_report import report_html, short_text
    from convscope.analysis.fetch import fetch_run, latest_images, run_record, study_results
    from convscope.tracking.mlflow_sink import attach_to_run
    from convscope.analysis.probes import chance_accuracy
    from convscope.analysis.depth_plan import suggested_timeout
    from convscope.analysis.verdicts import Training
    from convscope.train.geometry import max_depth
    from convscope.train.config import build_config

    uri = stores.mlflow_uri
    try:
        record = run_record(uri, args.run_id)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    config = run_config(build_config("seed", {"tracking": {"runs_dir": args.runs_dir, "mlflow_uri": args.mlflow_uri}}),
                        args.run_id, "RUN_ID")
    with tempfile.TemporaryDirectory(prefix="convscope-explain-") as tmp:
        try:
            fetched = fetch_run(uri, args.run_id, Path(tmp) / "run")
        except ValueError as error:
            raise ConfigError(str(error)) from None
        run = dataclasses.replace(load_run_activations(fetched.run_id, fetched.name, fetched.activations),
                                  stats=fetched.stats)
        labels = run.labels
        chance = record.val_chance  # the validation split's; older runs: the analysis set's
        if chance is None:
            chance = chance_accuracy(labels) if labels is not None else 1.0 / max(config.model.num_classes, 2)
        training = Training(record.name, record.curve, record.val_images or (len(labels) if labels is not None else 0),
                            chance)
        blocks = len(config.model.channel_widths())
        timeout = suggested_timeout(record.seconds, min(blocks + 1, max_depth(config.model)))
        store_flags = (f" --runs-dir {shlex.quote(args.runs_dir)}" if args.runs_dir != "runs" else "") + \
            (f" --mlflow-uri {shlex.quote(args.mlflow_uri)}" if args.mlflow_uri else "")
        depth_command, ablate_command = suggested_commands(args.run_id, timeout, store_flags)
        ablations = study_results(uri, record.experiment_id, "ablate-study", {"depth.ablate_run": args.run_id})
        ablation = None
        if ablations:
            study_id, results = ablations[0]
            ablation = Ablation(results.get("name", study_id), drops_from_results(results), results["sentence"],
                                list(results.get("problems", [])), further_drops_from_results(results))
        depth = None
        for study_id, results in study_results(uri, record.experiment_id, "depth-study"):
            if results.get("data") == config.data.data and results.get("image_size") == config.model.image_size:
                chosen = [v["blocks"] for v in results.get("variants", []) if v.get("recommended")]
                depth = DepthAnswer(results.get("name", study_id), results["sentence"], chosen[0] if chosen else None)
                break
        explanation = explain(run, training, ablation=ablation, depth=depth, depth_command=depth_command,
                              ablate_command=ablate_command, folds=args.folds, head=config.model.head)
        keys = ["saliency", *(f"feature_maps/{layer}" for layer in run.probes)]
        pictures = latest_images(uri, args.run_id, keys, Path(tmp) / "images")
        images = {key: pictures[key].read_bytes() for key in keys if key in pictures}
        report = Path(tmp) / "report.html"
        report.write_text(report_html(explanation, args.run_id, images), encoding="utf-8")
        verdict = "not enough evidence" if explanation.training_problems else "explained"
        attach_to_run(uri, args.run_id, [report], REPORT_FOLDER, {"convscope.explain": verdict})
    print(short_text(explanation))
    where = (f"{stores.ui_url.rstrip('/')}/#/experiments/{record.experiment_id}/runs/{args.run_id}"
             "?workflowType=machine_learning" if stores.ui_url else f"run {args.run_id} in {uri}")
    print(f"report: {where} (artifact {REPORT_FOLDER}/report.html)")
    return 0
