"""The one search function: text, example, or both; filters; negative terms; calibrated relevance.

:func:`search` (and :class:`Searcher`, which keeps a store and its model open for a server) ranks the tracks of
a store built by :func:`musicsearch.index.indexer.index_collection`.

**Query vector.** A text query is split by :func:`~musicsearch.search.query.parse_query` into what is wanted
(embedded as one text by the store's model: tags and sentences go through the same text tower) and negative
terms. An example (``like``) is
an indexed track (its stored track vector) or, from Python and the CLI, an audio file embedded on the fly exactly
as the indexer would. Text and example together: ``q = normalize(w·t̂ + (1 − w)·â)`` with ``w = text_weight``
(default 0.5: equal say), where ``t̂`` and ``â`` are the unit text and example vectors.

**Ranking.** Tracks are ranked by the cosine of ``q`` and their track vector (the mean of their windows, as in
the paper's retrieval protocol), inside the vector index: metadata filters become the index's ``allowed_ids``,
so ``k`` filtered results come back even when the filter keeps 0.1 % of the store. Each result then gets its
best-matching window (the window vector most similar to ``q``) and that window's start time.

**Negative terms** ("no vocals", "without drums", "-drums") are never embedded as part of the query. Each
negative text ``n_j`` is embedded alone; a track is penalised by how much more it resembles ``n_j`` than the
collection's average track does::

    score = cos(q, a) − λ · Σ_j max(0, cos(n̂_j, a) − n̂_j·ā)

with ``λ = negative_weight`` (default 1) and ``ā`` the mean unit track vector of the store. The penalty re-ranks
the top ``max(4k, k + 50)`` candidates of the positive query.

**Calibrated relevance.** Each score also gets a relevance in ``[0, 1]``, comparable across queries and
stores, from the store's score background (:mod:`musicsearch.search.calibration`); below
:data:`NO_MATCH_THRESHOLD` (0.5) the response says "no good match".
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from musicsearch.errors import MusicSearchError
from musicsearch.index.backends.base import l2_normalize
from musicsearch.index.backends.numpy_exact import exact_top_k
from musicsearch.index.embedder import Embedder
from musicsearch.index.metadata import MetadataFilter, TrackRecord
from musicsearch.index.store import Store
from musicsearch.search.calibration import Calibration, load_or_calibrate
from musicsearch.search.collection_map import CLUSTERS, load_or_build_map, map_view
from musicsearch.search.query import SURROGATES, ParsedQuery, parse_filters, parse_query, short_repr
from musicsearch.search.textenc import TextEmbeddingCache, open_embedder, thread_safe_text_encoder

__all__ = [
    "MAX_K",
    "NO_MATCH_THRESHOLD",
    "TEXT_CACHE_SIZE",
    "Result",
    "SearchResponse",
    "Searcher",
    "prepare_store",
    "search",
]

log = logging.getLogger(__name__)

#: Filters keeping at most this many tracks are ranked exactly from the tracks' vectors (read by id).
DIRECT_FILTER_MAX = 65_536
#: Most results one query may ask for.
MAX_K = 1000
#: Relevance below which the best result counts as "no good match".
NO_MATCH_THRESHOLD = 0.5


# --------------------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Result:
    """One search hit.

    Attributes:
        rank: 1-based position.
        id: the store's integer track id (used in URLs).
        track_id: the track's string id (relative path or manifest id).
        path: audio file (not sent over HTTP).
        title, artist, album, year, duration, folder, tags: metadata.
        score: raw cosine similarity to the query (after the negative-term penalty, if any).
        relevance: calibrated relevance in ``[0, 1]`` (see the module docstring).
        segment_start: start of the best-matching window in seconds from the file start.
        segment_end: its end in seconds (clipped to the track's duration when known).
        segment_score: the cosine of that window and the query.
    """

    rank: int
    id: int
    track_id: str
    path: str
    title: str | None
    artist: str | None
    album: str | None
    year: int | None
    duration: float | None
    folder: str | None
    tags: tuple[str, ...]
    score: float
    relevance: float
    segment_start: float
    segment_end: float
    segment_score: float | None

    def to_json(self, *, include_path: bool = True) -> dict[str, Any]:
        """JSON-ready fields (``path`` left out for HTTP clients)."""
        out: dict[str, Any] = {
            "rank": self.rank,
            "id": self.id,
            "track_id": self.track_id,
            "title": self.title,
            "artist": self.artist,
            "album": self.album,
            "year": self.year,
            "duration": self.duration,
            "folder": self.folder,
            "tags": list(self.tags),
            "score": round(self.score, 6),
            "relevance": round(self.relevance, 4),
            "segment": {
                "start": round(self.segment_start, 3),
                "end": round(self.segment_end, 3),
                "score": None if self.segment_score is None else round(self.segment_score, 6),
            },
        }
        if include_path:
            out["path"] = self.path
        return out


@dataclass
class SearchResponse:
    """Results with what the query was understood to be.

    Attributes:
        query: the parsed text query, or ``None``.
        like: the example: ``"track:<id>"`` or ``"file:<path>"``, or ``None``.
        filters: the filter applied.
        results: best first.
        no_good_match: the best result's relevance is below :data:`NO_MATCH_THRESHOLD` (or there is none).
        timings_ms: ``embed``, ``search``, ``metadata`` and ``total`` milliseconds.
    """

    query: ParsedQuery | None
    like: str | None
    filters: MetadataFilter
    results: list[Result]
    no_good_match: bool
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_json(self, *, include_path: bool = True) -> dict[str, Any]:
        """JSON-ready response."""
        f = self.filters
        return {
            "query": None
            if self.query is None
            else {"text": self.query.raw, "positive": self.query.positive, "negatives": list(self.query.negatives)},
            "like": self.like,
            "filters": {k: v for k, v in f.__dict__.items() if v not in (None, ())},
            "results": [r.to_json(include_path=include_path) for r in self.results],
            "no_good_match": self.no_good_match,
            "threshold": NO_MATCH_THRESHOLD,
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
        }


#: Largest integer track id (SQLite's 64-bit integers).
_MAX_ID = 2**63 - 1
#: Longest string track id or example path accepted, in characters.
_MAX_ID_CHARS = 4096


def _is_real(x: Any) -> bool:
    """A real number (not a bool); NaN passes here and fails every range check after."""
    return isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool)


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= int(k) <= MAX_K:
        raise MusicSearchError(f"k must be a whole number from 1 to {MAX_K}, got {k!r}")
    return int(k)


# --------------------------------------------------------------------------------------------------------------
# The searcher


def _store_path(path: Any) -> Path:
    """A store path as given by a user: a string or path-like, ``~`` expanded."""
    if isinstance(path, bytes) or not isinstance(path, str | os.PathLike):
        raise MusicSearchError(f"the store must be a directory path (a string), got {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str) or not text or "\x00" in text:
        raise MusicSearchError(f"the store path {short_repr(text)} is not a directory path; give the store's folder")
    return Path(text).expanduser()


#: Query texts whose embeddings a :class:`Searcher` keeps by default (about 1 KB each at 256-d).
TEXT_CACHE_SIZE = 1024


class Searcher:
    """A store and its model, open for many queries (the server holds one). Thread-safe (queries serialised).

    Args:
        store: an open store.
        embedder: the store's model (checked against the store).
        write_cache: save the calibration and map it computes into the store (best effort).
        text_cache_size: query texts whose embeddings are kept (an LRU cache; 0: none).
    """

    def __init__(
        self, store: Store, embedder: Embedder, *, write_cache: bool = True, text_cache_size: int = TEXT_CACHE_SIZE
    ) -> None:
        store.check_model(embedder)
        self.store = store
        self.embedder = embedder
        #: the query texts' embeddings, newest kept (hits/misses counted)
        self.text_cache = TextEmbeddingCache(thread_safe_text_encoder(embedder), text_cache_size)
        self.write_cache = write_cache
        self._lock = threading.RLock()
        self._calibration: Calibration | None = None
        self._map: dict[str, Any] | None = None

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        model: str | os.PathLike[str] | Embedder | None = None,
        text_cache_size: int = TEXT_CACHE_SIZE,
    ) -> Searcher:
        """Open a store for searching with its own model (``model=None``) or ``model`` after checking it matches.

        The model runs from its ONNX export when it has one (no torch: :mod:`musicsearch.search.textenc`).

        Args:
            path: the store directory (``~`` expanded).
            model: the model to check against the store's, or ``None`` for the store's own.
            text_cache_size: see :class:`Searcher`.

        Raises:
            MusicSearchError: not a store, or a model other than the store's.
        """
        store = Store.open(_store_path(path))
        try:
            embedder = open_embedder(store.settings.model_source if model is None else model)
            return cls(store, embedder, text_cache_size=text_cache_size)
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    def __enter__(self) -> Searcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- derived data (cached) -------------------------------------------------------------------------------

    def track_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """``(vector ids (N,), unit vectors (N, D))`` of every track, sorted by id (read through
        :meth:`~musicsearch.index.store.Store.vectors`)."""
        with self._lock:
            ids = self.store.tracks.ids()
            return ids, self.store.vectors(ids)

    def calibration(self) -> Calibration:
        """The store's calibration: from ``calibration.json`` when current, else computed (and saved)."""
        with self._lock:
            token = self.store.version_token()
            if self._calibration is not None and self._calibration.token == token:
                return self._calibration
            cal = load_or_calibrate(self.store, self.embedder, write_cache=self.write_cache)
            self._calibration = cal
            return cal

    def collection_map(
        self, *, method: str | None = None, limit: int = 20000, colour: str = CLUSTERS
    ) -> dict[str, Any]:
        """2-D coordinates of the collection's tracks for a plot (see
        :func:`~musicsearch.search.collection_map.map_coordinates`) and their colouring, cached.

        Args:
            method: ``"pca"`` or ``"umap"``; ``None`` takes the saved map whatever its method (``musicsearch index
                --map umap`` saves a UMAP one), else PCA.
            limit: most points returned (an even sample by id beyond).
            colour: ``"clusters"`` (named clusters of the joint space) or a tag family the collection has (the
                result's ``colourings`` lists them; see :mod:`musicsearch.search.collection_map`).

        Returns:
            ``{"method", "count", "total", "colour", "colourings", "groups", "points": [{"id", "x", "y", "title",
            "artist", "group"}]}`` with ``x, y`` in ``[0, 1]``: ``count`` tracks on the map (a seeded sample of
            :data:`~musicsearch.search.collection_map.MAP_MAX_POINTS` in a bigger store), ``total`` in the store;
            ``group`` indexes ``groups``, the legend (see :func:`~musicsearch.search.collection_map.map_view`).

        Raises:
            MusicSearchError: a colouring the map does not have.
        """
        with self._lock:
            self.store.reload_vectors()
            token = self.store.version_token()
            cached = self._map
            if cached is not None and cached["token"] == token and method in (None, cached["method"]):
                data = cached
            else:
                data = load_or_build_map(
                    self.store, token, method, write_cache=self.write_cache, embed_texts=self.text_cache
                )
                self._map = data
        return map_view(data, limit, colour)

    # -- lookups ---------------------------------------------------------------------------------------------

    def windows(self, track: int) -> list[float]:
        """Start times (seconds) of a track's windows."""
        with self._lock:
            return [w.start for w in self.store.db.windows(int(track))]

    def playable_path(self, track: int) -> Path:
        """The audio file of a track, under the store's security rule
        (:meth:`musicsearch.index.store.Store.playable_path`)."""
        with self._lock:
            return self.store.playable_path(int(track))

    def track(self, track: int | str) -> TrackRecord:
        """A track by integer id or string track id.

        Raises:
            MusicSearchError: unknown track.
        """
        with self._lock:
            rec = self._lookup(track)
        if rec is None:
            raise MusicSearchError(f"no track {short_repr(track)} in this store")
        return rec

    def _lookup(self, track: Any) -> TrackRecord | None:
        """The track of an integer id or string track id; ``None`` for anything that cannot name one (ids
        outside SQLite's 64-bit range, strings that are not UTF-8, other types)."""
        if isinstance(track, int | np.integer) and not isinstance(track, bool):
            return self.store.db.get_track(int(track)) if 0 <= int(track) <= _MAX_ID else None
        if isinstance(track, str) and len(track) <= _MAX_ID_CHARS and not SURROGATES.search(track):
            return self.store.db.find_track(track)
        return None

    def _example(self, like: int | str, allow_files: bool) -> tuple[np.ndarray, int | None, str]:
        """Unit example vector, the track id to leave out of results (or None), and its description."""
        rec: TrackRecord | None = None
        if isinstance(like, int | np.integer) and not isinstance(like, bool):
            rec = self._lookup(like)
            if rec is None:
                raise MusicSearchError(f"like={short_repr(like)}: no track with this id in the store")
        elif isinstance(like, str):
            if "\x00" in like or len(like) > _MAX_ID_CHARS:
                raise MusicSearchError(
                    f"like={short_repr(like)} is not a track id or a file path (a NUL byte, or over "
                    f"{_MAX_ID_CHARS} characters)"
                )
            rec = self._lookup(like)
            file = Path(like).expanduser()
            if rec is None and allow_files and file.is_file():
                vec, _, _ = self.embedder.embed_file(file, self.store.settings.plan)
                return vec, None, f"file:{like}"
            if rec is None:
                where = "an indexed track id or an audio file" if allow_files else "an indexed track id"
                raise MusicSearchError(f"like={short_repr(like)} is not {where}")
        else:
            raise MusicSearchError(
                f"like must be a track id (integer or string) or a file path, got {type(like).__name__}"
            )
        try:
            if rec.vector_id is None:
                raise MusicSearchError("no vector id")
            vec = self.store.vectors([rec.vector_id])[0]
        except MusicSearchError:
            raise MusicSearchError(f"track {rec.track_id!r} has no stored vector; re-index the collection") from None
        return vec, rec.id, f"track:{rec.id}"

    def _rank(self, q: np.ndarray, fetch: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``fetch`` track vectors for the unit query ``q`` among ``allowed`` (all when ``None``):
        ``(scores (fetch,), vector ids (fetch,))`` padded with ``-inf`` / ``-1``.

        A filter keeping at most :data:`DIRECT_FILTER_MAX` tracks is answered exactly by scoring those tracks'
        vectors read by id (an approximate index would have to scan nearly all of its cells for them); broader
        filters and no filter go through the index, the allowed ids as its selector (and so does a filter some
        of whose tracks the loaded vectors lack: an indexing run committed them after this searcher loaded).
        """
        if allowed is not None and allowed.size == 0:
            return np.full(fetch, -np.inf, np.float32), np.full(fetch, -1, np.int64)
        if allowed is not None and allowed.size <= DIRECT_FILTER_MAX:
            try:
                vecs = self.store.vectors(allowed)
            except MusicSearchError:
                vecs = None
            if vecs is not None:
                s, i = exact_top_k(vecs, allowed, q[None, :], fetch)  # ties: lower id first, as the backends
                return s[0], i[0]
        scores, vids = self.store.tracks.search(q, fetch, allowed_ids=allowed)
        return scores[0], vids[0]

    def _score(self, queries: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """``(Q, M)`` cosines of unit queries and the stored track vectors ``ids`` (read by id, exact)."""
        return queries @ self.store.vectors(ids).T

    # -- search ----------------------------------------------------------------------------------------------

    def search(
        self,
        query: str | None = None,
        like: int | str | None = None,
        k: int = 10,
        filters: MetadataFilter | Mapping[str, Any] | Sequence[str] | str | None = None,
        *,
        text_weight: float = 0.5,
        negative_weight: float = 1.0,
        allow_files: bool = True,
    ) -> SearchResponse:
        """Rank the store's tracks (see the module docstring).

        Args:
            query: text query (tags or a sentence; negative terms allowed).
            like: example: an integer track id, a string track id, or (``allow_files``) an audio file path.
            k: results wanted (1 to :data:`MAX_K`).
            filters: metadata filter (see :func:`~musicsearch.search.query.parse_filters`).
            text_weight: weight ``w`` of the text when both ``query`` and ``like`` are given (0 to 1).
            negative_weight: penalty weight ``λ`` of negative terms (>= 0).
            allow_files: accept a file path for ``like`` (the HTTP API says no).

        Returns:
            The :class:`SearchResponse`.

        Raises:
            MusicSearchError: no query and no example, a bad query, ``k``, filter, weight or example.
        """
        t0 = time.perf_counter()
        k = _check_k(k)
        if not (_is_real(text_weight) and 0.0 <= float(text_weight) <= 1.0):
            raise MusicSearchError(f"text_weight must be a number from 0 to 1, got {short_repr(text_weight)}")
        if not (_is_real(negative_weight) and 0.0 <= float(negative_weight) <= 10.0):
            raise MusicSearchError(f"negative_weight must be a number from 0 to 10, got {short_repr(negative_weight)}")
        parsed = parse_query(query) if query is not None else None
        if parsed is None and like is None:
            raise MusicSearchError("give a text query, an example track (like), or both")
        if parsed is not None and not parsed.positive and like is None:
            raise MusicSearchError(
                f"the query {parsed.raw!r} says only what to leave out ({', '.join(parsed.negatives)}); "
                "add what you want to hear, e.g. 'piano, no vocals'"
            )
        flt = parse_filters(filters)
        t_text = time.perf_counter()  # the texts are encoded outside the lock: concurrent queries in parallel
        texts = ([parsed.positive] if parsed is not None and parsed.positive else []) + (
            list(parsed.negatives) if parsed is not None else []
        )
        text_vecs = self.text_cache(texts) if texts else np.zeros((0, self.store.settings.dim), np.float32)
        text_ms = (time.perf_counter() - t_text) * 1e3
        with self._lock:
            self.store.reload_vectors()  # an indexing run may have updated the store since it was opened
            return self._search(
                parsed, like, k, flt, float(text_weight), float(negative_weight), allow_files, t0, text_vecs, text_ms
            )

    def _search(
        self,
        parsed: ParsedQuery | None,
        like: int | str | None,
        k: int,
        flt: MetadataFilter,
        text_weight: float,
        negative_weight: float,
        allow_files: bool,
        t0: float,
        text_vecs: np.ndarray,
        text_ms: float,
    ) -> SearchResponse:
        store = self.store
        cal = self.calibration()
        t_embed = time.perf_counter()
        has_text = parsed is not None and bool(parsed.positive)
        t_vec = text_vecs[0] if has_text else None
        neg_vecs = text_vecs[1:] if has_text else text_vecs
        example, leave_out, like_desc = (None, None, None) if like is None else self._example(like, allow_files)
        if t_vec is not None and example is not None:
            w = text_weight
            q = l2_normalize((w * t_vec + (1 - w) * example)[None, :], what="combined query")[0]
        elif t_vec is not None:
            w, q = 1.0, t_vec
        else:
            assert example is not None
            w, q = 0.0, l2_normalize(example[None, :], what="the example's vector")[0]
        embed_ms = text_ms + (time.perf_counter() - t_embed) * 1e3

        t_search = time.perf_counter()
        allowed = store.db.resolve_filter(flt, level="track")
        n_tracks = len(store.tracks)
        fetch = k + (1 if leave_out is not None else 0)
        if neg_vecs.shape[0]:
            fetch = max(fetch, 4 * k, k + 50)
        fetch = max(1, min(fetch, max(n_tracks, 1)))
        while True:
            scores, vids = self._rank(q, fetch, allowed)
            scores, vids = scores.astype(np.float64), vids
            keep = vids >= 0
            scores, vids = scores[keep], vids[keep]
            if neg_vecs.shape[0] and vids.size:
                neg = self._score(neg_vecs, vids).astype(np.float64)  # (n_neg, M)
                base = (neg_vecs @ cal.mean_vector).astype(np.float64)[:, None]  # (n_neg, 1)
                penalty = np.maximum(0.0, neg - base).sum(axis=0)  # (M,)
                scores = scores - negative_weight * penalty
                order = np.lexsort((vids, -scores))
                scores, vids = scores[order], vids[order]
            # only committed tracks count: vectors saved by a commit still in progress (or cut short by a kill)
            # have no track yet; when they took places, fetch deeper until k committed tracks remain
            refs = store.db.lookup_vectors(vids)
            hits = [(s, ref) for s, ref in zip(scores, refs) if ref is not None and ref.track.id != leave_out][:k]
            if len(hits) >= k or fetch >= n_tracks:
                break
            fetch = min(n_tracks, 2 * fetch + k - len(hits))
        search_ms = (time.perf_counter() - t_search) * 1e3

        t_meta = time.perf_counter()
        relevance = cal.relevance(np.array([s for s, _ in hits]), q, w) if hits else np.zeros(0)
        segments = self._segments(q, [ref.track for _, ref in hits])
        results = []
        for rank, ((score, ref), rel) in enumerate(zip(hits, relevance), 1):
            rec = ref.track
            start, seg_score = segments.get(rec.id, (0.0, None))
            end = start + store.settings.plan.window_seconds
            if rec.duration is not None:
                end = min(end, max(float(rec.duration), start))
            results.append(
                Result(
                    rank=rank,
                    id=rec.id,
                    track_id=rec.track_id,
                    path=rec.path,
                    title=rec.title,
                    artist=rec.artist,
                    album=rec.album,
                    year=rec.year,
                    duration=rec.duration,
                    folder=rec.folder,
                    tags=rec.tags,
                    score=float(score),
                    relevance=float(rel),
                    segment_start=float(start),
                    segment_end=float(end),
                    segment_score=seg_score,
                )
            )
        meta_ms = (time.perf_counter() - t_meta) * 1e3
        best = results[0].relevance if results else 0.0
        return SearchResponse(
            query=parsed,
            like=like_desc,
            filters=flt,
            results=results,
            no_good_match=best < NO_MATCH_THRESHOLD,
            timings_ms={
                "embed": embed_ms,
                "search": search_ms,
                "metadata": meta_ms,
                "total": (time.perf_counter() - t0) * 1e3,
            },
        )

    def _segments(self, q: np.ndarray, tracks: Sequence[TrackRecord]) -> dict[int, tuple[float, float]]:
        """Best window (start seconds, cosine) of each track for the unit query ``q``: the tracks' window vectors
        read by id (:meth:`~musicsearch.index.store.Store.vectors`) and compared with ``q`` (exact)."""
        owner: dict[int, tuple[int, float]] = {}
        for rec in tracks:
            for w in self.store.db.windows(rec.id):
                owner[w.vector_id] = (rec.id, w.start)
        if not owner:
            return {}
        ids = np.array(sorted(owner), np.int64)
        best: dict[int, tuple[float, float]] = {}
        for vid, s in zip(ids.tolist(), (self.store.vectors(ids, level="window") @ q).tolist()):
            track, start = owner[vid]
            if math.isfinite(s) and (track not in best or s > best[track][1]):
                best[track] = (start, float(s))
        return best

    def similar(self, track: int | str, k: int = 10, filters: Any = None) -> SearchResponse:
        """Tracks most like an indexed track (the track itself left out)."""
        rec = self.track(track)
        return self.search(like=rec.id, k=k, filters=filters, allow_files=False)


# --------------------------------------------------------------------------------------------------------------
# The one function


def search(
    store: str | os.PathLike[str] | Searcher,
    query: str | None = None,
    like: int | str | None = None,
    k: int = 10,
    filters: MetadataFilter | Mapping[str, Any] | Sequence[str] | str | None = None,
    model: str | os.PathLike[str] | Embedder | None = None,
    *,
    text_weight: float = 0.5,
    negative_weight: float = 1.0,
) -> list[Result]:
    """Search a store by text, by example, or both.

    Args:
        store: a store directory (``~`` expanded), or an open :class:`Searcher` (reuse one for many queries).
        query: text: tags or a sentence, negative terms allowed (``"calm piano, no vocals"``).
        like: example: an indexed track (integer id or string track id) or an audio file.
        k: results wanted (1 to :data:`MAX_K`).
        filters: metadata filter, e.g. ``["artist=Nina Simone", "year>=1960", "tag=jazz"]`` or
            ``{"year_min": 1960, "tags": ["jazz"]}`` (see :func:`~musicsearch.search.query.parse_filters`; a string
            where a list of tags is expected is one tag: ``{"tags": "jazz"}``).
        model: the store's model by default; another one is refused unless it is the same model.
        text_weight: weight of the text when ``query`` and ``like`` are both given.
        negative_weight: penalty weight of negative terms.

    Returns:
        Results, best first (see :class:`Result`).

    Raises:
        MusicSearchError: bad input (empty or huge query, bad ``k`` or filter, unknown example), a path that is
            not a store, or a model other than the store's.
    """
    if model is not None and not isinstance(model, str | os.PathLike | Embedder):
        raise MusicSearchError(f"model must be a model name, a path or an Embedder, got {type(model).__name__}")
    if isinstance(store, Searcher):
        if model is not None:
            store.store.load_embedder(model)  # refuses a model other than the store's
        return store.search(query, like, k, filters, text_weight=text_weight, negative_weight=negative_weight).results
    with Searcher.open(store, model=model) as searcher:
        return searcher.search(
            query, like, k, filters, text_weight=text_weight, negative_weight=negative_weight
        ).results


def prepare_store(
    store: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | Embedder | None = None,
    map_method: str | None = "pca",
) -> Calibration:
    """Compute and save a store's calibration (and its map) after indexing, so the first query is fast.

    Args:
        store: the store directory.
        model: the store's model (loaded from the store's settings when omitted).
        map_method: ``"pca"``, ``"umap"``, or ``None`` to skip the map.

    Returns:
        The calibration.
    """
    with Searcher.open(store, model=model) as searcher:
        cal = searcher.calibration()
        if map_method is not None and len(searcher.store):
            searcher.collection_map(method=map_method)
        return cal
