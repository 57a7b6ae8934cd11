"""A :class:`analysis.compare.Comparison` as figures, a self-contained HTML report with CSVs, and plain words."""

from __future__ import annotations

import csv
import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from convscope.pictures import html_report
from convscope.analysis.compare import (
    counts,
    ABOVE_CHANCE,
    FEW_SAMPLES,
    FLAT_GAIN,
    MOSTLY_ZERO,
    NEAR_IDENTICAL_CKA,
    CkaResult,
    Comparison,
    RunActivations,
    STAT_ORDER,
)
from convscope.analysis.probes import ProbeCurve
from convscope.analysis.verdicts import describe, problems
from convscope.pictures.stats import noise_not_available

#: run id → layer → (h, w) of its probe maps, for saying why ``act_noise`` is missing.
MapSizes = Mapping[str, Mapping[str, tuple[int, int]]]


def _slugs(c: Comparison) -> dict[str, str]:
    slugs: dict[str, str] = {}
    for i, (run_id, name) in enumerate(c.names.items(), 1):
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "run"
        slugs[run_id] = slug if slug not in slugs.values() else f"{slug}_{i}"
    return slugs


def _heatmap(result: CkaResult, title: str, ylabel: str, xlabel: str) -> Figure:
    width = 2.0 + 0.7 * len(result.cols)
    figure = Figure(figsize=(width, 1.4 + 0.6 * len(result.rows)), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(result.matrix, vmin=0.0, vmax=1.0, cmap="viridis")
    axes.set_xticks(range(len(result.cols)), result.cols, rotation=45 if len(result.cols) > 5 else 0)
    axes.set_yticks(range(len(result.rows)), result.rows)
    for (i, j), value in np.ndenumerate(result.matrix):
        axes.text(j, i, "n/a" if np.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=8,
                  color="black" if value >= 0.6 else "white")
    wrapped = textwrap.fill(title, max(24, int(width * 11)))  # about 11 characters of 9-point text per inch
    axes.set(title=f"{wrapped}\n({result.source}, n = {result.n})", ylabel=ylabel, xlabel=xlabel)
    axes.title.set_fontsize(9)
    figure.colorbar(image, ax=axes, label="linear CKA", shrink=0.8)
    return figure


def _stat_names(c: Comparison) -> list[str]:
    present = {stat for stats in c.stats.values() for stat in stats}
    return [stat for stat in STAT_ORDER if stat in present] + sorted(present - set(STAT_ORDER))


def probe_map_sizes(runs: Sequence[RunActivations]) -> dict[str, dict[str, tuple[int, int]]]:
    """Run id → layer → (h, w) of the run's (P, C, h, w) probe activations (for :func:`write_report`)."""
    return {run.run_id: {layer: (int(t.shape[-2]), int(t.shape[-1])) for layer, t in run.probes.items() if t.dim() >= 3}
            for run in runs}


def _stat_cell(stat: str, value: float | None, size: tuple[int, int] | None) -> str:
    """A table cell: the value, or why it is missing (``n/a (3×3)`` for ``act_noise`` on small maps)."""
    if value is not None:
        return _fmt(value)
    reason = noise_not_available(*size) if stat == "act_noise" and size is not None else None
    return reason or "n/a"


def _layer_axis(axes: object, layer_lists: list[list[str]]) -> None:
    longest = max(layer_lists, key=len, default=[])
    axes.set_xticks(range(1, len(longest) + 1), longest)  # type: ignore[attr-defined]


def comparison_figures(c: Comparison) -> dict[str, Figure]:
    """Pyplot-free figures: ``cka_within_<run>``, ``cka_across_<a>_vs_<b>``, ``linear_probes``
    (if any run has probes) and ``activation_stats`` (if any run has statistics)."""
    slugs, figures = _slugs(c), {}
    for run_id, result in c.within.items():
        figures[f"cka_within_{slugs[run_id]}"] = _heatmap(result, f"CKA within {c.names[run_id]}", "layer", "layer")
    for (a, b), result in c.across.items():
        figures[f"cka_across_{slugs[a]}_vs_{slugs[b]}"] = _heatmap(
            result, f"CKA {c.names[a]} vs {c.names[b]}", c.names[a], c.names[b])
    if c.probes:
        figure = Figure(figsize=(6.4, 3.8), layout="constrained")
        axes = figure.add_subplot()
        for run_id, curve in c.probes.items():
            x = np.arange(1, len(curve.layers) + 1)
            axes.errorbar(x, curve.mean, yerr=curve.std, marker="o", capsize=3, label=c.names[run_id])
        for chance in sorted({round(curve.chance, 3) for curve in c.probes.values()}):
            axes.axhline(chance, linestyle="--", color="grey", label=f"chance {chance:.2f}")
        _layer_axis(axes, [curve.layers for curve in c.probes.values()])
        axes.set(xlabel="layer", ylabel="linear-probe accuracy (CV mean ± std)", ylim=(None, 1.02),
                 title="class information linearly available per layer")
        axes.legend(fontsize=8)
        figures["linear_probes"] = figure
    names = _stat_names(c)
    if names:  # one full-width panel per statistic, stacked: readable at about 700 px
        figure = Figure(figsize=(6.4, 1.0 + 1.9 * len(names)), layout="constrained")
        lists = []
        for axes, stat in zip(figure.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0], names):
            for run_id, stats in c.stats.items():
                layers = [layer for layer in c.within[run_id].rows if layer in stats.get(stat, {})]
                positions = [c.within[run_id].rows.index(layer) + 1 for layer in layers]
                axes.plot(positions, [stats[stat][layer] for layer in layers], marker="o", label=c.names[run_id])
                lists.append(c.within[run_id].rows)
            _layer_axis(axes, lists)
            axes.set(ylabel=stat, ylim=(-0.03, 1.03) if stat == "act_zero_fraction" else (None, None))
            if stat == "act_noise":  # the shuffled-pixel null
                axes.axhline(1.0, linestyle=":", color="grey")
                axes.set_ylim(-0.03, max(1.1, axes.get_ylim()[1]))
            axes.grid(alpha=0.3)
        axes.set_xlabel("layer")
        figure.legend(*axes.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8)
        figures["activation_stats"] = figure
    return figures


def _fmt(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{value:.2f}"


def summary_lines(c: Comparison) -> list[str]:
    """A few plain-language findings (thresholds: the module constants), then the notes. A run whose
    validation record (``c.training``) is missing, or shows it did not learn or was still improving,
    gets one line saying so and no findings: what an unfinished network computes says nothing about
    which of its layers are useful."""
    lines: list[str] = []
    for run_id, result in c.within.items():
        name, m = c.names[run_id], result.matrix
        record = c.training.get(run_id)
        trouble = problems([record], needs_learning=[record]) if record is not None else \
            ["its validation accuracy history is unknown"]
        if trouble:
            lines.append(f"{name}: no verdicts: " + "; ".join(trouble))
            continue
        for i in range(len(result.rows) - 1 if result.n >= FEW_SAMPLES else 0):
            if m[i, i + 1] >= NEAR_IDENTICAL_CKA:
                a, b = result.rows[i], result.rows[i + 1]
                lines.append(f"{name}: {a} and {b} are near-identical (CKA {m[i, i + 1]:.2f}) — {b} adds little")
        curve = c.probes.get(run_id)
        if curve is not None:
            lines.append(f"{name}: {_probe_sentence(curve)}")
        zeros = (c.stats.get(run_id) or {}).get("act_zero_fraction", {})
        silent = [f"{layer} {v:.0%}" for layer, v in zeros.items() if v >= MOSTLY_ZERO]
        if silent:
            lines.append(f"{name}: mostly silent on the probes (share of zeros): {', '.join(silent)}")
    for (a, b), result in c.across.items():
        if any(line.startswith(f"{c.names[r]}: no verdicts: ") for r in (a, b) for line in lines):
            continue
        same = [(result.matrix[result.rows.index(layer), result.cols.index(layer)], layer)
                for layer in result.rows if layer in result.cols]
        if same and result.n >= FEW_SAMPLES:
            (low, low_layer), (high, high_layer) = min(same), max(same)
            lines.append(f"{c.names[a]} vs {c.names[b]}: same-named layers have CKA from {low:.2f} ({low_layer})"
                         f" to {high:.2f} ({high_layer})")
    return lines + [f"note: {note}" for note in c.notes]


def _probe_sentence(curve: ProbeCurve) -> str:
    best = float(curve.mean.max())
    if best - curve.chance <= ABOVE_CHANCE:
        return (f"no layer makes the classes linearly separable above chance "
                f"(best {best:.2f} at {curve.layers[int(curve.mean.argmax())]}, chance {curve.chance:.2f})")
    peak = int(np.argmax(curve.mean >= best - FLAT_GAIN))  # first layer within FLAT_GAIN of the best
    text = (f"linear probe accuracy rises from {curve.mean[0]:.2f} ({curve.layers[0]}) to "
            f"{curve.mean[peak]:.2f} ({curve.layers[peak]})" if peak else
            f"linear probe accuracy is already {curve.mean[0]:.2f} at {curve.layers[0]} (chance {curve.chance:.2f})")
    tail = range(peak + 1, len(curve.layers))
    if tail:
        errors = curve.gain_se if len(curve.gain_se) == len(curve.layers) else np.zeros(len(curve.layers))
        gains = ", ".join(f"{curve.layers[i]} {curve.gain[i]:+.2f} ± {errors[i]:.2f}"
                          + ("" if counts(curve.gain[i], errors[i]) else " (a tie)") for i in tail)
        flat = not any(counts(curve.gain[i], errors[i]) for i in tail)
        text += f", then stays flat ({gains})" if flat else f", then ends at {curve.mean[-1]:.2f} ({gains})"
    return text + f" (probes cross-validated {curve.folds}-fold on {curve.n} analysis images)"


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_report(c: Comparison, folder: Path, figures: Mapping[str, Figure], *,
                 map_sizes: MapSizes | None = None) -> list[Path]:
    """Write ``report.html`` (self-contained: every figure embedded, see :mod:`pictures.html_report`),
    the figures as ``<key>.png``, and ``cka_within.csv``, ``cka_across.csv`` and ``linear_probes.csv``
    (long format, one row per layer / layer pair) into ``folder`` (created). ``map_sizes``
    (:func:`probe_map_sizes`) lets the statistics table say ``n/a (3×3)`` where maps are too small
    for ``act_noise``; without it a missing value reads ``n/a``.
    Returns the written paths: ``report.html``, the three CSVs, then the PNGs."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pngs = {key: html_report.figure_png(figure) for key, figure in figures.items()}
    for key, png in pngs.items():
        (folder / f"{key}.png").write_bytes(png)
    used: set[str] = set()

    def image(key: str, caption: str = "") -> list[str]:
        used.add(key)
        return [html_report.figure(pngs[key], key, caption)] if key in pngs else []

    def matrix(res: CkaResult) -> str:
        return html_report.table(["", *res.cols], [[la, *map(_fmt, row)] for la, row in zip(res.rows, res.matrix)],
                                 row_headers=True)

    slugs, names = _slugs(c), c.names
    body = [html_report.heading(1, "Activation comparison"), html_report.table(
        ["run", "training", "probe epoch", "CKA on", "linear probes"],
        [[html_report.lines(names[r], html_report.code(r)), describe(c.training[r]) if r in c.training else "unknown",
          "—" if c.epochs[r] is None else c.epochs[r],
          f"{c.within[r].source} (n = {c.within[r].n})",
          f"{c.probes[r].n} samples, {c.probes[r].folds}-fold CV" if r in c.probes else "—"] for r in names])]
    body += [html_report.heading(2, "Summary"), html_report.bullets(summary_lines(c))]
    within_rows = [[r, names[r], la, lb, f"{v:.6f}", res.source, res.n]
                   for r, res in c.within.items() for (i, j), v in np.ndenumerate(res.matrix)
                   for la, lb in [(res.rows[i], res.cols[j])]]
    across_rows = [[a, b, la, lb, f"{v:.6f}", res.source, res.n]
                   for (a, b), res in c.across.items() for (i, j), v in np.ndenumerate(res.matrix)
                   for la, lb in [(res.rows[i], res.cols[j])]]
    probe_rows = [[r, names[r], layer, f"{cv.mean[i]:.6f}", f"{cv.std[i]:.6f}", f"{cv.gain[i]:.6f}",
                   "chance" if i == 0 else cv.layers[i - 1], f"{cv.chance:.6f}", cv.n, cv.folds]
                  for r, cv in c.probes.items() for i, layer in enumerate(cv.layers)]
    if c.probes:
        body += [html_report.heading(2, "Linear probes"), html_report.paragraph(
            "Cross-validated accuracy of a standardised, L2-regularised logistic regression on each layer's "
            "channel-pooled activations; gain is over the previous layer (the first layer's over chance)."),
            *image("linear_probes"),
            html_report.table(["run", "layer", "accuracy", "± std", "gain", "over"],
                              [[row[1], row[2], f"{float(row[3]):.3f}", f"{float(row[4]):.3f}",
                                f"{float(row[5]):+.3f}", row[6]] for row in probe_rows])]
    body += [html_report.heading(2, "CKA within runs"), html_report.paragraph(
        "Linear CKA (Kornblith et al., 2019): 1 = same representation up to rotation and scale; a block of "
        "near-1 entries marks layers that add little. Rough on few samples.")]
    for r, res in c.within.items():
        body += [html_report.heading(3, names[r]), *image(f"cka_within_{slugs[r]}"), matrix(res)]
    if c.across:
        body += [html_report.heading(2, "CKA across runs")]
        for (a, b), res in c.across.items():
            body += [html_report.heading(3, f"{names[a]} (rows) vs {names[b]} (columns)"),
                     *image(f"cka_across_{slugs[a]}_vs_{slugs[b]}"), matrix(res)]
    if c.stats:
        stat_names = _stat_names(c)
        body += [html_report.heading(2, "Activation statistics"), *image("activation_stats"), html_report.table(
            ["run", "layer", *stat_names],
            [[names[r], layer, *(_stat_cell(s, st.get(s, {}).get(layer), (map_sizes or {}).get(r, {}).get(layer))
                                 for s in stat_names)]
             for r, st in c.stats.items() for layer in c.within[r].rows])]
    extra = [key for key in pngs if key not in used]
    if extra:
        body += [html_report.heading(2, "Other figures"), *(part for key in extra for part in image(key, key))]
    report = folder / "report.html"
    report.write_text(html_report.page("Activation comparison", body), encoding="utf-8")
    return [report,
            _write_csv(folder / "cka_within.csv", ["run_id", "run", "layer_a", "layer_b", "cka", "source", "n"],
                       within_rows),
            _write_csv(folder / "cka_across.csv", ["run_id_a", "run_id_b", "layer_a", "layer_b", "cka", "source",
                                                   "n"], across_rows),
            _write_csv(folder / "linear_probes.csv", ["run_id", "run", "layer", "accuracy_mean", "accuracy_std",
                                                      "gain", "gain_over", "chance", "n", "folds"], probe_rows),
            *(folder / f"{key}.png" for key in pngs)]
