"""Training: settings, the model family, data, the training and evaluation steps, the run and its
checkpoints. May import ``convscope.pictures`` and ``convscope.tracking``; never optuna, the search
or the command line (pruning reaches the loop through a plain ``on_epoch_end`` callback)."""
