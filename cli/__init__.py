"""The ``convscope`` command line: every command's parser and handler.

The one place with argparse code. A usage error needs only the flags and the config
file, so handlers check those first and import torch, MLflow or Optuna only after.
"""
