"""Memory given back between runs that share one process (a study's trials, a depth study's folds)."""

from __future__ import annotations

import gc

import torch

from convscope.train.random_state import DEFAULT_GENERATORS


def release_memory(*, freeze: bool = True) -> None:
    """Give memory back between trials (CUDA caches especially, after an OOM). What survives the
    collection is frozen (``gc.freeze``: left out of later collections): the imports, stores and
    caches a worker keeps for all its trials, so the next trial's collection walks only what that
    trial made (a full walk took 0.3 s a trial on a 2-core CPU, most of a short trial's fixed cost).

    Call it when nothing of the finished run is referenced any more, and never while an exception
    from it is in flight: its traceback holds the run's objects, which would be frozen for good.
    ``freeze=False`` where other runs are still going on in this process (their objects would be)."""
    gc.collect()
    if freeze:
        gc.freeze()
    if torch.cuda.is_available():
        with DEFAULT_GENERATORS:  # never in the middle of another thread's CUDA graph capture
            torch.cuda.empty_cache()
