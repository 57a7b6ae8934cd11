"""convscope: train small image CNNs and see, measure and search what every conv layer learned.

The rooms, from the top floor down (each imports only the rooms below it):

- ``convscope.cli``: the ``convscope`` command, each verb's parser and handler.
- ``convscope.search``: Optuna studies (space, objective, storage, budget, pruning).
- ``convscope.analysis``: CKA, probes, verdicts, evidence, compare, explain and the depth study.
- ``convscope.train``: settings, the model family, data, the training loop and checkpoints.
- ``convscope.pictures``: activation capture, feature maps, saliency, statistics and HTML pages.
- ``convscope.servers``: the ``ui``/``serve`` server processes and their health checks.
- ``convscope.tracking``: the run lifecycle, the Tracker protocol and its sinks, the stores.

In a checkout the rooms are the top-level folders; they install as this one package.
"""
