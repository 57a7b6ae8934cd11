"""What a depth study shows: the table (CSV), accuracy vs depth with error bars, the sentence, an HTML report.

Contract:
- ``Outcome`` holds one variant's per-fold validation accuracies (fold order); ``mean`` and
  ``standard_error`` (sample standard deviation / √folds; 0 for a single fold) are over the
  folds that ran. A pruned variant ran fewer folds and is never recommended.
- ``one_standard_error`` is the rule: the best is the highest mean; the recommendation is the
  variant with the fewest blocks whose mean is at least the best mean minus the best's
  standard error (Breiman et al. 1984; Hastie et al., ESL §7.10).
- ``accuracy_figure`` returns a ``matplotlib.figure.Figure`` that is not registered with
  pyplot (nothing to close).
- ``report_html`` is one self-contained page (figure embedded, no external resources)
  that MLflow's artifact viewer shows inline.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tracking import html_report
from train.config import RunConfig

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TOLERANCE = 1e-9  # accuracies are ratios of counts: equal means must compare equal
COLUMNS = ("variant", "blocks", "widths", "folds", "mean_accuracy", "standard_error", "fold_accuracies", "note")


@dataclass(frozen=True)
class Variant:
    label: str  # "depth 3", "all 5 blocks", "without conv2"
    slug: str  # in run names: d3, full, without-conv2
    config: RunConfig

    @property
    def blocks(self) -> int:
        return self.config.model.depth

    @property
    def widths(self) -> tuple[int, ...]:
        return self.config.model.channel_widths()


@dataclass
class Outcome:
    variant: Variant
    accuracies: list[float] = field(default_factory=list)  # per fold, in fold order
    run_ids: list[str] = field(default_factory=list)
    pruned: bool = False

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies) if self.accuracies else math.nan

    @property
    def standard_error(self) -> float:
        n = len(self.accuracies)
        return statistics.stdev(self.accuracies) / math.sqrt(n) if n > 1 else 0.0


def one_standard_error(means: Sequence[float], errors: Sequence[float], blocks: Sequence[int]) -> tuple[int, int]:
    """(recommended, best) indices: the fewest blocks within one standard error of the best mean.

    Ties for the best go to fewer blocks, then to the earlier index; among equally small
    candidates the higher mean wins. Raises ValueError for no candidates.
    """
    if not means:
        raise ValueError("the one-standard-error rule needs at least one result")
    order = range(len(means))
    best = max(order, key=lambda i: (means[i], -blocks[i], -i))
    threshold = means[best] - errors[best] - TOLERANCE
    recommended = min((i for i in order if means[i] >= threshold), key=lambda i: (blocks[i], -means[i], i))
    return recommended, best


def recommend(outcomes: Sequence[Outcome], mode: str) -> tuple[Outcome, Outcome, str]:
    """(recommended, best, the sentence) among the outcomes that were not pruned."""
    done = [o for o in outcomes if not o.pruned and o.accuracies]
    rec_index, best_index = one_standard_error([o.mean for o in done], [o.standard_error for o in done],
                                               [o.variant.blocks for o in done])
    rec, best = done[rec_index], done[best_index]
    score = f"{best.mean:.3f} ± {best.standard_error:.3f}"
    if mode == "depth":
        text = f"recommended depth: {rec.variant.blocks} — "
        text += (f"within one standard error of the best (depth {best.variant.blocks}, {score})" if rec is not best
                 else f"the best ({score}); no shallower depth is within one standard error")
    else:
        full = outcomes[0]  # the unablated network comes first
        text = (f"recommended: keep all {rec.variant.blocks} blocks — " if rec is full
                else f"recommended: {rec.variant.label} ({rec.variant.blocks} blocks) — ")
        text += (f"within one standard error of the best ({best.variant.label}, {score})" if rec is not best
                 else f"the best ({score})" + ("; removing any block costs more than one standard error"
                                               if rec is full else ""))
    return rec, best, text


def table_rows(outcomes: Sequence[Outcome], rec: Outcome | None, best: Outcome | None) -> list[dict[str, str]]:
    rows = []
    for o in outcomes:
        notes = [word for word, hit in (("recommended", o is rec), ("best", o is best), ("pruned", o.pruned)) if hit]
        rows.append({
            "variant": o.variant.label, "blocks": str(o.variant.blocks),
            "widths": ",".join(map(str, o.variant.widths)), "folds": str(len(o.accuracies)),
            "mean_accuracy": f"{o.mean:.4f}", "standard_error": f"{o.standard_error:.4f}",
            "fold_accuracies": " ".join(f"{a:.4f}" for a in o.accuracies), "note": ", ".join(notes),
        })
    return rows


def table_csv(rows: Sequence[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def report_html(title: str, sentence: str, rows: Sequence[dict[str, str]], figure_png: bytes,
                facts: Sequence[tuple[str, str]]) -> str:
    """The self-contained HTML report (:mod:`tracking.html_report`): ``title``, the recommendation
    ``sentence``, the accuracy figure (PNG bytes, embedded), the table of ``rows`` and ``facts``
    (label, value) about the study's settings."""
    return html_report.page(title, [
        html_report.heading(1, title),
        html_report.paragraph(sentence, "lead"),
        html_report.figure(figure_png, "validation accuracy per variant, mean ± one standard error"),
        html_report.heading(2, "Cross-validated validation accuracy"),
        html_report.table(["variant", "blocks", "widths", "folds", "mean ± SE", "fold accuracies", "note"],
                          [[row["variant"], row["blocks"], row["widths"], row["folds"],
                            f"{row['mean_accuracy']}\u00a0±\u00a0{row['standard_error']}", row["fold_accuracies"],
                            row["note"]] for row in rows]),
        html_report.paragraph("One-standard-error rule: the recommendation is the variant with the fewest blocks "
                              "whose mean is at least the best mean minus the best's standard error (sample "
                              "standard deviation / √folds). A pruned variant ran fewer folds and is never "
                              "recommended.", "muted"),
        html_report.heading(2, "Settings"),
        html_report.table(["setting", "value"], facts, row_headers=True),
    ])


def table_text(rows: Sequence[dict[str, str]]) -> str:
    """The console table: variant, blocks, mean ± SE, folds, note."""
    shown = [(r["variant"], r["blocks"], f"{r['mean_accuracy']} ± {r['standard_error']}", r["folds"], r["note"])
             for r in rows]
    head = ("variant", "blocks", "val accuracy (mean ± SE)", "folds", "")
    widths = [max(len(str(row[i])) for row in [head, *shown]) for i in range(5)]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in [head, *shown])


def accuracy_figure(outcomes: Sequence[Outcome], rec: Outcome | None, best: Outcome | None, mode: str,
                    folds: int) -> Figure:
    """Mean validation accuracy ± one standard error per variant; the 1-SE threshold dashed."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = figure.add_subplot()
    xs = [o.variant.blocks for o in outcomes] if mode == "depth" else list(range(len(outcomes)))
    for x, o in zip(xs, outcomes):
        ax.errorbar([x], [o.mean], yerr=[o.standard_error], fmt="o", capsize=5, markersize=7,
                    color="0.6" if o.pruned else "C0", markerfacecolor="white" if o.pruned else "C0")
    done = [(x, o) for x, o in zip(xs, outcomes) if not o.pruned]
    if mode == "depth" and len(done) > 1:
        ax.plot([x for x, _ in done], [o.mean for _, o in done], color="C0", alpha=0.4)
    if best is not None:
        ax.axhline(best.mean - best.standard_error, color="C3", linestyle="--", linewidth=1,
                   label="best − 1 standard error")
    if rec is not None:
        x = xs[list(outcomes).index(rec)]
        ax.plot([x], [rec.mean], "o", markersize=16, markerfacecolor="none", markeredgecolor="C2",
                markeredgewidth=2, label=f"recommended: {rec.variant.label}")
    ax.set_xticks(xs, [str(x) for x in xs] if mode == "depth" else [o.variant.label for o in outcomes],
                  rotation=0 if mode == "depth" else 30)
    ax.set_xlabel("conv blocks (depth)" if mode == "depth" else "variant")
    ax.set_ylabel(f"validation accuracy (mean ± SE, {folds} folds)")
    ax.set_title("accuracy vs depth" if mode == "depth" else "remove one conv block at a time")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return figure
