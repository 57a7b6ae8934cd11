"""TensorBoard HParams for a study: one experiment config, one session per trial run.

Layout (what TensorBoard's hparams plugin reads, and nothing more)::

    <study dir>/                 experiment config (``write_experiment_config``), once
    <study dir>/<trial run>/     session start + metrics + session end (``TensorBoardTracker``)

Contract:
- ``write_experiment_config`` writes the experiment summary (tag ``_hparams_/experiment``)
  into ``log_dir`` itself with its own writer, closed before returning. TensorBoard must be
  opened on that study folder (or a parent holding only this study): the plugin uses the
  first experiment summary it finds in the logdir for every session below it.
- ``write_session_start`` / ``write_session_end`` write one summary each into the trial's
  own run folder through ``writer._get_file_writer().add_summary``; unlike
  ``SummaryWriter.add_hparams`` no extra run folder is ever created. Each is written at
  most once per run: TensorBoard keeps the metadata of the first summary of a tag.
- Metrics named in the config are scalar tags logged in the session's own run folder
  (``MetricName(group="", tag=...)``), e.g. ``val/accuracy``.
- A session without an end summary (still running, or its worker was killed) shows the
  plugin's default status, UNKNOWN.
- No TensorFlow: the experiment and session-start summaries come from TensorBoard's own
  builders in ``tensorboard.plugins.hparams.summary_v2`` (``hparams_config_pb``,
  ``hparams_pb``), which need no TensorFlow (``api`` and ``summary`` import it); the session
  end, which has no builder there, is the one summary assembled here from the plugin's protos.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convscope.tracking.base import RunStatus
from convscope.tracking.secrets import mask_secrets

if TYPE_CHECKING:
    from tensorboard.compat.proto.summary_pb2 import Summary
    from torch.utils.tensorboard import SummaryWriter

HParamValue = float | int | str | bool
"""Types a session's hyperparameter value may have (bool, number or string)."""

SESSION_STATUSES = ("UNKNOWN", "SUCCESS", "FAILURE", "RUNNING")
"""The hparams plugin's ``Status`` values, without their ``STATUS_`` prefix."""

RUN_STATUS_TO_SESSION_STATUS: dict[RunStatus, str] = {
    RunStatus.FINISHED: "SUCCESS",
    # Optuna marks interrupted (Ctrl-C) and heartbeat-stale trials FAIL; the plugin has
    # no "killed", and a killed run did not produce a result: FAILURE.
    RunStatus.FAILED: "FAILURE",
    RunStatus.KILLED: "FAILURE",
    # A pruned trial neither succeeded nor failed; the plugin has no "pruned". UNKNOWN
    # keeps pruned trials apart from completed and failed ones in the status filter.
    RunStatus.PRUNED: "UNKNOWN",
}
"""How a ``RunStatus`` appears in the HParams tab (its status filter)."""

EXPERIMENT_FILENAME_SUFFIX = ".hparams_experiment"
"""Suffix of the event file that holds the experiment config (recognisable on disk)."""


def session_status(status: RunStatus) -> str:
    """The hparams plugin status name for ``status`` (see ``RUN_STATUS_TO_SESSION_STATUS``)."""
    return RUN_STATUS_TO_SESSION_STATUS[RunStatus(status)]


def _summary(tag: str, plugin_data: Any) -> Summary:
    """A ``Summary`` with one ``tag`` carrying ``plugin_data`` (HParamsPluginData) as hparams plugin
    metadata: only for the session end, which TensorBoard's ``summary_v2`` has no builder for."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import metadata

    return Summary(value=[Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(plugin_data),
                                        tensor=metadata.NULL_TENSOR)])


def _hparam(name: str, domain: list[Any] | tuple[Any, ...] | None) -> Any:
    """``summary_v2.HParam`` for ``name``: real-valued without a domain when ``domain`` is None;
    else a discrete domain of bools, numbers (as floats) or strings (URL passwords masked)."""
    from tensorboard.plugins.hparams import summary_v2

    if domain is None:
        return summary_v2.HParam(name)
    if not isinstance(domain, (list, tuple)) or not domain:
        raise ValueError(
            f"hparam {name!r}: the domain must be a non-empty list/tuple of the values it "
            f"can take, or None for a real-valued hparam; got {domain!r}"
        )
    values = list(domain)
    if all(isinstance(value, bool) for value in values):
        return summary_v2.HParam(name, summary_v2.Discrete(values, dtype=bool))
    if all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values):
        return summary_v2.HParam(name, summary_v2.Discrete([float(v) for v in values], dtype=float))
    return summary_v2.HParam(name, summary_v2.Discrete([mask_secrets(str(v)) for v in values], dtype=str))


def experiment_summary(
    hparams: Mapping[str, list[Any] | tuple[Any, ...] | None],
    metrics: Sequence[str],
) -> Summary:
    """The experiment summary (tag ``_hparams_/experiment``), built by TensorBoard's own
    ``summary_v2.hparams_config_pb``, declaring ``hparams`` (name → discrete values, or None for
    real-valued) and ``metrics`` (scalar tags of each session's own run, e.g. ``val/accuracy``).

    Raises:
        ValueError: a domain is neither None nor a non-empty list/tuple; no metrics.
    """
    from tensorboard.plugins.hparams import summary_v2

    if isinstance(metrics, str) or not metrics:
        raise ValueError(
            f"metrics must be a non-empty sequence of scalar tags (e.g. ['val/accuracy']); got {metrics!r}"
        )
    return summary_v2.hparams_config_pb(
        hparams=[_hparam(name, domain) for name, domain in hparams.items()],
        metrics=[summary_v2.Metric(tag, display_name=tag) for tag in metrics],
        time_created_secs=time.time(),
    )


def write_experiment_config(
    log_dir: Path,
    hparams: Mapping[str, list[Any] | tuple[Any, ...] | None],
    metrics: Sequence[str],
) -> None:
    """Write the study's experiment config into ``log_dir`` (the parent of all trial runs)
    with a writer of its own, flushed and closed before returning.

    Call it once per study invocation; a continued study adds another such event file,
    and TensorBoard then shows one of them, so keep the domains stable across runs.

    Raises:
        ValueError: see ``experiment_summary``.
    """
    from torch.utils.tensorboard import SummaryWriter

    summary = experiment_summary(hparams, metrics)
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(log_dir=str(log_dir), filename_suffix=EXPERIMENT_FILENAME_SUFFIX)
    try:
        writer._get_file_writer().add_summary(summary)
    finally:
        writer.close()


def session_start_summary(
    hparams: Mapping[str, HParamValue], group_name: str | None = None
) -> Summary:
    """The session start summary (tag ``_hparams_/session_start_info``) holding ``hparams``, built
    by TensorBoard's own ``summary_v2.hparams_pb``.

    bool, int, float and str values as they are; list/tuple values become their ``str`` (as
    TensorBoard's own ``session_start_pb`` does); a string's URL passwords are masked
    (``tracking.secrets.mask_secrets``). Sessions sharing a ``group_name`` form one group (e.g.
    the folds of one configuration); None makes every session its own group.

    Raises:
        TypeError: a value of any other type (name and type in the message).
    """
    from tensorboard.plugins.hparams import summary_v2

    values: dict[str, HParamValue] = {}
    for name, value in hparams.items():
        if isinstance(value, (bool, int, float)):
            values[name] = value
        elif isinstance(value, (str, list, tuple)):
            values[name] = mask_secrets(value if isinstance(value, str) else str(value))
        else:
            raise TypeError(
                f"hparam {name!r} = {value!r} has type {type(value).__name__}; "
                "use a bool, int, float or str"
            )
    return summary_v2.hparams_pb(values, trial_id=group_name or "", start_time_secs=time.time())


def session_end_summary(status: str) -> Summary:
    """The session end summary (tag ``_hparams_/session_end_info``) with ``status``, one of
    ``SESSION_STATUSES`` (the ``STATUS_`` prefix is optional, case is ignored).

    Raises:
        ValueError: an unknown status.
    """
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    name = str(status).upper().removeprefix("STATUS_")
    if name not in SESSION_STATUSES:
        raise ValueError(f"unknown hparams session status {status!r}; use one of {SESSION_STATUSES}")
    info = plugin_data_pb2.SessionEndInfo(
        status=api_pb2.Status.Value(f"STATUS_{name}"), end_time_secs=time.time()
    )
    return _summary(
        metadata.SESSION_END_INFO_TAG,
        plugin_data_pb2.HParamsPluginData(session_end_info=info),
    )


def write_session_start(
    writer: SummaryWriter, hparams: Mapping[str, HParamValue], group_name: str | None = None
) -> None:
    """Write the session start (``session_start_summary``) into ``writer``'s own run folder.

    Raises:
        TypeError: see ``session_start_summary``.
    """
    writer._get_file_writer().add_summary(session_start_summary(hparams, group_name))


def write_session_end(writer: SummaryWriter, status: str) -> None:
    """Write the session end with ``status`` (see ``session_end_summary``) into ``writer``'s
    own run folder; the caller flushes/closes the writer.

    Raises:
        ValueError: an unknown status.
    """
    writer._get_file_writer().add_summary(session_end_summary(status))
