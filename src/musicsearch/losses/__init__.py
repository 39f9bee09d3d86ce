"""Training objectives, chosen by name from :data:`musicsearch.losses.registry.OBJECTIVES`: ``contrastive``,
``triplet``, ``classification``.

One head per file (``contrastive.py``, ``triplet.py``, ``classification.py``, ``soft_targets.py``); import them
from there. This package imports nothing itself, so ``musicsearch.losses.registry`` can be read without torch.
"""
