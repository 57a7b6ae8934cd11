"""Compare runs' stored activations: CKA between layers, linear probes, statistics.

Input is one activation folder per run in the :mod:`tracking.activations`
format (``epoch_NNNN`` probe pairs and an optional ``analysis`` pair), loaded
with :func:`load_run_activations`. :func:`compare_runs` computes

- within-run linear CKA between every pair of a run's layers, on the pooled
  analysis activations (N samples, channel means) when the run has them, else on
  the flattened last-epoch probe activations (P samples, C·h·w features);
- across-run CKA for every pair of runs on a sample set both share: the analysis
  set when both have one with identical labels (runs of one study share the seed,
  hence the set; the format stores no sample ids, so equal labels are the check),
  else the probes when their probe ids are equal; else the pair is skipped (a note);
- per-layer linear-probe accuracy on the analysis set (:mod:`tracking.probes`)
  with the gain over the previous layer (the first layer's gain is over chance);
- the per-layer activation statistics, side by side.

:func:`comparison_figures`, :func:`write_report` and :func:`summary_lines` turn a
:class:`Comparison` into figures, a Markdown report with CSVs, and plain words.
The thresholds behind the words are the module constants below.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from tracking.activations import load_activations
from tracking.cka import cka_matrix, flatten_probe_activations, pooled_activations
from tracking.probes import ProbeCurve, probe_curve
from tracking.stats import activation_statistics

#: Adjacent layers with CKA at or above this are "near-identical": the later one adds little.
NEAR_IDENTICAL_CKA = 0.95
#: A probe-accuracy change within ± this counts as flat.
FLAT_GAIN = 0.02
#: The best probe must beat chance by more than this for a layer to "carry" class information.
ABOVE_CHANCE = 0.05
#: A layer whose probe activations are at least this share of zeros is "mostly silent".
MOSTLY_ZERO = 0.9
#: CKA on fewer samples than this gets a caveat (it is biased towards 1 for wide layers).
FEW_SAMPLES = 50
_EPOCH_FILE = re.compile(r"^epoch_(\d+)$")
_STAT_ORDER = ("act_zero_fraction", "act_hf_share", "act_mean")  # the first two are shares in [0, 1]


@dataclass
class RunActivations:
    """One run's activations. ``probes``: layer → (P, C, h, w) of the last epoch;
    ``analysis``: layer → (N, C) pooled (no ``labels`` key) or None; ``labels``: the
    analysis set's (N,) labels or None; ``stats``: statistic → layer → value or None."""

    run_id: str
    name: str
    probes: dict[str, Tensor]
    analysis: dict[str, Tensor] | None = None
    labels: Tensor | None = None
    stats: dict[str, dict[str, float]] | None = None
    probe_ids: tuple[str, ...] = ()  # row i of every probe tensor ↔ probe_ids[i]
    epoch: int | None = None  # step of the probe file


def stats_from_metrics(metrics: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """``{"act_zero_fraction/conv1": v, …}`` (as training logs them) → statistic → layer → value."""
    stats: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        stat, _, layer = key.partition("/")
        if stat.startswith("act_") and layer:
            stats.setdefault(stat, {})[layer] = float(value)
    return stats


def load_run_activations(
    run_id: str, name: str, folder: Path, *, metrics: Mapping[str, float] | None = None,
) -> RunActivations:
    """Read a run's activation folder: the highest-epoch probe pair and ``analysis`` if present.

    ``stats`` come from ``metrics`` (flat ``act_*/layer`` keys, e.g. the run's
    logged metrics) when given, else are recomputed from the loaded probe
    activations with :func:`tracking.stats.activation_statistics`. Raises
    ValueError naming ``folder`` when it holds no complete ``epoch_NNNN`` pair.
    """
    folder = Path(folder)
    epochs = [(int(m.group(1)), p) for p in folder.glob("epoch_*.json") if (m := _EPOCH_FILE.match(p.stem))]
    if not epochs:
        raise ValueError(f"{folder} holds no epoch_NNNN.json/.safetensors probe activations; "
                         "pass the folder a run's 'activations' artifacts were downloaded to")
    epoch, path = max(epochs)
    probes, meta = load_activations(path)
    analysis, labels = None, None
    if (folder / "analysis.json").is_file():
        analysis, _ = load_activations(folder / "analysis.json")
        labels = analysis.pop("labels")
    stats = stats_from_metrics(metrics) if metrics is not None else stats_from_metrics(activation_statistics(probes))
    return RunActivations(run_id, name, probes, analysis, labels, stats or None,
                          tuple(str(i) for i in meta.get("probe_ids", [])), epoch)


@dataclass
class CkaResult:
    """CKA of ``rows`` layers (one run) against ``cols`` layers, on ``n`` samples of ``source``."""

    rows: list[str]
    cols: list[str]
    matrix: np.ndarray  # (len(rows), len(cols))
    source: str  # "analysis" (pooled) or "probes" (flattened)
    n: int


@dataclass
class Comparison:
    """Everything :func:`compare_runs` found, keyed by run id (in input order)."""

    names: dict[str, str]
    epochs: dict[str, int | None]
    within: dict[str, CkaResult] = field(default_factory=dict)
    across: dict[tuple[str, str], CkaResult] = field(default_factory=dict)
    probes: dict[str, ProbeCurve] = field(default_factory=dict)
    stats: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _representations(run: RunActivations) -> tuple[dict[str, np.ndarray], str]:
    if run.analysis:
        return pooled_activations(run.analysis), "analysis"
    return flatten_probe_activations(run.probes), "probes"


def _cka(a: dict[str, np.ndarray], b: dict[str, np.ndarray], source: str) -> CkaResult:
    n = next(iter(a.values())).shape[0]
    return CkaResult(list(a), list(b), cka_matrix(a, a if b is a else b), source, n)


def compare_runs(runs: Sequence[RunActivations], *, folds: int = 5, seed: int = 0) -> Comparison:
    """Within-run and across-run CKA, linear probes and statistics of ``runs`` (see the module docstring).

    Run ids must be unique. Runs without an analysis set get no probe curve;
    pairs without a shared sample set get no across-run matrix; both leave a note.
    """
    if not runs:
        raise ValueError("compare_runs needs at least one run")
    ids = [run.run_id for run in runs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"run ids must be unique, got {ids}")
    c = Comparison({run.run_id: run.name for run in runs}, {run.run_id: run.epoch for run in runs})
    for run in runs:
        reps, source = _representations(run)
        c.within[run.run_id] = _cka(reps, reps, source)
        if run.analysis and run.labels is not None:
            c.probes[run.run_id] = probe_curve(pooled_activations(run.analysis), run.labels, folds=folds, seed=seed)
        else:
            c.notes.append(f"{run.name}: no analysis set, so no linear probes (probe images are too few)")
        if run.stats:
            c.stats[run.run_id] = run.stats
    for a, b in combinations(runs, 2):
        if a.analysis and b.analysis and a.labels is not None and b.labels is not None \
                and torch.equal(a.labels.cpu(), b.labels.cpu()):
            c.across[(a.run_id, b.run_id)] = _cka(pooled_activations(a.analysis), pooled_activations(b.analysis),
                                                  "analysis")
        elif a.probe_ids and a.probe_ids == b.probe_ids:
            c.across[(a.run_id, b.run_id)] = _cka(flatten_probe_activations(a.probes),
                                                  flatten_probe_activations(b.probes), "probes")
        else:
            c.notes.append(f"{a.name} vs {b.name}: no shared sample set (analysis labels and probe ids differ); "
                           "across-run CKA skipped")
    few = [c.names[r] for r, res in c.within.items() if res.n < FEW_SAMPLES]
    few += [f"{c.names[a]} vs {c.names[b]}" for (a, b), res in c.across.items() if res.n < FEW_SAMPLES]
    if few:
        c.notes.append(f"CKA of {', '.join(few)} rests on fewer than {FEW_SAMPLES} samples (probe images): "
                       "biased towards 1 for wide layers, so no similarity claims are drawn from it")
    return c


def _slugs(c: Comparison) -> dict[str, str]:
    slugs: dict[str, str] = {}
    for i, (run_id, name) in enumerate(c.names.items(), 1):
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "run"
        slugs[run_id] = slug if slug not in slugs.values() else f"{slug}_{i}"
    return slugs


def _heatmap(result: CkaResult, title: str, ylabel: str, xlabel: str) -> Figure:
    figure = Figure(figsize=(2.0 + 0.7 * len(result.cols), 1.4 + 0.6 * len(result.rows)), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(result.matrix, vmin=0.0, vmax=1.0, cmap="viridis")
    axes.set_xticks(range(len(result.cols)), result.cols, rotation=45 if len(result.cols) > 5 else 0)
    axes.set_yticks(range(len(result.rows)), result.rows)
    for (i, j), value in np.ndenumerate(result.matrix):
        axes.text(j, i, "n/a" if np.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=8,
                  color="black" if value >= 0.6 else "white")
    axes.set(title=f"{title}\n({result.source}, n = {result.n})", ylabel=ylabel, xlabel=xlabel)
    axes.title.set_fontsize(9)
    figure.colorbar(image, ax=axes, label="linear CKA", shrink=0.8)
    return figure


def _stat_names(c: Comparison) -> list[str]:
    present = {stat for stats in c.stats.values() for stat in stats}
    return [stat for stat in _STAT_ORDER if stat in present] + sorted(present - set(_STAT_ORDER))


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
    if names:
        figure = Figure(figsize=(3.6 * len(names), 3.4), layout="constrained")
        lists = []
        for axes, stat in zip(figure.subplots(1, len(names), squeeze=False)[0], names):
            for run_id, stats in c.stats.items():
                layers = [layer for layer in c.within[run_id].rows if layer in stats.get(stat, {})]
                positions = [c.within[run_id].rows.index(layer) + 1 for layer in layers]
                axes.plot(positions, [stats[stat][layer] for layer in layers], marker="o", label=c.names[run_id])
                lists.append(c.within[run_id].rows)
            _layer_axis(axes, lists)
            axes.set(title=stat, xlabel="layer", ylim=(-0.03, 1.03) if stat in _STAT_ORDER[:2] else (None, None))
        axes.legend(fontsize=8)
        figures["activation_stats"] = figure
    return figures


def _fmt(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{value:.2f}"


def summary_lines(c: Comparison) -> list[str]:
    """A few plain-language findings (thresholds: the module constants), then the notes."""
    lines: list[str] = []
    for run_id, result in c.within.items():
        name, m = c.names[run_id], result.matrix
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
        gains = ", ".join(f"{curve.layers[i]} {curve.gain[i]:+.2f}" for i in tail)
        flat = all(curve.mean[i] >= curve.mean[peak] - FLAT_GAIN for i in tail)
        text += f", then stays flat ({gains})" if flat else f", then ends at {curve.mean[-1]:.2f} ({gains})"
    return text


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    return [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}",
            *(f"| {' | '.join(str(cell) for cell in row)} |" for row in rows), ""]


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_report(c: Comparison, folder: Path, figures: Mapping[str, Figure]) -> list[Path]:
    """Write ``report.md`` (Markdown; the figures as ``<key>.png`` beside it), ``cka_within.csv``,
    ``cka_across.csv`` and ``linear_probes.csv`` (long format, one row per layer / layer pair)
    into ``folder`` (created). Returns the written paths, ``report.md`` first."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pngs = {key: folder / f"{key}.png" for key in figures}
    for key, figure in figures.items():
        figure.savefig(pngs[key], dpi=110)
    used: set[str] = set()

    def image(key: str) -> list[str]:
        used.add(key)
        return [f"![{key}]({key}.png)", ""] if key in figures else []

    slugs, names = _slugs(c), c.names
    md = ["# Activation comparison", "", *_table(
        ["run", "run id", "probe epoch", "CKA on", "linear probes"],
        [[names[r], f"`{r}`", c.epochs[r], f"{c.within[r].source} (n = {c.within[r].n})",
          f"{c.probes[r].n} samples, {c.probes[r].folds}-fold CV" if r in c.probes else "—"] for r in names])]
    md += ["## Summary", "", *(f"- {line}" for line in summary_lines(c)), ""]
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
        md += ["## Linear probes", "", "Cross-validated accuracy of a standardised, L2-regularised logistic "
               "regression on each layer's channel-pooled activations; gain is over the previous layer "
               "(the first layer's over chance).", "", *image("linear_probes"),
               *_table(["run", "layer", "accuracy", "± std", "gain", "over"],
                       [[row[1], row[2], f"{float(row[3]):.3f}", f"{float(row[4]):.3f}", f"{float(row[5]):+.3f}",
                         row[6]] for row in probe_rows])]
    md += ["## CKA within runs", "", "Linear CKA (Kornblith et al., 2019): 1 = same representation up to "
           "rotation and scale; a block of near-1 entries marks layers that add little. Rough on few samples.", ""]
    for r, res in c.within.items():
        md += [f"### {names[r]}", "", *image(f"cka_within_{slugs[r]}"),
               *_table(["", *res.cols], [[la, *map(_fmt, row)] for la, row in zip(res.rows, res.matrix)])]
    if c.across:
        md += ["## CKA across runs", ""]
        for (a, b), res in c.across.items():
            md += [f"### {names[a]} (rows) vs {names[b]} (columns)", "", *image(f"cka_across_{slugs[a]}_vs_{slugs[b]}"),
                   *_table(["", *res.cols], [[la, *map(_fmt, row)] for la, row in zip(res.rows, res.matrix)])]
    if c.stats:
        stat_names = _stat_names(c)
        md += ["## Activation statistics", "", *image("activation_stats"), *_table(
            ["run", "layer", *stat_names],
            [[names[r], layer, *(_fmt(st.get(s, {}).get(layer, float("nan"))) for s in stat_names)]
             for r, st in c.stats.items() for layer in c.within[r].rows])]
    extra = [key for key in figures if key not in used]
    if extra:
        md += ["## Other figures", "", *(line for key in extra for line in image(key))]
    report = folder / "report.md"
    report.write_text("\n".join(md), encoding="utf-8")
    return [report,
            _write_csv(folder / "cka_within.csv", ["run_id", "run", "layer_a", "layer_b", "cka", "source", "n"],
                       within_rows),
            _write_csv(folder / "cka_across.csv", ["run_id_a", "run_id_b", "layer_a", "layer_b", "cka", "source",
                                                   "n"], across_rows),
            _write_csv(folder / "linear_probes.csv", ["run_id", "run", "layer", "accuracy_mean", "accuracy_std",
                                                      "gain", "gain_over", "chance", "n", "folds"], probe_rows),
            *pngs.values()]
