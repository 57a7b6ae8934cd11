"""Per-epoch visuals: capture on the training thread, render and write in the background.

``EpochVisuals.log(model, step)`` runs one forward + one backward pass over the
fixed probe images (cheap), copies the results to the CPU and hands a job to
the tracker's background worker. That job renders the feature-map grids, the
saliency grid and the first layer's filters, computes the activation
statistics, writes the probe activations as a safetensors artifact and sends
everything to the sinks. Image keys:

- ``feature_maps/<layer>`` — the layer's overview (``pictures.overview``): a few probes ×
  a fixed set of the layer's most active channels, drawn for a ~256-px thumbnail;
- ``all_channels/<layer>`` — every channel of the first probe at full resolution;
- ``saliency`` — for one probe per class: input, gradient saliency, Grad-CAM of every block;
- ``filters/<first layer>`` — the first conv layer's filters;
- metrics ``act_mean/<layer>``, ``act_zero_fraction/<layer>``, ``act_noise/<layer>`` (maps of 7×7 and up);
- artifacts ``activations/epoch_NNNN.safetensors`` + ``.json``.

``pictures`` says which epochs get pictures:

- ``all``: every epoch's, drawn in order on the tracker's worker (a device that trains faster than
  they are drawn waits for them, through the worker's bounded queue);
- ``latest``: those of the epoch before training and the first epoch, then of the latest epoch each
  time the tracker's side thread is free (``BackgroundTracker.offer``): a training epoch never waits
  for pictures, and an epoch whose pictures a newer epoch's replaced before they were begun has none
  (``undrawn_epochs``). The last epoch's are always drawn. What ``--visual-epochs auto`` picks on CUDA;
- ``ends`` (what a study's trials keep): epoch 1 and the last epoch only (drawn by ``finish``,
  which the run calls when it ends, finished, pruned or stopped), and the probe activations as one
  pair, ``activations/latest.*``, rewritten every epoch: a trial keeps what a comparison reads (its
  last epoch) whether it finished or was stopped.

The statistics are logged for every epoch in every mode, and with ``all`` and ``latest`` the probe
activations too.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from convscope.pictures.activations import LATEST_PROBES, save_analysis_activations, save_probe_activations
from convscope.tracking.background import in_order, latest_only
from convscope.tracking.base import Tracker
from convscope.pictures.capture import ProbeCapture, capture_pooled, capture_probes
from convscope.pictures.overview import WIDTH_RATIO, channel_budget, layer_overview, select_channels, select_rows
from convscope.pictures.render import confusion_matrix_figure, feature_map_grid, filter_grid, pad_to_width_ratio, saliency_grid
from convscope.pictures.stats import activation_statistics

ACTIVATIONS_ARTIFACT_PATH = "activations"
# Smallest tile sides: small maps stay visible while the images stay cheap to encode every epoch
# (PNG encoding in the sinks is most of the per-epoch cost; see benchmarks/visual_overhead.py).
ALL_CHANNELS_TILE_PX = 16
SALIENCY_TILE_PX = 48
SALIENCY_PROBES = 2  # one per class: a wide picture, whole in MLflow's fixed-height card
PICTURE_MODES = ("all", "latest", "ends")


def picture_mode(visual_epochs: str, device: torch.device) -> str:
    """What ``--visual-epochs`` means on ``device``: ``auto`` is ``latest`` on CUDA, where an epoch can
    take less time than drawing its pictures and training must not wait for them, and ``all`` elsewhere."""
    if visual_epochs == "auto":
        return "latest" if device.type == "cuda" else "all"
    return visual_epochs


def _cpu(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.cpu()


def _ranges(steps: Sequence[int]) -> str:
    """``[1, 2, 3, 7, 9, 10]`` as ``1-3, 7, 9-10``."""
    runs: list[list[int]] = []
    for step in sorted(steps):
        if runs and step == runs[-1][1] + 1:
            runs[-1][1] = step
        else:
            runs.append([step, step])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


@dataclass(frozen=True)
class Probes:
    """The fixed probe images: model inputs on the device and the originals for display."""

    inputs: torch.Tensor  # (P,3,H,W) normalised floats on the model's device
    images: torch.Tensor  # (P,3,H,W) uint8 on the CPU
    labels: torch.Tensor  # (P,) int64; -1 for a user image without a label
    ids: tuple[str, ...]


class EpochVisuals:
    def __init__(
        self,
        tracker: Tracker,
        layers: Mapping[str, nn.Module],
        probes: Probes,
        class_names: Sequence[str],
        artifact_dir: Path,
        *,
        first_conv: nn.Conv2d | None = None,
        keep_files: bool = True,
        channels: Mapping[str, Sequence[int]] | None = None,
        pictures: str = "all",
    ) -> None:
        """``channels``: each layer's overview channels from an earlier part of this run (a resumed
        run keeps its columns); None chooses them from the first capture (see ``pictures.overview``).
        ``pictures``: all, latest or ends: which epochs get pictures (see the module)."""
        if pictures not in PICTURE_MODES:
            raise ValueError(f"pictures must be one of {', '.join(PICTURE_MODES)} (got {pictures!r})")
        self.tracker = tracker
        self.layers = dict(layers)
        self.probes = probes
        self.class_names = list(class_names)
        self.artifact_dir = artifact_dir
        self.first_conv = first_conv
        self.keep_files = keep_files  # False: files are deleted once the sinks have copied them
        self.channels: dict[str, tuple[int, ...]] | None = (
            {layer: tuple(int(c) for c in chosen) for layer, chosen in channels.items()} if channels else None
        )
        self.rows = select_rows(probes.labels.tolist())
        self.saliency_rows = select_rows(probes.labels.tolist(), SALIENCY_PROBES)
        self.pictures = pictures
        self.logged_steps: list[int] = []
        self.drawn_steps: list[int] = []  # appended by the jobs that draw, on the tracker's threads
        self._reported = False  # ``finish`` has said which epochs have pictures
        self._undrawn: tuple[ProbeCapture, torch.Tensor | None, int] | None = None  # the latest capture not drawn

    def log(self, model: nn.Module, step: int) -> None:
        """Capture now; render and write on the tracker's worker (or inline if it has none)."""
        on_device = capture_probes(model, self.layers, self.probes.inputs, self.probes.labels, on_device=True)
        if self.channels is None or set(self.channels) != set(on_device.activations):
            capture = on_device.cpu()  # the first epoch only: the overview's channels are chosen now
            self.channels = {
                layer: select_channels(activation, channel_budget(*activation.shape[2:]))
                for layer, activation in capture.activations.items()
            }
        filters = self.first_conv.weight.detach().float().clone() if self.first_conv is not None else None

        self.logged_steps.append(step)
        if self.pictures == "latest":
            on_cpu = functools.cache(on_device.cpu)  # one copy for both threads' jobs
            self._run(lambda sink: self._record(sink, on_cpu(), step))
            sink = getattr(self.tracker, "inner", self.tracker)
            latest_only(self.tracker, lambda: self._draw(sink, on_cpu(), _cpu(filters), step),
                        f"epoch {step} pictures", keep=step <= 1)
            return
        draw = self.pictures == "all" or step == 1
        self._undrawn = None if draw else (on_device, filters, step)

        def render(sink: Tracker) -> None:  # copies to the CPU here, on the worker: training does not wait
            capture = on_device.cpu()
            if draw:
                self._draw(sink, capture, _cpu(filters), step)
            self._record(sink, capture, step)

        self._run(render)

    def undrawn_epochs(self) -> list[int]:
        """The epochs logged whose pictures were not drawn (``latest``: replaced by a newer epoch's
        before they were begun). Complete once the tracker is flushed."""
        drawn = set(self.drawn_steps)
        return [step for step in self.logged_steps if step not in drawn and step > 0]

    def finish(self, say: Callable[[str], None] | None = None) -> None:
        """The end of the run's epochs. ``ends``: draw the pictures of the latest epoch logged, unless
        ``log`` did. ``latest``: wait for the pictures being drawn; when some epochs have none, tag the
        run ``convscope.picture_epochs`` with those that have and tell ``say`` (default: stderr)."""
        if self.pictures == "latest" and not self._reported:
            self._reported = True
            self._report_undrawn(say or (lambda line: print(line, file=sys.stderr)))
        if self._undrawn is None:
            return
        on_device, filters, step = self._undrawn
        self._undrawn = None
        self._run(lambda sink: self._draw(sink, on_device.cpu(), _cpu(filters), step))

    def _report_undrawn(self, say: Callable[[str], None]) -> None:
        flush = getattr(self.tracker, "flush", None)
        if flush is not None:
            flush()
        undrawn = set(self.undrawn_epochs())
        if not undrawn:
            return
        epochs = [step for step in self.logged_steps if step > 0]
        drawn = [step for step in epochs if step not in undrawn]
        self.tracker.set_tags({"convscope.picture_epochs": _ranges(drawn)})
        say(f"convscope: pictures drawn for {len(drawn)} of {len(epochs)} epochs ({_ranges(drawn)}): training ran "
            "faster than they could be drawn; statistics and probe activations cover every epoch "
            "(--visual-epochs all draws every epoch, with training waiting for it)")

    def log_final(
        self, model: nn.Module, analysis_batches: list[torch.Tensor], analysis_labels: torch.Tensor,
        y_true: torch.Tensor, y_pred: torch.Tensor, *, step: int,
        analysis_ids: Sequence[str] | None = None, data_fingerprint: str = "",
    ) -> None:
        """Confusion matrix (logged at ``step``, the last epoch) and the pooled activations of the
        analysis set, once at the end. ``analysis_ids`` (one per analysis image) and the data's
        ``data_fingerprint`` identify the samples, so runs can be compared on them exactly."""
        pooled = capture_pooled(model, self.layers, analysis_batches)
        samples = (tuple(analysis_ids), data_fingerprint) if analysis_ids is not None else None
        self._run(lambda sink: self._render_final(sink, pooled, analysis_labels, y_true, y_pred, step, samples))

    def _run(self, job: Callable[[Tracker], None]) -> None:
        sink = getattr(self.tracker, "inner", self.tracker)  # a BackgroundTracker's jobs talk to its sinks
        in_order(self.tracker, lambda: job(sink), "epoch visuals")

    def _draw(self, sink: Tracker, capture: ProbeCapture, filters: torch.Tensor | None, step: int) -> None:
        assert self.channels is not None  # chosen in ``log`` before this job was queued

        def show(key: str, picture: np.ndarray) -> None:  # every picture wide: whole in MLflow's cards
            sink.log_image(key, pad_to_width_ratio(picture, WIDTH_RATIO), step)

        first = self.rows[0]
        for layer, activation in capture.activations.items():
            show(f"feature_maps/{layer}", layer_overview(activation, self.probes.images, self.channels[layer], self.rows))
            show(f"all_channels/{layer}", feature_map_grid(
                activation[first : first + 1], min_tile=ALL_CHANNELS_TILE_PX, width_ratio=WIDTH_RATIO))
        rows = torch.tensor(self.saliency_rows, dtype=torch.long)
        show("saliency", saliency_grid(
            self.probes.images[rows], capture.gradient[rows], {k: v[rows] for k, v in capture.gradcam.items()},
            class_names=self.class_names, targets=capture.targets[rows], min_tile=SALIENCY_TILE_PX,
        ))
        if filters is not None:
            show(f"filters/{next(iter(self.layers))}", filter_grid(filters, width_ratio=WIDTH_RATIO))
        self.drawn_steps.append(step)

    def _record(self, sink: Tracker, capture: ProbeCapture, step: int) -> None:
        """The epoch's activation statistics and probe activations."""
        sink.log_metrics(activation_statistics(capture.activations), step)
        files = save_probe_activations(
            self.artifact_dir,
            step,
            capture.activations,
            probe_ids=self.probes.ids,
            labels=self.probes.labels.tolist(),
            class_names=self.class_names,
            stem=LATEST_PROBES if self.pictures == "ends" else None,  # ends: one pair, rewritten
        )
        self._ship(sink, files)

    def _render_final(
        self, sink: Tracker, pooled: dict[str, torch.Tensor], labels: torch.Tensor,
        y_true: torch.Tensor, y_pred: torch.Tensor, step: int, samples: tuple[tuple[str, ...], str] | None,
    ) -> None:
        figure = confusion_matrix_figure(y_true.numpy(), y_pred.numpy(), self.class_names)
        sink.log_figure("confusion_matrix", figure, step)
        ids, fingerprint = samples if samples is not None else (None, "")
        files = save_analysis_activations(self.artifact_dir, pooled, labels=labels, class_names=self.class_names,
                                          sample_ids=ids, data_fingerprint=fingerprint)
        self._ship(sink, files)

    def _ship(self, sink: Tracker, files: Sequence[Path]) -> None:
        for path in files:
            sink.log_file(path, ACTIVATIONS_ARTIFACT_PATH)
        if not self.keep_files:
            for path in files:
                path.unlink(missing_ok=True)
