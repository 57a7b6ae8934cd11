"""Hyperparameter search over conv depth, width and dropout, the depth study and cross-run comparison."""
