"""One run's answers to the three questions, with the evidence per layer side by side.

Input: a run's activations (:class:`analysis.compare.RunActivations`), its training record
(:class:`analysis.verdicts.Training`), and, where they exist, an ablation of the run (accuracy
lost when a block is bypassed, mean ± SE over folds) and a depth study on the same data.
:func:`explain` returns an :class:`Explanation`:

- ``rows``: per layer — map size, linear-probe accuracy, its gain over the previous layer
  ± the paired standard error, linear CKA to the previous layer (analysis set), the noise
  measure against its shuffled null (or why it is n/a), the share of silent units and the
  ablation drop ± SE;
- ``maps``, ``useful``, ``depth``: plain sentences answering "what do the maps show", "are
  the last layers useful", "how many layers suffice". Where the evidence is weak — the run
  did not learn or was still improving, no analysis set, no ablation, no depth study — they
  say so, and what to run, instead of a verdict.

A gain (or a drop) *counts* when it exceeds both ``FLAT_GAIN`` and ``SIGNIFICANT_SE`` of its
standard errors; otherwise it is a tie with zero, and called one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from convscope.analysis.cka import linear_cka, pooled_activations
from convscope.analysis.compare import FLAT_GAIN, SIGNIFICANT_SE, RunActivations, counts
from convscope.analysis.probes import ProbeCurve, probe_curve
from convscope.pictures.stats import noise_not_available
from convscope.analysis.depth_verdict import paired_difference
from convscope.analysis.verdicts import Training, problems

#: Maps whose noise measure (1 = as rough as their own pixels shuffled) is at least this look noisy.
NOISY = 0.8
#: The question about "the last layers" looks at this many final blocks.
LAST_LAYERS = 2


@dataclass
class LayerRow:
    layer: str
    size: tuple[int, int]  # (h, w) of its maps
    channels: int
    probe: float = math.nan  # linear-probe accuracy (CV mean)
    gain: float = math.nan  # over the previous layer (the first: over chance)
    gain_se: float = math.nan
    cka_previous: float = math.nan  # linear CKA with the previous layer on the analysis set
    noise: float | None = None  # act_noise: 1 = as rough as its own pixels shuffled
    noise_na: str = ""  # why there is no noise value, e.g. "n/a (3×3)"
    zero_fraction: float | None = None
    drop: float | None = None  # accuracy lost when the block is bypassed (ablation), mean over folds
    drop_se: float | None = None
    drop_after: str = ""  # the blocks already bypassed when ``drop`` was measured (a last-blocks ablation)


@dataclass
class Ablation:
    """What an ablation study of this run measured: layer → (drop, SE), and its own verdict.
    ``further``: layer → (drop, SE, blocks already bypassed) for a block that was only bypassed
    together with the blocks after it (``further_drops_from_results``)."""

    name: str
    drops: dict[str, tuple[float, float]]
    sentence: str
    problems: list[str] = field(default_factory=list)
    further: dict[str, tuple[float, float, str]] = field(default_factory=dict)


@dataclass
class DepthAnswer:
    """A depth study on this run's data: its name, verdict sentence and the depth it recommended (None: none)."""

    name: str
    sentence: str
    blocks: int | None


@dataclass
class Explanation:
    run_name: str
    training: Training
    training_problems: list[str]
    rows: list[LayerRow]
    curve: ProbeCurve | None
    maps: list[str]
    useful: list[str]
    depth: list[str]


def _signed(value: float, error: float) -> str:
    return f"{value:+.3f} ± {error:.3f}"


def layer_rows(run: RunActivations, curve: ProbeCurve | None, ablation: Ablation | None) -> list[LayerRow]:
    """The evidence table (see the module docstring); CKA needs the analysis set."""
    pooled = pooled_activations(run.analysis) if run.analysis else {}
    stats = run.stats or {}
    rows = []
    for index, (layer, tensor) in enumerate(run.probes.items()):
        h, w = (int(tensor.shape[-2]), int(tensor.shape[-1])) if tensor.dim() >= 4 else (1, 1)
        row = LayerRow(layer, (h, w), int(tensor.shape[1]))
        if curve is not None and layer in curve.layers:
            i = curve.layers.index(layer)
            row.probe, row.gain, row.gain_se = float(curve.mean[i]), float(curve.gain[i]), float(curve.gain_se[i])
        previous = list(run.probes)[index - 1] if index else None
        if previous is not None and layer in pooled and previous in pooled:
            row.cka_previous = linear_cka(pooled[previous], pooled[layer])
        row.noise = stats.get("act_noise", {}).get(layer)
        if row.noise is None:
            row.noise_na = noise_not_available(h, w) or "n/a (no textured maps)"
        row.zero_fraction = stats.get("act_zero_fraction", {}).get(layer)
        if ablation is not None and layer in ablation.drops:
            row.drop, row.drop_se = ablation.drops[layer]
        elif ablation is not None and layer in ablation.further:
            row.drop, row.drop_se, row.drop_after = ablation.further[layer]
        rows.append(row)
    return rows


def explain(run: RunActivations, training: Training, *, ablation: Ablation | None = None,
            depth: DepthAnswer | None = None, depth_command: str = "", ablate_command: str = "",
            folds: int = 5, head: str = "flatten") -> Explanation:
    """The three answers for one run (see the module docstring)."""
    curve = None
    if run.analysis and run.labels is not None:
        curve = probe_curve(pooled_activations(run.analysis), run.labels, folds=folds)
    rows = layer_rows(run, curve, ablation)
    trouble = problems([training], needs_learning=[training])
    answers = _depth(depth, depth_command)
    difference = _difference(depth, ablation, head) if not trouble else None
    if difference:
        answers.append(difference)
    return Explanation(run.name, training, trouble, rows, curve, _maps(rows, curve, trouble),
                       _useful(rows, curve, trouble, ablation, ablate_command), answers)


def _maps(rows: Sequence[LayerRow], curve: ProbeCurve | None, trouble: Sequence[str]) -> list[str]:
    lines = []
    if trouble:
        lines.append("not enough evidence about what the maps mean: " + "; ".join(trouble)
                     + ". The pictures show what an unfinished network computes.")
    for row in rows:
        parts = [f"{row.layer} ({row.channels} channels of {row.size[0]}×{row.size[1]})"]
        if not math.isnan(row.probe) and curve is not None:
            i = curve.layers.index(row.layer)
            spread = float(curve.std[i]) / math.sqrt(max(curve.folds, 1))
            parts.append(f"classes linearly readable at {row.probe:.3f} ± {spread:.3f} (a linear probe, "
                         f"{curve.folds}-fold on {curve.n} analysis images; gain {_signed(row.gain, row.gain_se)})")
        if row.noise is not None:
            look = "noise-like" if row.noise >= NOISY else "smoother than noise" if row.noise <= 0.5 else "partly rough"
            parts.append(f"maps {look} (noise {row.noise:.2f}; 1 = as rough as its own pixels shuffled)")
        else:
            parts.append(f"noise {row.noise_na}: too small to call smooth or noisy")
        if row.zero_fraction is not None:
            parts.append(f"{row.zero_fraction:.0%} of units silent on the probes")
        lines.append(", ".join(parts))
    if curve is None:
        lines.append("no analysis set, so no linear probes: train with the per-epoch visuals on")
    lines.append("saliency (below), for one probe per class: the gradient of the class score with respect to the "
                 "input pixels, and Grad-CAM per layer — where in the image each layer finds its class evidence")
    return lines


def _useful(rows: Sequence[LayerRow], curve: ProbeCurve | None, trouble: Sequence[str], ablation: Ablation | None,
            ablate_command: str) -> list[str]:
    if trouble:
        return ["not enough evidence: " + "; ".join(trouble) + ". Whether a layer is useful can only be judged "
                "in a network that learned and stopped improving."]
    lines = []
    for row in rows[-LAST_LAYERS:] if len(rows) > 1 else rows:
        parts = []
        if not math.isnan(row.gain):
            parts.append(f"adds class information (probe gain {_signed(row.gain, row.gain_se)})"
                         if counts(row.gain, row.gain_se) and row.gain > 0 else
                         f"adds no linearly readable class information beyond the layer before (probe gain "
                         f"{_signed(row.gain, row.gain_se)}, a tie with zero)")
        if not math.isnan(row.cka_previous):
            parts.append(f"CKA {row.cka_previous:.2f} with the layer before")
        if row.drop is not None and row.drop_se is not None:
            cost = (f"bypassing it as well as {row.drop_after} costs {_signed(row.drop, row.drop_se)} more accuracy"
                    if row.drop_after else f"bypassing it costs {_signed(row.drop, row.drop_se)} accuracy")
            parts.append(cost + (
                " in an ablation that gives no verdict" if ablation is not None and ablation.problems else
                " — the network needs it" if counts(row.drop, row.drop_se) and row.drop > 0 else
                f" — under the {FLAT_GAIN:.3f} that counts (a tie)" if row.drop > SIGNIFICANT_SE * row.drop_se else
                " — nothing measurable (a tie)"))
        parts.append(f"its maps are {'noise-like' if row.noise >= NOISY else 'not noise-like'} (noise {row.noise:.2f})"
                     if row.noise is not None else f"noise {row.noise_na}: a {row.size[0]}×{row.size[1]} map is "
                     "too small to look smooth or noisy, so its look says nothing about its use")
        lines.append(f"{row.layer}: " + "; ".join(parts))
    looks = {row.layer: f"noise {row.noise:.2f}" for row in rows if row.noise is not None and row.noise >= NOISY}
    used = [f"{row.layer} ({looks[row.layer]})" for row in rows if row.layer in looks and not math.isnan(row.gain)
            and row.gain > 0 and counts(row.gain, row.gain_se)]
    if used:
        lines.append(f"looking noisy is not being useless: {', '.join(used)} {'adds' if len(used) == 1 else 'add'} "
                     "class information a linear read-out uses")
    if curve is None:
        lines.append("not enough evidence from probes: the run has no analysis set")
    if ablation is None:
        lines.append("no ablation of this run yet: " + (ablate_command or "run convscope depth --ablate RUN_ID")
                     + " measures what bypassing the last blocks costs")
    elif ablation.problems:
        lines.append(f"the ablation {ablation.name} gives no verdict: " + "; ".join(ablation.problems))
    else:
        lines.append(f"ablation {ablation.name}: {ablation.sentence}")
    return lines


def _depth(depth: DepthAnswer | None, command: str) -> list[str]:
    """The depth study's own sentence (what to run included, when it has no answer), else the command
    that answers."""
    if depth is None:
        return ["no depth study on this data yet: " + (command or "run convscope depth") + " answers it "
                "(k-fold cross-validation per depth, one-standard-error rule)"]
    return [f"depth study {depth.name}: {depth.sentence}"]


def _first_block(key: str) -> int:
    """1-based index of the first block a drop key names (``conv4`` or ``conv4–conv5``)."""
    digits = key.split("–")[0].removeprefix("conv")
    return int(digits) if digits.isdigit() else 0


def _difference(depth: DepthAnswer | None, ablation: Ablation | None, head: str) -> str | None:
    """A sentence when the depth study says fewer blocks suffice while the ablation says bypassing blocks
    past that depth costs accuracy beyond noise — and why two such answers can both be right."""
    if depth is None or depth.blocks is None or ablation is None or ablation.problems:
        return None
    costly = [key for key, (lost, error) in ablation.drops.items()
              if _first_block(key) > depth.blocks and lost > 0 and counts(lost, error)]
    if not costly:
        return None
    k = depth.blocks
    kept = _first_block(costly[0]) - 1  # the last block the bypassed network keeps
    if head == "flatten":
        why = (f"the bypassed blocks average-pool conv{kept}'s maps down to the last block's map size, so the head "
               f"sees less of where things are, while the {k}-block network's head reads conv{k}'s maps whole")
    elif kept == k:
        why = (f"both read conv{k}'s maps averaged, the bypassed network through extra linear layers, so they can "
               "compute the same: the difference comes from how the two train")
    else:
        why = (f"the bypassed network reads conv{kept}'s maps averaged through extra linear layers, the {k}-block "
               f"network conv{k}'s directly: two different networks, and the difference comes from how they train")
    them = "it" if len(costly) == 1 and "–" not in costly[0] else "them"
    return (f"the two answers differ: bypassing {', '.join(costly)} in this network (retrained with {them} bypassed) "
            f"loses accuracy beyond noise, while a {k}-block network is as good within noise, because {why}")


def drops_from_results(results: Mapping[str, object]) -> dict[str, tuple[float, float]]:
    """Layer → (drop, SE) from an ablation's ``results.json``: single-block variants name their block;
    the last-n variants are keyed ``convA–convB``."""
    drops: dict[str, tuple[float, float]] = {}
    for variant in results.get("variants", []):  # type: ignore[union-attr]
        bypass, lost, error = variant.get("bypass") or [], variant.get("drop"), variant.get("drop_standard_error")
        if bypass and lost is not None and error is not None and np.isfinite(lost):
            key = f"conv{bypass[0]}" if len(bypass) == 1 else f"conv{bypass[0]}–conv{bypass[-1]}"
            drops[key] = (float(lost), float(error))
    return drops


def further_drops_from_results(results: Mapping[str, object]) -> dict[str, tuple[float, float, str]]:
    """Layer → (drop, SE, blocks already bypassed) from a last-blocks ablation's ``results.json``: where
    one variant bypasses block k and the blocks after it and another only the blocks after it, what
    bypassing block k as well costs, paired by fold (results written without fold numbers: none)."""
    variants = [v for v in results.get("variants", []) if v.get("bypass") and v.get("folds")]  # type: ignore[union-attr]
    by_blocks = {tuple(v["bypass"]): v for v in variants}
    further: dict[str, tuple[float, float, str]] = {}
    for blocks, wider in by_blocks.items():
        narrower = by_blocks.get(blocks[1:])
        if narrower is None:
            continue
        if len(set(narrower["folds"]) & set(wider["folds"])) >= 2:  # one pair has no standard error
            lost, error = paired_difference(narrower["folds"], narrower["accuracies"], wider["folds"],
                                            wider["accuracies"])
            after = f"conv{blocks[1]}" if len(blocks) == 2 else f"conv{blocks[1]}–conv{blocks[-1]}"
            further[f"conv{blocks[0]}"] = (lost, error, after)
    return further
