"""Text representation samplers: distributions and determinism (paper section 6)."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from musicsearch.errors import MusicSearchError
from musicsearch.text.sampling import SAMPLERS, get_sampler

TAGS = ["rock", "guitar", "energetic", "male vocal", "80s"]


def test_stochastic_k_is_uniform_over_1_to_L_and_tags_distinct() -> None:
    rng = np.random.default_rng(0)
    ks = collections.Counter()
    seen = collections.Counter()
    n = 20_000
    for _ in range(n):
        parts = get_sampler("stochastic")(TAGS, rng).split(", ")
        assert len(parts) == len(set(parts))
        ks[len(parts)] += 1
        seen.update(parts)
    for k in range(1, 6):
        assert abs(ks[k] / n - 0.2) < 0.015
    # each tag appears with probability E[k]/L = 3/5
    for t in TAGS:
        assert abs(seen[t] / n - 0.6) < 0.015


def test_tag_is_uniform_and_sentence_is_a_permutation() -> None:
    rng = np.random.default_rng(1)
    c = collections.Counter(get_sampler("tag")(TAGS, rng) for _ in range(10_000))
    assert set(c) == set(TAGS) and all(abs(v / 10_000 - 0.2) < 0.02 for v in c.values())
    s = get_sampler("sentence")(TAGS, rng)
    assert sorted(s.split(", ")) == sorted(TAGS)


def test_eval_mode_is_deterministic_and_seeded_runs_repeat() -> None:
    for name in SAMPLERS:
        a = get_sampler(name)(TAGS, np.random.default_rng(5), train=False)
        b = get_sampler(name)(TAGS, np.random.default_rng(9), train=False)
        assert a == b
        x = [get_sampler(name)(TAGS, np.random.default_rng(7)) for _ in range(3)]
        assert len(set(x)) == 1


def test_empty_tags_rejected() -> None:
    with pytest.raises(MusicSearchError, match="no tags"):
        get_sampler("stochastic")([], np.random.default_rng(0))
