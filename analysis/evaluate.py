"""A trained network scored on photos it never saw: accuracy with its 95% interval, per-class
accuracy, the confusion matrix and the most confidently wrong photos.

Input: a ``train.mlflow_model.Network`` (the network an MLflow model holds) and a folder of class
sub-folders whose class names are the network's. Photos are decoded as in training
(``train.images.decode_many``); those that cannot be read are skipped and listed, never scored.
The probabilities are the model's own (``Network.probabilities``), so the accuracy is what loading
the model and predicting gives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from convscope.train.errors import ConfigError
from convscope.train.folders import find_layout
from convscope.train.images import decode_many
from convscope.train.mlflow_model import Network

BATCH = 256
Z_95 = 1.959964


@dataclass
class Evaluation:
    """What ``evaluate_folder`` measured. ``probabilities``: (N, classes) of the scored photos, in ``files`` order."""

    class_names: list[str]
    files: list[str]
    labels: np.ndarray
    probabilities: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def correct(self) -> int:
        return int((self.predicted == self.labels).sum())

    @property
    def accuracy(self) -> float:
        return self.correct / max(len(self.labels), 1)

    def interval(self) -> tuple[float, float]:
        """The Wilson score 95% interval of the accuracy."""
        n = len(self.labels)
        if n == 0:
            return 0.0, 1.0
        p, z2 = self.accuracy, Z_95**2
        centre = (p + z2 / (2 * n)) / (1 + z2 / n)
        half = Z_95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
        return max(0.0, centre - half), min(1.0, centre + half)

    def per_class(self) -> dict[str, float]:
        return {name: float((self.predicted[self.labels == k] == k).mean()) if (self.labels == k).any() else float("nan")
                for k, name in enumerate(self.class_names)}

    def confusion(self) -> np.ndarray:
        """Counts: rows the true class, columns the predicted one."""
        k = len(self.class_names)
        return np.bincount(self.labels * k + self.predicted, minlength=k * k).reshape(k, k)

    def most_confidently_wrong(self, count: int = 16) -> list[int]:
        """Indices of the wrong photos, the most confident first."""
        wrong = np.flatnonzero(self.predicted != self.labels)
        confidence = self.probabilities[wrong, self.predicted[wrong]]
        return wrong[np.argsort(-confidence, kind="stable")][:count].tolist()


def evaluate_folder(network: Network, root: Path, *, progress: bool = False) -> tuple[Evaluation, torch.Tensor]:
    """Score every photo under ``root`` (class sub-folders named as the network's classes); the
    evaluation and the scored photos (uint8 N×3×S×S, for pictures). ConfigError naming ``--data``
    when the folder or its classes do not fit the network."""
    layout = find_layout(root, "--data", classes=network.class_names)
    if layout.kind != "class-folders":
        split = layout.splits.get("test")
        if split is None:
            raise ConfigError(f"--data {root}: give a folder of class sub-folders (or one with a test/ split) to "
                              "evaluate on; train/ and val/ are what a run trains and picks on")
        files, labels = list(split.files), list(split.labels)
    else:
        files, labels = list(layout.all_files), list(layout.splits["all"].labels)
    names = list(layout.class_names)
    to_model = [network.class_names.index(name) for name in names]
    decoded = decode_many(files, network.image_size, progress=progress)
    kept = [i for i, result in enumerate(decoded) if result.array is not None]
    skipped = [(str(files[i]), decoded[i].reason or "") for i in range(len(files)) if decoded[i].array is None]
    if not kept:
        raise ConfigError(f"--data {root}: none of its {len(files):,} files is a readable image")
    images = torch.from_numpy(np.stack([decoded[i].array for i in kept]))  # type: ignore[misc]
    probabilities = torch.cat([network.probabilities(images[i : i + BATCH]) for i in range(0, len(images), BATCH)])
    evaluation = Evaluation(list(network.class_names), [str(files[i]) for i in kept],
                            np.array([to_model[labels[i]] for i in kept]), probabilities.numpy(), skipped)
    return evaluation, images


def summary_lines(evaluation: Evaluation, what: str) -> list[str]:
    """The printed result: accuracy with its interval, per class, the confusion matrix."""
    low, high = evaluation.interval()
    lines = [f"{what}: test accuracy {evaluation.accuracy:.4f} (95% interval {low:.4f}–{high:.4f}) on "
             f"{len(evaluation.labels):,} photos" + (f"; {len(evaluation.skipped)} unreadable file(s) skipped"
                                                      if evaluation.skipped else "")]
    lines += [f"  {name:<12} {accuracy:.4f}  ({int((evaluation.labels == k).sum()):,} photos)"
              for k, (name, accuracy) in enumerate(evaluation.per_class().items())]
    width = max(len(name) for name in evaluation.class_names) + 2
    lines.append("  confusion (rows: true, columns: predicted)")
    lines.append("  " + " " * width + "".join(f"{name:>{width}}" for name in evaluation.class_names))
    for name, row in zip(evaluation.class_names, evaluation.confusion()):
        lines.append("  " + f"{name:<{width}}" + "".join(f"{count:>{width}}" for count in row))
    return lines


def wrong_figure(evaluation: Evaluation, images: torch.Tensor, count: int = 16):  # type: ignore[no-untyped-def]
    """A grid of the most confidently wrong photos, each titled with its true and predicted class."""
    import matplotlib.pyplot as plt

    chosen = evaluation.most_confidently_wrong(count)
    columns = 4
    rows = max(1, math.ceil(len(chosen) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 2.4, rows * 2.6), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, index in zip(axes.flat, chosen):
        axis.imshow(images[index].permute(1, 2, 0).numpy())
        true, said = evaluation.class_names[evaluation.labels[index]], evaluation.class_names[evaluation.predicted[index]]
        axis.set_title(f"{true} → {said}\n{evaluation.probabilities[index].max():.2f}", fontsize=8)
    if not chosen:
        axes.flat[0].text(0.5, 0.5, "no wrong predictions", ha="center", va="center")
    figure.suptitle("most confidently wrong (true → predicted, confidence)", fontsize=9)
    figure.tight_layout()
    return figure


def confusion_figure(evaluation: Evaluation):  # type: ignore[no-untyped-def]
    import matplotlib.pyplot as plt

    matrix = evaluation.confusion()
    figure, axis = plt.subplots(figsize=(3.2 + 0.4 * len(matrix), 3 + 0.4 * len(matrix)))
    axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(matrix)), evaluation.class_names, rotation=45, ha="right")
    axis.set_yticks(range(len(matrix)), evaluation.class_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    for (row, column), count in np.ndenumerate(matrix):
        axis.text(column, row, str(count), ha="center", va="center",
                  color="white" if count > matrix.max() / 2 else "black")
    axis.set_title(f"test accuracy {evaluation.accuracy:.3f}")
    figure.tight_layout()
    return figure
