"""Search: Optuna studies over depth, width, dropout and the training recipe (space, objective,
storage, time budget, pruning, the study report) and resolving a study's best trial for the
depth study. May import ``convscope.analysis``, ``convscope.train`` and ``convscope.tracking``."""
