"""Text representations of a track's tags (paper section 6): ``tag``, ``sentence``, ``stochastic``.

Each sampler is a pure function ``(tags, rng, *, train) -> str`` taking an explicit ``numpy.random.Generator``.
In evaluation (``train=False``) samplers are deterministic: ``tag`` gives the first tag, ``sentence`` and
``stochastic`` the full tag list in its stored order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from musicsearch.errors import MusicSearchError
from musicsearch.registry import Registry

TextSampler = Callable[..., str]
SAMPLERS: Registry[TextSampler] = Registry("text representation")
SEPARATOR = ", "


def _check(tags: Sequence[str]) -> None:
    if len(tags) == 0:
        raise MusicSearchError("a track has no tags; every training track needs at least one tag")


@SAMPLERS.register("tag")
def sample_tag(tags: Sequence[str], rng: np.random.Generator, *, train: bool = True) -> str:
    """One tag drawn uniformly from ``tags`` (the first tag when ``train`` is False)."""
    _check(tags)
    return tags[int(rng.integers(len(tags)))] if train else tags[0]


@SAMPLERS.register("sentence")
def sample_sentence(tags: Sequence[str], rng: np.random.Generator, *, train: bool = True) -> str:
    """All tags joined with ``", "``, shuffled in training."""
    _check(tags)
    order = rng.permutation(len(tags)) if train else np.arange(len(tags))
    return SEPARATOR.join(tags[int(i)] for i in order)


@SAMPLERS.register("stochastic")
def sample_stochastic(tags: Sequence[str], rng: np.random.Generator, *, train: bool = True) -> str:
    """Draw ``k`` uniformly from ``1..L`` (``L = len(tags)``), then ``k`` distinct tags in random order.

    This is the paper's stochastic text representation; with ``train=False`` it returns the full sentence.
    """
    _check(tags)
    if not train:
        return SEPARATOR.join(tags)
    k = int(rng.integers(1, len(tags) + 1))
    chosen = rng.choice(len(tags), size=k, replace=False)
    return SEPARATOR.join(tags[int(i)] for i in chosen)


def get_sampler(name: str) -> TextSampler:
    """The sampler registered as ``name`` (``tag``, ``sentence`` or ``stochastic``)."""
    return SAMPLERS.get(name)
