"""What each logged number means: one sentence per metric, shown by the UIs (TensorBoard's
Scalars info button, the explain page). Kept here, beside the sinks that write them."""

from __future__ import annotations

#: Maps smaller than this in either side get no ``act_noise``: too few neighbours to tell noise from structure.
MIN_NOISE_SIDE = 7

#: Statistic (the metric name before ``/<layer>``) → one sentence saying what the number means.
METRIC_DESCRIPTIONS: dict[str, str] = {
    "act_mean": "Mean activation of the layer over the probe images, channels and positions.",
    "act_zero_fraction": "Fraction of the layer's probe activations that are exactly zero (ReLU off); "
                         "near 1 means a mostly silent layer.",
    "act_noise": "Roughness of the layer's feature maps relative to the same maps with their pixels shuffled "
                 "(Geary's C, weighted by map energy): about 1 is noise-like, near 0 smooth or structured; "
                 f"only for maps of at least {MIN_NOISE_SIDE}×{MIN_NOISE_SIDE}, leaving out maps with fewer "
                 "than two active positions.",
}

#: Whole metric name → one sentence, for the training metrics whose meaning is not obvious from the name.
SCALAR_DESCRIPTIONS: dict[str, str] = {
    "val/accuracy_tta": "Validation accuracy with flip test-time augmentation (--tta): the prediction is the mean "
                        "softmax of the image and its horizontal mirror; val/accuracy is the plain one.",
    "val/loss_tta": "Validation cross-entropy of the flip test-time-augmented prediction (--tta): the mean softmax "
                    "of the image and its horizontal mirror; val/loss is the plain one.",
}
