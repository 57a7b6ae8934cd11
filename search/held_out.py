"""The study's best network scored once on the test split it never saw.

Contract: the test split is the one every trial set aside (``--test-fraction``, or the folder's own
``test/``): the trials never train on it, prune by it or are picked by it. ``score_run`` loads the
study's champion's MLflow model (``runs:/<id>/model``, the network a user gets: the best trial's, or
its final training's), decodes the test split of
that run's own data settings (the decode cache makes this quick), and scores it once: accuracy,
its Wilson 95% interval, per class. None when the study's data has no test split.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from convscope.analysis.evaluate import BATCH, Evaluation
from convscope.search.sources import run_config
from convscope.train.config_sections import RunConfig
from convscope.train.data import load_data


def test_split(config: RunConfig):  # type: ignore[no-untyped-def]
    """The test split of ``config``'s data (None without one), from the decode cache where it is."""
    from convscope.tracking.stores import resolve_stores

    layout = resolve_stores(config.tracking.runs_dir, config.tracking.mlflow_uri).layout
    data = load_data(config.data, config.model.image_size, config.data.effective_seed(config.optim.seed),
                     cache_dir=Path(config.data.cache_dir) if config.data.cache_dir else layout.cache,
                     dataset_dir=Path(config.data.dataset_dir) if config.data.dataset_dir else layout.datasets,
                     progress=False)
    return data.test, data.class_names


def score_run(run_id: str, base: RunConfig, tracking_uri: str) -> Evaluation | None:
    """Run ``run_id``'s network on its data's test split; see the module docstring."""
    import mlflow.pyfunc

    trained = run_config(base, run_id)
    config = replace(trained, tracking=base.tracking)
    test, class_names = test_split(config)
    if test is None or not len(test):
        return None
    mlflow.set_tracking_uri(tracking_uri)
    network = mlflow.pyfunc.load_model(f"runs:/{run_id}/model").unwrap_python_model().network
    images, kept = test.take_available(torch.arange(len(test)))
    probabilities = torch.cat([network.probabilities(images[i : i + BATCH]) for i in range(0, len(images), BATCH)])
    labels = test.labels[kept].numpy()
    ids = [test.ids[int(i)] for i in kept]
    to_model = np.array([network.class_names.index(name) for name in class_names])
    return Evaluation(list(network.class_names), ids, to_model[labels], probabilities.numpy())
