"""What a depth study shows: the table (CSV), accuracy vs depth with error bars, an HTML report.

Contract:
- ``accuracy_figure`` returns a ``matplotlib.figure.Figure`` that is not registered with
  pyplot (nothing to close).
- ``report_html`` is one self-contained page (figure embedded, no external resources)
  that MLflow's artifact viewer shows inline.
- The verdict itself (the one-standard-error rule, ties, the training checks) is
  :mod:`analysis.depth_verdict`.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from convscope.analysis.depth_verdict import MIN_DIFFERENCE, Outcome, Verdict, drop, tie_band
from convscope.pictures import html_report
from convscope.analysis.verdicts import describe

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLUMNS = ("variant", "blocks", "widths", "folds", "mean_accuracy", "standard_error", "drop_mean",
           "drop_standard_error", "training", "fold_accuracies", "note")


def table_rows(outcomes: Sequence[Outcome], verdict: Verdict, mode: str) -> list[dict[str, str]]:
    full = outcomes[0] if mode == "ablate" else None
    rows = []
    for o in outcomes:
        notes = [word for word, hit in (("recommended", o is verdict.recommended), ("best", o is verdict.best),
                                        ("tie", len(verdict.tied) > 1 and o in verdict.tied),
                                        ("pruned", o.pruned)) if hit]
        lost, error = drop(full, o) if full is not None and o is not full else (math.nan, math.nan)
        rows.append({
            "variant": o.variant.label, "blocks": str(o.variant.blocks),
            "widths": o.variant.widths_text, "folds": str(len(o.accuracies)),
            "mean_accuracy": f"{o.mean:.4f}", "standard_error": f"{o.standard_error:.4f}",
            "drop_mean": "" if math.isnan(lost) else f"{lost:+.4f}",
            "drop_standard_error": "" if math.isnan(error) else f"{error:.4f}",
            "training": describe(o.training) if o.accuracies else "",
            "fold_accuracies": " ".join(f"{a:.4f}" for a in o.accuracies), "note": ", ".join(notes),
        })
    return rows


def table_csv(rows: Sequence[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def report_html(title: str, verdict: Verdict, rows: Sequence[dict[str, str]], figure_png: bytes,
                facts: Sequence[tuple[str, str]]) -> str:
    """The self-contained HTML report (:mod:`pictures.html_report`): ``title``, the verdict's
    sentence, the accuracy figure (PNG bytes, embedded), the table of ``rows`` and ``facts``
    (label, value) about the study's settings."""
    ablation = any(row["drop_mean"] for row in rows)
    head = ["variant", "blocks", "widths", "folds", "mean ± SE", *(["accuracy lost ± SE"] if ablation else []),
            "training", "fold accuracies", "note"]
    body = [[row["variant"], row["blocks"], row["widths"], row["folds"],
             f"{row['mean_accuracy']}\u00a0±\u00a0{row['standard_error']}",
             *([f"{row['drop_mean']}\u00a0±\u00a0{row['drop_standard_error']}" if row["drop_mean"] else "—"]
               if ablation else []),
             row["training"], row["fold_accuracies"], row["note"]] for row in rows]
    return html_report.page(title, [
        html_report.heading(1, title),
        html_report.paragraph(verdict.sentence, "lead" if verdict.recommended is not None else "warning"),
        *([html_report.bullets(verdict.problems)] if len(verdict.problems) > 1 else []),
        html_report.figure(figure_png, "validation accuracy per variant, mean ± one standard error"),
        html_report.heading(2, "Cross-validated validation accuracy"),
        html_report.table(head, body),
        html_report.paragraph(
            "One-standard-error rule: the recommendation is the variant with the fewest blocks (then the fewest "
            "parameters) whose mean is at least the best mean minus the best's standard error (sample standard "
            "deviation / √folds, never below the binomial standard error on all folds' validation images); every "
            "variant in that band is tied with the best. Nothing is recommended unless every variant stopped "
            "improving (validation accuracy flat within noise over the last quarter of the epochs, or all "
            "validation images right) and the best — in an ablation, the full network — learned (above chance by "
            "0.05 and by a one-sided binomial test, p < 0.01). A bypassed block (-) is replaced by average pooling "
            "and a 1x1 convolution to its width, so every other block keeps its shapes; accuracy lost is the full "
            "network's minus the variant's, paired by fold. A pruned variant ran fewer folds and is never "
            "recommended.", "muted"),
        html_report.heading(2, "Settings"),
        html_report.table(["setting", "value"], facts, row_headers=True),
    ])


def table_text(rows: Sequence[dict[str, str]]) -> str:
    """The console table: variant, blocks, mean ± SE, accuracy lost (ablation), folds, training check, note."""
    shown = [(r["variant"], r["blocks"], f"{r['mean_accuracy']} ± {r['standard_error']}",
              f"{r['drop_mean']} ± {r['drop_standard_error']}" if r["drop_mean"] else "", r["folds"], r["training"],
              r["note"]) for r in rows]
    head = ("variant", "blocks", "val accuracy (mean ± SE)", "lost ± SE" if any(r[3] for r in shown) else "",
            "folds", "training", "")
    widths = [max(len(str(row[i])) for row in [head, *shown]) for i in range(len(head))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in [head, *shown])


def accuracy_figure(outcomes: Sequence[Outcome], rec: Outcome | None, best: Outcome | None, mode: str,
                    folds: int) -> Figure:
    """Mean validation accuracy ± one standard error per variant; the edge of the tie band dashed."""
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
        ax.axhline(best.mean - tie_band(best.standard_error), color="C3", linestyle="--", linewidth=1,
                   label=f"tied with the best above this line (1 SE, at least {MIN_DIFFERENCE:.2f})")
    if rec is not None:
        x = xs[list(outcomes).index(rec)]
        ax.plot([x], [rec.mean], "o", markersize=16, markerfacecolor="none", markeredgecolor="C2",
                markeredgewidth=2, label=f"recommended: {rec.variant.label}")
    ax.set_xticks(xs, [str(x) for x in xs] if mode == "depth" else [o.variant.label for o in outcomes],
                  rotation=0 if mode == "depth" else 30)
    ax.set_xlabel("conv blocks (depth)" if mode == "depth" else "variant")
    ax.set_ylabel(f"validation accuracy (mean ± SE, {folds} folds)")
    ax.set_title("accuracy vs depth" if mode == "depth" else "conv blocks bypassed")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return figure
