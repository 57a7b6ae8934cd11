"""``convscope depth``: how many conv blocks are enough, answered by k-fold cross-validation.

For every variant (depth 1 … N, or the trained network with blocks bypassed — one at a
time, or the last 1 … n together) every fold is one ordinary training run (``train.prepared.prepare``/``train.run.train_tracked``)
on the same seeded stratified folds, tracked as an MLflow child run of one parent
run. The parent gets the table, the accuracy-vs-depth figure with error bars and the
one-standard-error recommendation (or why there is none), together in ``depth/report.html``
(``analysis.depth_report``, verdict from ``analysis.depth_verdict``), and every fold's numbers in
``depth/results.json``. With ``prune_folds`` each variant is one Optuna trial
reporting its per-fold accuracy (step = fold), and
``WilcoxonPruner`` stops a variant that is clearly worse than the best so far
(with the default p = 0.1 that takes at least 4 folds).
"""

from __future__ import annotations

import datetime
import json
import sys
import warnings
from contextlib import nullcontext
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import optuna

from convscope.analysis.depth_report import accuracy_figure, report_html, table_csv, table_rows, table_text
from convscope.analysis.depth_verdict import Outcome, Variant, Verdict, drop, recommend
from convscope.tracking.faults import store_errors
from convscope.pictures.html_report import figure_png
from convscope.tracking.lifecycle import open_parent_run, tracked_run
from convscope.tracking.mlflow_sink import MlflowTracker
from convscope.tracking.stores import Stores
from convscope.train.config import flatten
from convscope.train.config_sections import RunConfig
from convscope.train.durations import format_duration
from convscope.train.errors import ConfigError
from convscope.train.model import max_depth as largest_depth
from convscope.train.model import validate
from convscope.train.prepared import Prepared
from convscope.analysis.depth_folds import add_result, prepare_fold, train_fold
from convscope.analysis.depth_plan import Budget
from convscope.analysis.depth_rounds import Rounds, plan, run_rounds


@dataclass(frozen=True)
class DepthSettings:
    name: str  # the parent run's name and the prefix of every fold run
    variants: tuple[Variant, ...]
    folds: int = 5
    mode: str = "depth"  # depth (1 … N blocks) | ablate (blocks bypassed)
    prune_folds: bool = False
    source: str = ""  # where the widths came from, logged with the parent run
    ablate_run: str = ""
    timeout: float | None = None  # seconds: plan epochs and folds to fit, stop when the answer is clear
    epochs_given: bool = False  # with a timeout: keep the variants' epochs instead of planning them


@dataclass
class DepthReport:
    outcomes: list[Outcome]
    verdict: Verdict
    report_dir: Path
    parent_run_id: str | None = None
    parent_url: str | None = None


def depth_variants(base: RunConfig, max_depth: int, widths: Sequence[int] = ()) -> tuple[Variant, ...]:
    """Depth 1 … ``max_depth``: the first d of ``widths``, else ``base``'s base width × growth**i."""
    fits = largest_depth(base.model)
    if max_depth < 1 or max_depth > fits:
        raise ConfigError(f"--max-depth {max_depth}: choose 1 … {fits}, the largest depth that fits "
                          f"{base.model.image_size}x{base.model.image_size} inputs")
    if widths and len(widths) < max_depth:
        raise ConfigError(f"--widths {' '.join(map(str, widths))}: {len(widths)} widths for --max-depth {max_depth}; "
                          "give one width per block of the deepest network")
    variants = []
    for depth in range(1, max_depth + 1):
        model = replace(base.model, depth=depth, widths=tuple(widths[:depth]))
        validate(model)
        variants.append(Variant(f"depth {depth}", f"d{depth}", replace(base, model=model)))
    return tuple(variants)


def ablation_variants(config: RunConfig, last: int = 0) -> tuple[Variant, ...]:
    """The trained network, then the same network with conv1, conv2, … bypassed one at a time — or,
    with ``last``, with its last 1, 2, … ``last`` blocks bypassed together. A bypassed block is a
    :class:`train.model.Bypass`: every other block and the head keep their shapes."""
    widths = config.model.channel_widths()
    count = len(widths)
    if config.model.bypass:
        raise ConfigError("--ablate: the run already bypasses blocks; ablate a run of the full network")
    if count < 2:
        raise ConfigError("--ablate: the run has a single conv block; there is no block to remove")
    if not 0 <= last < count:
        raise ConfigError(f"--ablate-last {last}: choose 1 … {count - 1} (the run has {count} blocks and one must stay)")
    full = replace(config, model=replace(config.model, widths=widths))
    variants = [Variant(f"all {count} blocks", "full", full)]
    removals = [tuple(range(count - n + 1, count + 1)) for n in range(1, last + 1)] if last else \
        [(index,) for index in range(1, count + 1)]
    for blocks in removals:
        model = replace(full.model, bypass=blocks)
        validate(model)
        name = f"conv{blocks[0]}" if len(blocks) == 1 else f"conv{blocks[0]}–conv{blocks[-1]}"
        slug = f"conv{blocks[0]}" if len(blocks) == 1 else f"conv{blocks[0]}-{blocks[-1]}"
        variants.append(Variant(f"without {name}", f"without-{slug}", replace(full, model=model)))
    return tuple(variants)


def default_name(mode: str) -> str:
    return f"{mode}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def run_depth_study(settings: DepthSettings, *, echo: Callable[[str], None] = print) -> DepthReport:
    """Every fold of every variant, then the table, figure and recommendation (printed and logged)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base = settings.variants[0].config
    if settings.folds < 2:
        raise ConfigError(f"--folds must be at least 2 (got {settings.folds})")
    first = _prepare(settings, settings.variants[0], 0)  # bad data or flags fail before any run is opened
    budget = None
    if settings.timeout is not None:
        variants, first, budget = plan(settings.name, settings.folds, settings.variants, first, settings.timeout,
                                       settings.epochs_given, echo)
        settings = replace(settings, variants=variants)
    stores = first.stores
    server = "" if stores.embedded else stores.mlflow_uri
    with store_errors(base.tracking.runs_dir, "--runs-dir", server=server):
        parent = _open_parent(settings, stores) if base.tracking.mlflow else None
        with tracked_run(parent, settings.name) if parent is not None else nullcontext():
            if parent is not None:
                _log_parent_params(settings, parent)
            outcomes, verdict, report_dir = _run_variants(settings, first, stores, parent, echo, budget)
    echo(f"report: {report_dir / 'report.html'}" + (f" and the parent run {parent.run_url or parent.run_id} "
                                                   "(artifacts depth/report.html, depth/depth_table.csv)"
                                                   if parent else ""))
    return DepthReport(outcomes, verdict, report_dir, parent.run_id if parent else None,
                       parent.run_url if parent else None)


def _run_variants(settings: DepthSettings, first: Prepared | None, stores: Stores, parent: MlflowTracker | None,
                  echo: Callable[[str], None], budget: Budget | None = None) -> tuple[list[Outcome], Verdict, Path]:
    """Every fold of every variant (``first``: fold 0 of the first variant, prepared) — or, with a
    budget, the rounds it allows and the answer needs — then the verdict and the report; the
    outcomes, the verdict and the report folder."""
    rounds = None
    if budget is not None:
        outcomes, verdict, rounds = run_rounds(settings.name, settings.folds, settings.variants, settings.mode, first,
                                               budget, parent, echo)
        echo(f"stopped after {rounds.completed} complete round(s) of folds: {rounds.stop}")
    else:
        outcomes = _all_folds(settings, first, parent, echo)
        verdict = recommend(outcomes, settings.mode)
    rows = table_rows(outcomes, verdict, settings.mode)
    echo(table_text(rows))
    echo(verdict.sentence)
    report_dir = stores.layout.depth_report(settings.name)
    _write_report(settings, outcomes, verdict, rows, report_dir, parent, rounds)
    return outcomes, verdict, report_dir


def _all_folds(settings: DepthSettings, first: Prepared | None, parent: MlflowTracker | None,
               echo: Callable[[str], None]) -> list[Outcome]:
    """Every fold of every variant, variant after variant (pruned by ``--prune-folds``)."""
    with warnings.catch_warnings():  # WilcoxonPruner is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        pruner = optuna.pruners.WilcoxonPruner(p_threshold=0.1) if settings.prune_folds else optuna.pruners.NopPruner()
    study = optuna.create_study(direction="maximize", pruner=pruner)
    outcomes: list[Outcome] = []
    for variant in settings.variants:
        outcome = Outcome(variant)
        outcomes.append(outcome)
        trial = study.ask()
        for fold in range(settings.folds):
            prepared = first if first is not None else _prepare(settings, variant, fold)
            first = None
            accuracy = _fold_run(settings, prepared, variant, fold, parent, echo, outcome)
            trial.report(accuracy, fold)
            if fold < settings.folds - 1 and trial.should_prune():
                outcome.pruned = True
                echo(f"{variant.label}: pruned after {fold + 1} folds — clearly worse than the best so far "
                     "(Wilcoxon signed-rank test)")
                break
        if outcome.pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, outcome.mean)
    return outcomes


def _prepare(settings: DepthSettings, variant: Variant, fold: int) -> Prepared:
    return prepare_fold(settings.name, settings.folds, variant, fold)


def _fold_run(settings: DepthSettings, prepared: Prepared, variant: Variant, fold: int,
              parent: MlflowTracker | None, echo: Callable[[str], None], outcome: Outcome) -> float:
    """Train one fold, add its results to ``outcome``; its final validation accuracy."""
    result = train_fold(settings.name, settings.folds, prepared, variant, fold, parent, echo)
    add_result(outcome, result)
    return result.accuracy


def _open_parent(settings: DepthSettings, stores: Stores) -> MlflowTracker:
    base = settings.variants[0].config
    return open_parent_run(
        stores, base.tracking.experiment, settings.name,
        tags={"convscope.kind": f"{settings.mode}-study", **({"depth.ablate_run": settings.ablate_run}
                                                             if settings.ablate_run else {})},
    )


def _log_parent_params(settings: DepthSettings, parent: MlflowTracker) -> None:
    base = settings.variants[0].config
    params = {f"base.{key}": value for key, value in flatten(base).items()
              if not key.startswith(("model.depth", "model.widths", "tracking.run_name"))}
    parent.log_params({
        **params, "depth.mode": settings.mode, "depth.folds": settings.folds,
        "depth.variants": "; ".join(f"{v.label}: {','.join(map(str, v.widths))}" for v in settings.variants),
        "depth.widths_from": settings.source, "depth.prune_folds": settings.prune_folds,
        "depth.timeout": format_duration(settings.timeout) if settings.timeout is not None else "none",
    })


def results_json(settings: DepthSettings, outcomes: Sequence[Outcome], verdict: Verdict) -> str:
    """Every variant's per-fold numbers and the verdict, for other commands (``convscope explain``) to read."""
    full = outcomes[0] if settings.mode == "ablate" else None
    variants = []
    for o in outcomes:
        lost, error = drop(full, o) if full is not None and o is not full else (None, None)
        variants.append({
            "label": o.variant.label, "blocks": o.variant.blocks, "bypass": list(o.variant.config.model.bypass),
            "folds": o.fold_numbers,
            "widths": list(o.variant.widths), "accuracies": o.accuracies, "curves": o.curves, "images": o.images,
            "chance": o.chance, "run_ids": o.run_ids, "pruned": o.pruned, "mean": o.mean,
            "standard_error": o.standard_error, "drop": lost, "drop_standard_error": error,
            "recommended": o is verdict.recommended, "best": o is verdict.best, "tied": o in verdict.tied,
        })
    return json.dumps({"name": settings.name, "mode": settings.mode, "folds": settings.folds,
                       "ablated_run": settings.ablate_run, "data": outcomes[0].variant.config.data.data,
                       "image_size": outcomes[0].variant.config.model.image_size,
                       "sentence": verdict.sentence, "problems": verdict.problems, "variants": variants}, indent=1)


def _write_report(settings: DepthSettings, outcomes: list[Outcome], verdict: Verdict, rows: list[dict[str, str]],
                  report_dir: Path, parent: MlflowTracker | None, rounds: Rounds | None = None) -> None:
    """``report.html``, ``depth_table.csv``, ``results.json``, ``recommendation.txt`` and
    ``accuracy_vs_depth.png`` into ``report_dir``; with a parent run, all but the figure under its
    ``depth/`` artifacts, the figure as ``figures/depth_accuracy_vs_depth.png``, the per-variant
    metrics and the recommendation tags."""
    report_dir.mkdir(parents=True, exist_ok=True)
    title = "Depth study" if settings.mode == "depth" else "Ablation: conv blocks bypassed"
    rec, best = verdict.recommended, verdict.best
    figure = accuracy_figure(outcomes, rec, best, settings.mode, settings.folds)
    png = figure_png(figure)
    facts = [("study", settings.name), ("mode", settings.mode), ("folds", str(settings.folds)),
             ("widths from", settings.source or "—"), ("fold pruning", "on" if settings.prune_folds else "off"),
             *((("ablated run", settings.ablate_run),) if settings.ablate_run else ()),
             *((("time budget", format_duration(settings.timeout)), ("epochs a fold run", str(rounds.epochs)),
                ("complete rounds of folds", str(rounds.completed)), ("stopped", rounds.stop))
               if rounds is not None and settings.timeout is not None else ()),
             *((("parent run", parent.run_id),) if parent is not None else ())]
    files = {
        "report.html": report_html(f"{title}: {settings.name}", verdict, rows, png, facts),
        "depth_table.csv": table_csv(rows),
        "results.json": results_json(settings, outcomes, verdict),
        "recommendation.txt": verdict.sentence + "\n",
    }
    for name, text in files.items():
        (report_dir / name).write_text(text, encoding="utf-8")
    (report_dir / "accuracy_vs_depth.png").write_bytes(png)
    if parent is None:
        return
    try:
        parent.log_figure("depth/accuracy_vs_depth", figure)
        for name in files:
            parent.log_file(report_dir / name, "depth")
        for step, outcome in enumerate(outcomes):
            parent.log_metrics({"cv/mean_accuracy": outcome.mean, "cv/standard_error": outcome.standard_error},
                               step=outcome.variant.blocks if settings.mode == "depth" else step)
        parent.set_tags({"depth.recommended": rec.variant.label if rec else "none",
                         "depth.recommended_blocks": str(rec.variant.blocks) if rec else "none",
                         "depth.best": best.variant.label if best else "none",
                         "depth.recommendation": verdict.sentence[:5000],
                         **({"depth.rounds": str(rounds.completed), "depth.epochs": str(rounds.epochs),
                             "depth.stopped": rounds.stop[:5000]} if rounds is not None else {})})
    except Exception as error:  # the numbers stay in the child runs and the report folder
        print(f"could not log the depth report to MLflow: {error}", file=sys.stderr)
