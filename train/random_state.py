"""The lock on the process's default random generators, for trials that share one process.

Trials run as threads of one process (``convscope search --workers-in threads``) share its
default generators: the CPU's and each CUDA device's. Two uses of them must not overlap:

- seeding and weight initialisation (``prepare``): another thread's draws in between would give
  the network different starting weights than ``--seed`` promises;
- a CUDA graph capture and any eager step: while a capture runs, the device's default generator
  is in its capturing state, and an eager dropout on another thread fails with "Attempt to
  increase offset for a CUDA generator not in capture mode".

- a capture and freeing the device's cached memory (``train.memory.release_memory``).

Whoever seeds, initialises weights, captures, runs an eager training or evaluation step or empties
the CUDA cache holds ``DEFAULT_GENERATORS``. Replaying a captured graph needs no lock. In a process with one trial
the lock is never contended (its cost is an uncontended acquire per eager batch).

What the lock does not give: dropout masks of trials that share a process come from one
generator, in the order the threads happen to draw, so such a trial is not bit-for-bit
reproducible alone (its starting weights are).
"""

from __future__ import annotations

import threading

DEFAULT_GENERATORS = threading.RLock()
