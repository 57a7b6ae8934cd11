"""End-of-study report: Optuna's matplotlib plots and a best-trials table.

Contract:
- ``study_figures`` returns ``{name: Figure}`` built with ``optuna.visualization.matplotlib``
  for a single-objective study; a figure is left out when it would be empty:
  ``optimization_history`` and ``parallel_coordinate`` need ≥ 1 completed trial,
  ``param_importances`` needs ≥ 2 completed trials and ≥ 1 parameter that takes ≥ 2
  values among them (and is left out when Optuna refuses to compute importances or warns that
  they would all be equal, as when every trial tied), and
  ``intermediate_values`` needs ≥ 1 trial that reported an intermediate value.
  Optuna draws with pyplot, so every returned figure sits in pyplot's registry until
  the caller logs it and calls ``close_figures``. Optuna's global ``ggplot`` style and
  its ExperimentalWarning stay inside this module (rcParams are restored).
- ``best_over_time_figure`` draws the best value so far against wall-clock minutes since the
  study's first trial started (None without a completed trial); it is not one of Optuna's
  plots and not in ``study_figures``.
- ``best_trials_table`` lists the best COMPLETE trials with a finite value, best first
  in the study's direction (ties: lower trial number first). Pruned, failed, running
  and waiting trials are never listed.
"""

from __future__ import annotations

import csv
import datetime
import io
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

MAX_LEGEND_ENTRIES = 12
"""A study figure whose legend (Optuna's curves plot: one entry per trial) would list more loses it."""
FIGURE_NAMES = ("optimization_history", "param_importances", "parallel_coordinate", "intermediate_values")
"""Every figure ``study_figures`` may return, in this order."""

TABLE_USER_ATTRS = ("mlflow_run_id", "tensorboard_dir")
"""Trial user attributes given a column of their own when any listed trial has them."""


def _single_objective(study: optuna.Study) -> None:
    if len(study.directions) != 1:
        raise ValueError(
            f"study {study.study_name!r} has {len(study.directions)} objectives; the report "
            "covers single-objective studies only"
        )


def completed_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The COMPLETE trials of ``study`` whose value is finite, in trial-number order."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [t for t in trials if t.value is not None and math.isfinite(t.value)]


def importances_computable(trials: Iterable[FrozenTrial]) -> bool:
    """True when ``trials`` (completed ones) are ≥ 2 and some parameter takes ≥ 2 values:
    below that Optuna only warns and draws equal, meaningless importances."""
    trials = list(trials)
    if len(trials) < 2:
        return False
    values: dict[str, set[str]] = {}
    for trial in trials:
        for name, value in trial.params.items():
            values.setdefault(name, set()).add(repr(value))
    return any(len(seen) >= 2 for seen in values.values())


def study_figures(study: optuna.Study) -> dict[str, Figure]:
    """Optuna's matplotlib plots of ``study`` by name (contract: module docstring).

    Raises:
        ValueError: a multi-objective study.
    """
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    _single_objective(study)
    completed = completed_trials(study)
    plotted = (TrialState.PRUNED, TrialState.COMPLETE, TrialState.RUNNING)  # what Optuna's curves plot draws
    reported = any(t.intermediate_values for t in study.get_trials(deepcopy=False, states=plotted))
    wanted: dict[str, Callable[[optuna.Study], Any]] = {}
    if completed:
        wanted["optimization_history"] = optuna_plots.plot_optimization_history
    if importances_computable(completed):
        wanted["param_importances"] = optuna_plots.plot_param_importances
    if completed:
        wanted["parallel_coordinate"] = optuna_plots.plot_parallel_coordinate
    if reported:
        wanted["intermediate_values"] = optuna_plots.plot_intermediate_values

    figures: dict[str, Figure] = {}
    with plt.rc_context(), warnings.catch_warnings():  # optuna calls plt.style.use("ggplot")
        warnings.simplefilter("ignore", ExperimentalWarning)
        # a parameter with one value among the trials: matplotlib widens its axis itself
        warnings.filterwarnings("ignore", "Attempting to set identical low and high", UserWarning)
        for name, plot in wanted.items():
            before = set(plt.get_fignums())
            try:
                with warnings.catch_warnings(record=True) as said:
                    warnings.simplefilter("always", UserWarning)
                    axes = plot(study)
                equal = _pass_on_all_but_equal_importances(said)
            except (ValueError, RuntimeError) as error:
                # e.g. importance evaluators refusing a degenerate study: skip, never fail the report
                logger.warning("study report: skipping %s: %s", name, error)
                for number in set(plt.get_fignums()) - before:
                    plt.close(number)
                continue
            if equal:  # e.g. every trial tied: Optuna draws equal, meaningless importances
                for number in set(plt.get_fignums()) - before:
                    plt.close(number)
                continue
            legend = axes.get_legend()
            if legend is not None and len(legend.get_texts()) > MAX_LEGEND_ENTRIES:
                legend.remove()  # one entry per trial: taller than the figure, and read by nobody
            figures[name] = axes.figure  # every plot above returns one Axes
    return figures


def _pass_on_all_but_equal_importances(said: list[warnings.WarningMessage]) -> bool:
    """Show the warnings a plot gave again, except Optuna's "Parameter importances will be equal"
    (which says the importances plot is meaningless); True when that one was among them."""
    equal = False
    for warning in said:
        if "importances will be equal" in str(warning.message):
            equal = True
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return equal


def best_over_time_figure(study: optuna.Study, metric: str = "value",
                          marks: Mapping[str, datetime.datetime] | None = None) -> Figure | None:
    """The best ``metric`` so far (a step line) and every completed trial's value (dots) against
    wall-clock minutes since the study's first trial started; ``marks`` (label → local time,
    e.g. this run's start and its deadline) are drawn as dashed vertical lines. None when no
    trial has completed with a finite value.

    Raises:
        ValueError: a multi-objective study.
    """
    from matplotlib.figure import Figure

    _single_objective(study)
    done = sorted((t for t in completed_trials(study) if t.datetime_complete is not None),
                  key=lambda t: t.datetime_complete)  # type: ignore[arg-type, return-value]
    if not done:
        return None
    starts = [t.datetime_start for t in study.get_trials(deepcopy=False) if t.datetime_start is not None]
    origin = min(starts)

    def minutes(moment: datetime.datetime) -> float:
        return (moment - origin).total_seconds() / 60.0

    better = max if study.direction == StudyDirection.MAXIMIZE else min
    xs: list[float] = []
    best: list[float] = []
    so_far: float | None = None
    for trial in done:
        so_far = float(trial.value) if so_far is None else better(so_far, float(trial.value))  # type: ignore[arg-type]
        xs.append(minutes(trial.datetime_complete))  # type: ignore[arg-type]
        best.append(so_far)
    figure = Figure(figsize=(7, 4), dpi=100)
    axes = figure.add_subplot()
    axes.step(xs, best, where="post", label=f"best {metric} so far", color="tab:blue")
    axes.scatter(xs, [float(t.value) for t in done], s=12, color="tab:gray",  # type: ignore[arg-type]
                 alpha=0.6, label="completed trial")
    for (label, moment), color in zip((marks or {}).items(), ("tab:green", "tab:red", "tab:purple")):
        axes.axvline(minutes(moment), linestyle="--", color=color, label=label)
    axes.set_xlabel("wall-clock minutes since the study started")
    axes.set_ylabel(metric)
    axes.set_title(f"best {metric} over time ({len(done)} completed trials)")
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    return figure


def close_figures(figures: Mapping[str, Figure] | Iterable[Figure]) -> None:
    """Remove ``figures`` (a ``study_figures`` result, or any figures) from pyplot's registry."""
    import matplotlib.pyplot as plt

    for figure in figures.values() if isinstance(figures, Mapping) else figures:
        plt.close(figure)


def best_trials(study: optuna.Study, top: int = 10) -> list[FrozenTrial]:
    """The ``top`` best completed trials with a finite value, best first (ties: lower
    number first).

    Raises:
        ValueError: ``top`` < 1; a multi-objective study.
    """
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    _single_objective(study)
    sign = -1.0 if study.direction == StudyDirection.MAXIMIZE else 1.0
    ranked = sorted(completed_trials(study), key=lambda t: (sign * float(t.value), t.number))
    return ranked[:top]


def _rows(trials: list[FrozenTrial]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows: rank, number, value, state, duration_s, params_<name>..., user attrs."""
    param_names = sorted({name for t in trials for name in t.params})
    attrs = [key for key in TABLE_USER_ATTRS if any(key in t.user_attrs for t in trials)]
    header = ["rank", "number", "value", "state", "duration_s"]
    header += [f"params_{name}" for name in param_names] + attrs
    rows = []
    for rank, trial in enumerate(trials, start=1):
        duration = trial.duration.total_seconds() if trial.duration is not None else None
        row: list[Any] = [rank, trial.number, trial.value, trial.state.name, duration]
        row += [trial.params.get(name) for name in param_names]
        row += [trial.user_attrs.get(key) for key in attrs]
        rows.append(row)
    return header, rows


def _markdown_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        value = f"{value:.6g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def best_trials_table(study: optuna.Study, top: int = 10) -> tuple[str, str]:
    """``(csv_text, markdown_text)`` of ``best_trials(study, top)``.

    Columns: rank, number, value, state, duration_s (seconds), one ``params_<name>`` per
    parameter of the listed trials (sorted; empty where a trial lacks it), then
    ``mlflow_run_id`` / ``tensorboard_dir`` when any listed trial has that user attribute.
    CSV keeps full precision with empty cells for missing values; Markdown rounds floats
    to 6 significant digits. A study without completed trials gives the header only.

    Raises:
        ValueError: ``top`` < 1; a multi-objective study.
    """
    header, rows = _rows(best_trials(study, top))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if cell is None else cell for cell in row] for row in rows])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_markdown_cell(cell) for cell in row) + " |" for row in rows]
    return buffer.getvalue(), "\n".join(lines) + "\n"
