"""Analysis: answers across runs, from numbers.

CKA similarity, linear probes, training verdicts, the evidence behind ``explain``, ``compare``
and the depth study (k-fold cross-validation per depth, ablation, the one-standard-error rule).
May import ``convscope.train``, ``convscope.pictures`` and ``convscope.tracking``; never
``convscope.search`` or the command line: a study's best trial reaches it as a plain config.
"""
