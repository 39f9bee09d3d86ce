"""Calibrated relevance: a store's score background, so that scores mean the same across queries and stores.

**Calibrated relevance.** Cosines are not comparable across queries (some texts sit closer to every track),
nor across collections. Each score ``s`` of a query ``q`` becomes a z-score against the store itself::

    z = (s − q̂·ā) / σ            relevance = 1 / (1 + exp(−2·(z − z₀)))

``q̂·ā`` is the query's cosine with the average track (its expected score for a random track), ``σ`` the spread of
such centred cosines over random (generic text, track) pairs for text queries (``σ_text``) or random (track,
track) pairs for examples (``σ_audio``), and ``z₀`` the 95th percentile of the best z-score that *meaningless*
queries reach in the whole store (random letter strings for text, random mixtures of track vectors for
examples; :func:`calibrate`). So a result at relevance 0.5 matches as well as the best hit of a meaningless
query does once in twenty; below :data:`~musicsearch.search.api.NO_MATCH_THRESHOLD` (0.5) the response says
"no good match". ``z₀`` grows with the collection (more tracks, higher chance maxima), so large and small
stores are judged alike. Text plus example mixes ``σ`` and ``z₀`` by ``w``. Relevance is strictly increasing in
the score within a query, and comparable across queries.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from musicsearch.fileio import write_json
from musicsearch.index.backends.base import l2_normalize
from musicsearch.index.embedder import Embedder
from musicsearch.index.store import Store
from musicsearch.losses.registry import objective
from musicsearch.search.textenc import OnnxEmbedder

__all__ = [
    "CALIBRATION_FILE",
    "GENERIC_QUERIES",
    "Calibration",
    "background_spread",
    "calibrate",
    "gibberish",
    "load_or_calibrate",
    "null_threshold",
    "random_mixtures",
]

log = logging.getLogger(__name__)

#: Logistic slope of the relevance mapping, per unit of z.
RELEVANCE_SLOPE = 2.0
#: Quantile of the best z-scores of meaningless queries that maps to relevance 0.5.
BACKGROUND_QUANTILE = 0.95
CALIBRATION_FILE = "calibration.json"
CALIBRATION_VERSION = 2

#: Generic music descriptions: the text half of the calibration background (with up to 32 of the store's tags).
GENERIC_QUERIES: tuple[str, ...] = (
    "rock", "pop song", "jazz", "classical music", "electronic dance music", "hip hop", "ambient", "folk song",
    "heavy metal", "blues", "country", "reggae", "piano", "acoustic guitar", "electric guitar", "drums",
    "strings", "female vocals", "male vocals", "instrumental", "happy", "sad", "calm", "energetic",
    "fast tempo", "slow tempo", "loud", "quiet", "dark", "romantic", "orchestral", "solo piano", "guitar solo",
    "bass", "synthesizer", "choir", "an upbeat dance track", "relaxing background music", "a sad song with piano",
    "an energetic rock song with electric guitars", "a calm ambient piece", "music for studying", "party music",
    "a jazz trio", "a song with a female singer", "lo-fi beats", "epic cinematic music", "a children's song",
)  # fmt: skip


@dataclass(frozen=True)
class Calibration:
    """The store's score background (see the module docstring).

    Attributes:
        token: the store version it was computed for.
        mean_vector: ``(D,)`` float32 mean unit track vector ``ā``.
        text_sd: spread ``σ`` of centred (text, track) cosines.
        text_z0: the z-score mapped to relevance 0.5 for text queries (what meaningless texts reach).
        audio_sd, audio_z0: the same for examples (track, track).
        n_tracks, n_texts: background size.
    """

    token: str
    mean_vector: np.ndarray
    text_sd: float
    text_z0: float
    audio_sd: float
    audio_z0: float
    n_tracks: int
    n_texts: int
    slope: float = RELEVANCE_SLOPE

    def z_scores(self, scores: np.ndarray, query: np.ndarray, text_weight: float) -> np.ndarray:
        """``z = (s − q̂·ā) / σ`` for raw scores ``(M,)`` of one unit query ``(D,)``; ``σ`` mixes the text and
        audio spreads by ``text_weight`` (1: text query, 0: example)."""
        w = float(text_weight)
        sd = w * self.text_sd + (1 - w) * self.audio_sd
        return (np.asarray(scores, np.float64) - float(query @ self.mean_vector)) / sd

    def relevance(self, scores: np.ndarray, query: np.ndarray, text_weight: float) -> np.ndarray:
        """Calibrated relevance in ``[0, 1]`` of raw scores ``(M,)`` for one unit query; increasing in the score."""
        w = float(text_weight)
        z0 = w * self.text_z0 + (1 - w) * self.audio_z0
        z = self.z_scores(scores, query, w)
        return 1.0 / (1.0 + np.exp(-self.slope * (z - z0)))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready fields (``calibration.json``)."""
        return {
            "version": CALIBRATION_VERSION,
            "token": self.token,
            "mean_vector": [float(x) for x in self.mean_vector],
            "text_sd": self.text_sd,
            "text_z0": self.text_z0,
            "audio_sd": self.audio_sd,
            "audio_z0": self.audio_z0,
            "n_tracks": self.n_tracks,
            "n_texts": self.n_texts,
            "slope": self.slope,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Calibration:
        """Inverse of :meth:`to_json`."""
        return cls(
            token=str(obj["token"]),
            mean_vector=np.asarray(obj["mean_vector"], np.float32),
            text_sd=float(obj["text_sd"]),
            text_z0=float(obj["text_z0"]),
            audio_sd=float(obj["audio_sd"]),
            audio_z0=float(obj["audio_z0"]),
            n_tracks=int(obj["n_tracks"]),
            n_texts=int(obj["n_texts"]),
            slope=float(obj.get("slope", RELEVANCE_SLOPE)),
        )


def background_spread(
    queries: np.ndarray, tracks: np.ndarray, mean: np.ndarray, *, exclude_self: bool = False
) -> float:
    """Standard deviation ``σ`` of the centred scores ``q·a − q·ā`` over all (query, track) pairs.

    Args:
        queries: ``(Q, D)`` unit vectors.
        tracks: ``(N, D)`` unit track vectors.
        mean: ``(D,)`` mean track vector ``ā``.
        exclude_self: the queries are the first ``Q`` tracks; leave out their pairs with themselves.

    Returns:
        ``σ``; 1.0 when there are fewer than 2 pairs or no spread (a store of one track).
    """
    centred = queries @ tracks.T - (queries @ mean)[:, None]  # (Q, N)
    if exclude_self:
        mask = np.ones(centred.shape, bool)
        idx = np.arange(min(centred.shape))
        mask[idx, idx] = False
        values = centred[mask]
    else:
        values = centred.ravel()
    sd = float(values.std()) if values.size >= 2 else 0.0
    return sd if sd > 1e-6 else 1.0


def null_threshold(null_queries: np.ndarray, best_scores: np.ndarray, mean: np.ndarray, sd: float) -> float:
    """``z₀``: the :data:`BACKGROUND_QUANTILE` quantile of the z-scores ``(best − q·ā) / σ`` that meaningless
    queries reach with their best hit in the store.

    Args:
        null_queries: ``(Q, D)`` unit vectors of meaningless queries.
        best_scores: ``(Q,)`` each one's top cosine over the whole store.
        mean: ``(D,)`` mean track vector ``ā``.
        sd: the spread ``σ`` of the same kind of query.

    Returns:
        ``z₀`` (1.645, a normal's 95th percentile, when there are no null queries).
    """
    best = np.asarray(best_scores, np.float64)
    ok = np.isfinite(best)
    if not ok.any():
        return 1.645
    z = (best[ok] - (null_queries[ok] @ mean)) / sd
    return float(np.quantile(z, BACKGROUND_QUANTILE))


def gibberish(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` meaningless queries: two or three random lower-case letter strings of 3 to 8 letters."""
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return [
        " ".join("".join(rng.choice(letters, int(rng.integers(3, 9)))) for _ in range(int(rng.integers(2, 4))))
        for _ in range(n)
    ]


def random_mixtures(vectors: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` unit vectors ``normalize(Σ g_i v_i)`` with Gaussian ``g``: directions with the spread of ``vectors``
    that stand for nothing in particular (the meaningless queries of query by example). ``(n, D)``."""
    g = rng.standard_normal((n, vectors.shape[0])) / np.sqrt(vectors.shape[0])
    return l2_normalize(g @ (vectors - vectors.mean(axis=0)) + vectors.mean(axis=0), what="random mixtures")


def calibrate(
    store: Store,
    embedder: Embedder,
    *,
    max_tracks: int = 4000,
    n_null: int = 64,
    seed: int = 0,
) -> Calibration:
    """Compute a store's score background (see the module docstring).

    * ``σ_text``: spread of centred cosines of :data:`GENERIC_QUERIES` plus up to 32 of the store's tags (a
      classification model: its tag vocabulary) with the tracks; ``σ_audio``: the same for pairs of tracks.
    * ``z₀``: 95th percentile of the best z-score reached in the whole store (through the vector index) by
      ``n_null`` meaningless queries: random letter strings for text (random mixtures of tag embeddings for a
      classification model), random mixtures of track vectors for examples.

    Args:
        store: the store.
        embedder: its model.
        max_tracks: sample of tracks for the spreads.
        n_null: meaningless queries of each kind.
        seed: the one seed of the samples.

    Returns:
        The :class:`Calibration` (not yet saved).
    """
    rng = np.random.default_rng(seed)
    token = store.version_token()
    dim = store.settings.dim
    n, mean, _, sample = store.sample_tracks(max_sample=max_tracks, seed=seed)
    # order the sample by content, not by vector id, so that the same collection numbered differently (a store
    # merged from shards) calibrates the same whenever the whole store fits in the sample
    sample = sample[np.lexsort(sample.T[::-1])]
    if n == 0:
        return Calibration(token, np.zeros(dim, np.float32), 1.0, 1.645, 1.0, 1.645, 0, 0)
    # an ONNX export has a text tower, so it is never a classification model (and holds no torch config)
    config = None if isinstance(embedder, OnnxEmbedder) else embedder.model.config
    if config is not None and not objective(config.objective).text_tower:  # a text is a tag of the classifier
        texts = list(getattr(config, "tags", ()))
        text_vecs = embedder.embed_texts(texts)
        null_text = random_mixtures(text_vecs, n_null, rng)
    else:
        store_tags = store.db.tag_names()
        if len(store_tags) > 32:
            store_tags = [store_tags[i] for i in np.sort(rng.choice(len(store_tags), 32, False))]
        texts = list(dict.fromkeys([*GENERIC_QUERIES, *store_tags]))
        text_vecs = embedder.embed_texts(texts)
        null_text = embedder.embed_texts(gibberish(n_null, rng))
    text_sd = background_spread(text_vecs, sample, mean)
    probes = sample[: min(256, sample.shape[0])]
    audio_sd = background_spread(probes, sample, mean, exclude_self=True)
    null_audio = random_mixtures(sample[: min(1024, sample.shape[0])], n_null, rng)
    best_text = store.tracks.search(null_text, 1)[0][:, 0]
    best_audio = store.tracks.search(null_audio, 1)[0][:, 0]
    return Calibration(
        token=token,
        mean_vector=mean,
        text_sd=text_sd,
        text_z0=null_threshold(null_text, best_text, mean, text_sd),
        audio_sd=audio_sd,
        audio_z0=null_threshold(null_audio, best_audio, mean, audio_sd),
        n_tracks=int(sample.shape[0]),
        n_texts=len(texts),
    )


def load_or_calibrate(store: Store, embedder: Embedder, *, write_cache: bool = True) -> Calibration:
    """A store's calibration: from ``calibration.json`` when it is current, else computed by :func:`calibrate`.

    Args:
        store: the store.
        embedder: its model.
        write_cache: save a computed calibration into the store (best effort: a read-only store only logs).

    Returns:
        The :class:`Calibration` of the store's current version.
    """
    token = store.version_token()
    file = store.path / CALIBRATION_FILE
    cal: Calibration | None = None
    try:
        obj = json.loads(file.read_text(encoding="utf-8"))
        if obj.get("token") == token and obj.get("version") == CALIBRATION_VERSION:
            cal = Calibration.from_json(obj)
    except (OSError, ValueError, KeyError):
        cal = None
    if cal is None:
        cal = calibrate(store, embedder)
        if write_cache:
            try:
                write_json(file, cal.to_json(), indent=None)
            except OSError as exc:
                log.warning("cannot save %s: %s", file, exc)
    return cal
