"""An :class:`analysis.evidence.Explanation` as one self-contained HTML page and a short console text."""

from __future__ import annotations

import math
from collections.abc import Mapping

from convscope.pictures import html_report
from convscope.analysis.evidence import Explanation, LayerRow
from convscope.tracking.descriptions import METRIC_DESCRIPTIONS
from convscope.analysis.verdicts import late_gain

QUESTIONS = ("What do the feature maps show?", "Are the last conv layers useful, or just noisy?",
             "How many conv layers are enough?")


def _number(value: float | None, digits: int = 3) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _pm(value: float | None, error: float | None) -> str:
    if value is None or error is None or math.isnan(value):
        return "—"
    return f"{value:+.3f}\u00a0±\u00a0{error:.3f}"


def evidence_table(rows: list[LayerRow]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-layer evidence table."""
    header = ["layer", "maps", "probe accuracy", "probe gain ± SE", "CKA with previous", "noise vs shuffled",
              "silent units", "bypass costs ± SE"]
    body = [[row.layer, f"{row.channels}×{row.size[0]}×{row.size[1]}", _number(row.probe), _pm(row.gain, row.gain_se),
             _number(row.cka_previous, 2), _number(row.noise, 2) if row.noise is not None else row.noise_na,
             "—" if row.zero_fraction is None else f"{row.zero_fraction:.0%}",
             _pm(row.drop, row.drop_se) + (f" (with {row.drop_after} gone)" if row.drop_after else "")]
            for row in rows]
    return header, body


def training_summary(e: Explanation) -> str:
    run = e.training
    gain = late_gain(run)
    trend = "—" if math.isnan(gain) else f"{gain:+.3f} over the last epochs"
    return (f"{run.epochs} epochs, final validation accuracy {_number(run.accuracy)} on {run.images} images "
            f"(chance {run.chance:.3f}); {trend}")


def report_html(e: Explanation, run_id: str, images: Mapping[str, bytes]) -> str:
    """The page: training check, the three answers, the evidence table, the latest pictures, a glossary."""
    header, body = evidence_table(e.rows)
    parts = [html_report.heading(1, f"What {e.run_name} learned"),
             html_report.paragraph(html_report.lines(html_report.code(run_id), training_summary(e)), "muted")]
    if e.training_problems:
        parts.append(html_report.paragraph("Not enough evidence for verdicts: " + "; ".join(e.training_problems),
                                           "warning"))
    for question, answers in zip(QUESTIONS, (e.maps, e.useful, e.depth)):
        parts += [html_report.heading(2, question), html_report.bullets(answers)]
    parts += [html_report.heading(2, "Evidence per layer"), html_report.table(header, body),
              html_report.paragraph(
                  "Probe: cross-validated accuracy of a linear read-out of the layer's channel means on the analysis "
                  "set; its gain is over the previous layer (the first layer's over chance), ± the standard error "
                  "of the per-fold differences. CKA: linear centred kernel alignment with the previous layer (1 = "
                  "the same representation up to rotation and scale). Bypass: accuracy lost when the block is "
                  "replaced by average pooling and a 1x1 convolution and the network retrained, mean ± SE over "
                  "folds (from an ablation study of this run); \"(with convK gone)\": what bypassing the block as well costs, "
                  "when the ablation bypassed it only together with the blocks after it.", "muted")]
    for key, png in images.items():
        parts += [html_report.heading(3, key), html_report.figure(png, key, pixels=True)]
    parts += [html_report.heading(2, "Metric glossary"),
              html_report.table(["metric", "meaning"], [[f"{prefix}/convK", text]
                                                        for prefix, text in METRIC_DESCRIPTIONS.items()])]
    return html_report.page(f"What {e.run_name} learned", parts)


def short_text(e: Explanation) -> str:
    """A few lines for the console: the training check, the evidence table, the last two answers."""
    lines = [f"{e.run_name}: {training_summary(e)}"]
    if e.training_problems:
        lines.append("not enough evidence for verdicts: " + "; ".join(e.training_problems))
    header, body = evidence_table(e.rows)
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    lines += ["  ".join(str(cell).replace("\u00a0", " ").ljust(w) for cell, w in zip(r, widths)).rstrip()
              for r in [header, *body]]
    for question, answers in zip(QUESTIONS[1:], (e.useful, e.depth)):  # the table answers the first
        lines += [question, *(f"  - {answer}" for answer in answers)]
    return "\n".join(lines)
