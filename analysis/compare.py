"""Compare runs' stored activations: CKA between layers, linear probes, statistics.

Input is one activation folder per run in the :mod:`pictures.activations`
format (``epoch_NNNN`` probe pairs and an optional ``analysis`` pair), loaded
with :func:`load_run_activations`. :func:`compare_runs` computes

- within-run linear CKA between every pair of a run's layers, on the pooled
  analysis activations (N samples, channel means) when the run has them, else on
  the flattened last-epoch probe activations (P samples, C·h·w features);
- across-run CKA for every pair of runs on a sample set both share: the analysis
  set when both hold the same samples in the same rows (equal data fingerprint and
  sample-id hash; runs that share the data seed — ``--data-seed``, else ``--seed`` —
  share the set; for older artifacts without those fields, equal labels are the
  check), else the probes when their probe ids are equal; else the pair is skipped
  (a note);
- per-layer linear-probe accuracy on the analysis set (:mod:`analysis.probes`)
  with the gain over the previous layer (the first layer's gain is over chance);
- the per-layer activation statistics, side by side.

:mod:`analysis.compare_report` turns a :class:`Comparison` into figures, a
self-contained HTML report with CSVs, and plain words; the thresholds behind the words are
the module constants below.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from convscope.pictures.activations import LATEST_PROBES, load_activations
from convscope.analysis.cka import cka_matrix, flatten_probe_activations, pooled_activations
from convscope.analysis.probes import ProbeCurve, probe_curve
from convscope.pictures.stats import activation_statistics
from convscope.analysis.verdicts import MIN_DIFFERENCE, Training

#: Adjacent layers with CKA at or above this are "near-identical": the later one adds little.
NEAR_IDENTICAL_CKA = 0.95
#: A probe-accuracy change within ± this counts as flat.
FLAT_GAIN = MIN_DIFFERENCE
#: A gain or a drop counts when it is more than this many standard errors from zero.
SIGNIFICANT_SE = 2.0


def counts(value: float, error: float) -> bool:
    """A gain or drop that is neither within ``FLAT_GAIN`` nor within ``SIGNIFICANT_SE`` errors of zero
    (otherwise a tie with zero)."""
    return abs(value) > FLAT_GAIN and abs(value) > SIGNIFICANT_SE * error
#: The best probe must beat chance by more than this for a layer to "carry" class information.
ABOVE_CHANCE = 0.05
#: A layer whose probe activations are at least this share of zeros is "mostly silent".
MOSTLY_ZERO = 0.9
#: CKA on fewer samples than this gets a caveat (it is biased towards 1 for wide layers).
FEW_SAMPLES = 50
_EPOCH_FILE = re.compile(r"^epoch_(\d+)$")


def _step_of(path: Path) -> int:
    """The epoch recorded in a probe-activation JSON; ValueError naming the file when it has none."""
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))["step"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} records no epoch ('step'): {error}") from None


STAT_ORDER = ("act_zero_fraction", "act_noise", "act_mean")  # a share in [0, 1]; ≥ 0 with 1 = noise-like; a mean


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
    analysis_key: str = ""  # data fingerprint and sample-id hash of the analysis set; empty for older artifacts


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
    activations with :func:`pictures.stats.activation_statistics`. Raises
    ValueError naming ``folder`` when it holds no complete ``epoch_NNNN`` pair.
    """
    folder = Path(folder)
    epochs = [(int(m.group(1)), p) for p in folder.glob("epoch_*.json") if (m := _EPOCH_FILE.match(p.stem))]
    latest = folder / f"{LATEST_PROBES}.json"
    if latest.is_file():  # a run that keeps only its latest epoch's probe activations
        epochs.append((_step_of(latest), latest))
    if not epochs:
        raise ValueError(f"{folder} holds no epoch_NNNN.json/.safetensors (or {LATEST_PROBES}.*) probe activations; "
                         "pass the folder a run's 'activations' artifacts were downloaded to")
    epoch, path = max(epochs)
    probes, meta = load_activations(path)
    analysis, labels, analysis_key = None, None, ""
    if (folder / "analysis.json").is_file():
        analysis, analysis_meta = load_activations(folder / "analysis.json")
        labels = analysis.pop("labels")
        if analysis_meta.get("sample_ids_sha256"):
            analysis_key = f"{analysis_meta.get('data_fingerprint', '')}/{analysis_meta['sample_ids_sha256']}"
    stats = stats_from_metrics(metrics) if metrics is not None else stats_from_metrics(activation_statistics(probes))
    return RunActivations(run_id, name, probes, analysis, labels, stats or None,
                          tuple(str(i) for i in meta.get("probe_ids", [])), epoch, analysis_key)


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
    training: dict[str, Training] = field(default_factory=dict)  # validation records: no verdict on a run without


def _representations(run: RunActivations) -> tuple[dict[str, np.ndarray], str]:
    if run.analysis:
        return pooled_activations(run.analysis), "analysis"
    return flatten_probe_activations(run.probes), "probes"


def _cka(a: dict[str, np.ndarray], b: dict[str, np.ndarray], source: str) -> CkaResult:
    n = next(iter(a.values())).shape[0]
    return CkaResult(list(a), list(b), cka_matrix(a, a if b is a else b), source, n)


def _same_analysis_set(a: RunActivations, b: RunActivations) -> bool:
    """Whether both runs' analysis activations hold the same samples in the same rows: by their
    sample keys when both have one, else (older artifacts) by equal labels."""
    if not (a.analysis and b.analysis and a.labels is not None and b.labels is not None):
        return False
    if a.analysis_key and b.analysis_key:
        return a.analysis_key == b.analysis_key
    return torch.equal(a.labels.cpu(), b.labels.cpu())


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
        if _same_analysis_set(a, b):
            c.across[(a.run_id, b.run_id)] = _cka(pooled_activations(a.analysis), pooled_activations(b.analysis),
                                                  "analysis")
        elif a.probe_ids and a.probe_ids == b.probe_ids:
            c.across[(a.run_id, b.run_id)] = _cka(flatten_probe_activations(a.probes),
                                                  flatten_probe_activations(b.probes), "probes")
        else:
            c.notes.append(f"{a.name} vs {b.name}: no shared sample set (analysis samples and probe ids differ; "
                           "runs trained with the same --data-seed share them); across-run CKA skipped")
    few = [c.names[r] for r, res in c.within.items() if res.n < FEW_SAMPLES]
    few += [f"{c.names[a]} vs {c.names[b]}" for (a, b), res in c.across.items() if res.n < FEW_SAMPLES]
    if few:
        c.notes.append(f"CKA of {', '.join(few)} rests on fewer than {FEW_SAMPLES} samples (probe images): "
                       "biased towards 1 for wide layers, so no similarity claims are drawn from it")
    return c
