"""Hyperparameter search over conv depth, width and dropout (issue 4)."""
