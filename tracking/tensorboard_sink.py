"""TensorBoard sink: one event directory written with ``torch.utils.tensorboard.SummaryWriter``.

Contract (on top of ``tracking.base``):
- params → one ``params`` text entry per ``log_params`` call (a Markdown table); the
  complete config → one ``config`` text entry (``log_config``, flattened to
  ``section.field`` rows);
  tags → one ``tags`` text entry per ``set_tags`` call.
- metrics → one scalar per key at ``global_step=step``; the first value this tracker logs
  under a key whose statistic (the part before ``/``) is in ``tracking.descriptions.METRIC_DESCRIPTIONS``,
  or that is itself in ``tracking.descriptions.SCALAR_DESCRIPTIONS`` (``val/accuracy_tta``), carries
  that sentence as the tag's description (``SummaryMetadata.summary_description``; TensorBoard
  keeps a tag's first metadata only). The Scalars tab shows it behind the card's info button;
  the Time Series tab (TensorBoard 2.21) does not display descriptions.
- images → ``add_image(key, HWC uint8, global_step=step)``; figures are rendered with
  matplotlib's Agg canvas (no pyplot) and stored as images at ``step`` (0 if None).
- files are ignored (TensorBoard has no artifact store).
- ``hparams`` (optional): the run is an HParams session (``tracking.hparams``): its
  session start is written at construction, and ``close(status)`` writes the session
  end with ``hparams.RUN_STATUS_TO_SESSION_STATUS[status]`` (FINISHED → SUCCESS,
  FAILED and KILLED → FAILURE, PRUNED → UNKNOWN). Without ``hparams`` the run status is
  not recorded.
- ``close`` flushes and closes the writer; a second ``close`` is a no-op.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convscope.tracking.base import RunStatus
from convscope.tracking.secrets import mask_secrets

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure


_previous_excepthook: Any = None


def _writer_thread_excepthook(args: Any) -> None:
    from convscope.tracking.faults import store_fault

    if type(args.thread).__name__ == "_AsyncWriterThread" and args.exc_value is not None \
            and store_fault(args.exc_value) is not None:
        return  # the writer raises it again on the next write, flush or close: reported there
    _previous_excepthook(args)


def hush_writer_thread_faults() -> None:
    """Keep TensorBoard's event-writer thread from printing a traceback when the disk is full or
    read-only (idempotent). The writer keeps the error and raises it on the next write, flush or
    close, where this sink's caller reports it; every other thread exception is printed as before."""
    import threading

    global _previous_excepthook
    if threading.excepthook is not _writer_thread_excepthook:
        _previous_excepthook = threading.excepthook
        threading.excepthook = _writer_thread_excepthook


def markdown_table(rows: Mapping[str, Any], header: tuple[str, str] = ("name", "value")) -> str:
    """Two-column Markdown table of ``rows`` (``|`` and newlines escaped) for the text plugin."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {cell(key)} | {cell(value)} |" for key, value in rows.items()]
    return "\n".join(lines)


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections → ``section.field`` keys; sequences as comma lists."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = ",".join(str(item) for item in value)
        else:
            flat[name] = value
    return flat


def render_figure(figure: Figure) -> np.ndarray:
    """Render ``figure`` to an (H, W, 3) uint8 array with the Agg canvas (no pyplot)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.array(canvas.buffer_rgba())[..., :3]


class TensorBoardTracker:
    """A ``Tracker`` writing TensorBoard event files to ``log_dir`` (contract: module docstring).

    Args:
        log_dir: this run's own event folder (for a trial: one folder per trial below
            the study folder that holds the experiment config).
        hparams: name → value (bool, int, float or str) of this run as an HParams session;
            None writes no hparams summaries.
        hparams_group: sessions sharing it form one HParams group (e.g. the folds of one
            configuration); None makes this run its own group.

    Raises:
        ImportError: the ``tensorboard`` package is not installed.
        TypeError: an ``hparams`` value of an unsupported type.
    """

    def __init__(
        self,
        log_dir: str | Path,
        hparams: Mapping[str, Any] | None = None,
        hparams_group: str | None = None,
    ) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ImportError(
                "TensorBoardTracker needs the 'tensorboard' package: install it with "
                "`pip install tensorboard`, or run without the TensorBoard sink."
            ) from error
        from convscope.tracking.descriptions import METRIC_DESCRIPTIONS, SCALAR_DESCRIPTIONS

        hush_writer_thread_faults()
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self._closed = False
        self._descriptions = METRIC_DESCRIPTIONS
        self._scalar_descriptions = SCALAR_DESCRIPTIONS
        self._described: set[str] = set()
        self._hparams_session = hparams is not None
        if hparams is not None:
            from convscope.tracking.hparams import write_session_start

            try:
                write_session_start(self.writer, {name: mask_secrets(value) if isinstance(value, str) else value
                                                  for name, value in hparams.items()}, hparams_group)
            except TypeError:
                self.writer.close()
                raise

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Write ``params`` as one Markdown table under the text tag ``params`` (passwords masked)."""
        self.writer.add_text("params", mask_secrets(markdown_table(params, ("param", "value"))))

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Write the complete config as one Markdown table (``section.field`` rows) under ``config``
        (passwords masked)."""
        self.writer.add_text("config", mask_secrets(markdown_table(_flat(config), ("setting", "value"))))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Write ``tags`` as one Markdown table under the text tag ``tags`` (passwords masked)."""
        self.writer.add_text("tags", mask_secrets(markdown_table(tags, ("tag", "value"))))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """One scalar per key at ``step``; a described key's first one carries its description."""
        from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata

        for key, value in metrics.items():
            description = self._scalar_descriptions.get(key) or self._descriptions.get(key.partition("/")[0])
            if description is None or key in self._described:
                self.writer.add_scalar(key, float(value), global_step=step)
                continue
            # add_scalar's summary plus the description (TensorBoard migrates it with the value)
            metadata = SummaryMetadata(summary_description=description)
            summary = Summary(value=[Summary.Value(tag=key, simple_value=float(value), metadata=metadata)])
            self.writer._get_file_writer().add_summary(summary, step)
            self._described.add(key)

    def log_image(self, key: str, image: np.ndarray, step: int) -> None:
        """An (H, W, 3) uint8 image under ``key`` at ``step``.

        The same image summary ``SummaryWriter.add_image`` writes, minus its
        float round trip of the pixels and with fast PNG compression: images
        are written every epoch beside a running training loop.
        """
        from tensorboard.compat.proto.summary_pb2 import Summary

        height, width = image.shape[:2]
        encoded = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=encode_png(image))
        summary = Summary(value=[Summary.Value(tag=key, image=encoded)])
        self.writer._get_file_writer().add_summary(summary, step)

    def log_figure(self, key: str, figure: Figure, step: int | None = None) -> None:
        """``figure`` rendered to pixels, as an image under ``key`` at ``step`` (0 if None)."""
        self.log_image(key, render_figure(figure), 0 if step is None else step)

    def log_file(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Ignored: TensorBoard has no artifact store."""

    def links(self) -> dict[str, str]:
        """``{"tensorboard_dir": <log_dir>}``."""
        return {"tensorboard_dir": str(self.log_dir)}

    def close(self, status: RunStatus = RunStatus.FINISHED) -> None:
        """Write the HParams session end (when constructed with ``hparams``), flush and
        close the writer; no-op when already closed."""
        if self._closed:
            return
        self._closed = True
        if self._hparams_session:
            from convscope.tracking.hparams import session_status, write_session_end

            write_session_end(self.writer, session_status(status))
        self.writer.flush()
        self.writer.close()


PNG_COMPRESS_LEVEL = 1  # zlib level: several times faster than Pillow's default 6, files ~20% larger


def encode_png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()
