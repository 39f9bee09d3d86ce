"""Calibrated relevance (:mod:`musicsearch.search.calibration`) on seeded clustered vectors: monotone, in [0, 1],
and "no good match" for meaningless queries."""

from __future__ import annotations

import json

import numpy as np

from conftest import gaussian_mixture_vectors
from musicsearch.index.backends.base import l2_normalize
from musicsearch.search.calibration import Calibration, background_spread, gibberish, null_threshold, random_mixtures


def test_calibration_is_monotone_and_says_no_good_match_for_nonsense() -> None:
    rng = np.random.default_rng(0)
    tracks, centers = gaussian_mixture_vectors(2000, 32, rng=rng, n_clusters=16, spread=(0.4, 0.6))
    mean = tracks.mean(axis=0)
    generic = l2_normalize(rng.standard_normal((48, 32)))  # background "texts"
    text_sd = background_spread(generic, tracks, mean)
    null = l2_normalize(rng.standard_normal((64, 32)))  # meaningless queries: random directions
    text_z0 = null_threshold(null, (null @ tracks.T).max(axis=1), mean, text_sd)
    audio_sd = background_spread(tracks[:200], tracks, mean, exclude_self=True)
    mixtures = random_mixtures(tracks[:500], 64, rng)
    audio_z0 = null_threshold(mixtures, (mixtures @ tracks.T).max(axis=1), mean, audio_sd)
    assert text_z0 > 2.5 and audio_z0 > 2.5  # the best of 2000 chance scores is far out in the tail
    cal = Calibration("t", mean.astype(np.float32), text_sd, text_z0, audio_sd, audio_z0, 2000, 48)

    def top_relevance(q: np.ndarray, w: float = 1.0) -> float:
        return float(cal.relevance(np.array([np.max(tracks @ q)]), q, w)[0])

    matching = l2_normalize(centers[:4, :32])  # the directions of clusters of tracks
    nonsense = l2_normalize(rng.standard_normal((20, 32)))  # fresh meaningless queries
    assert min(top_relevance(q) for q in matching) > 0.9
    assert np.median([top_relevance(q) for q in nonsense]) < 0.5  # "no good match", most of the time
    assert max(top_relevance(q) for q in nonsense) < min(top_relevance(q) for q in matching)
    scores = np.linspace(-1, 1, 201)
    for q, w in ((matching[0], 1.0), (nonsense[0], 0.0), (matching[1], 0.3)):
        rel = cal.relevance(scores, q, w)
        assert np.all(np.diff(rel) > 0) and rel.min() >= 0 and rel.max() <= 1  # strictly increasing in [0, 1]
    roundtrip = Calibration.from_json(json.loads(json.dumps(cal.to_json())))
    np.testing.assert_allclose(roundtrip.relevance(scores, matching[0], 1.0), cal.relevance(scores, matching[0], 1.0))
    assert len(set(gibberish(10, np.random.default_rng(0)))) == 10
