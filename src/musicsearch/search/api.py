"""The one search function: text, example, or both; filters; negative terms; calibrated relevance.

:func:`search` (and :class:`Searcher`, which keeps a store and its model open for a server) ranks the tracks of
a store built by :func:`musicsearch.index.indexer.index_collection`.

**Query vector.** A text query is split by :func:`parse_query` into what is wanted (embedded as one text by the
store's model: tags and sentences go through the same text tower) and negative terms. An example (``like``) is
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

**Calibrated relevance.** Cosines are not comparable across queries (some texts sit closer to every track),
nor across collections. Each score ``s`` of a query ``q`` becomes a z-score against the store itself::

    z = (s − q̂·ā) / σ            relevance = 1 / (1 + exp(−2·(z − z₀)))

``q̂·ā`` is the query's cosine with the average track (its expected score for a random track), ``σ`` the spread of
such centred cosines over random (generic text, track) pairs for text queries (``σ_text``) or random (track,
track) pairs for examples (``σ_audio``), and ``z₀`` the 95th percentile of the best z-score that *meaningless*
queries reach in the whole store (random letter strings for text, random mixtures of track vectors for
examples; :func:`calibrate`). So a result at relevance 0.5 matches as well as the best hit of a meaningless
query does once in twenty; below :data:`NO_MATCH_THRESHOLD` (0.5) the response says "no good match". ``z₀``
grows with the collection (more tracks, higher chance maxima), so large and small stores are judged alike.
Text plus example mixes ``σ`` and ``z₀`` by ``w``. Relevance is strictly increasing in the score within a
query, and comparable across queries.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from musicsearch.errors import MusicSearchError
from musicsearch.fileio import write_json
from musicsearch.index.backends.numpy_exact import exact_top_k
from musicsearch.index.embedder import Embedder, unit_rows
from musicsearch.index.indexer import METADATA_FILE, Store
from musicsearch.index.metadata import MetadataDB, MetadataFilter, TrackRecord, connect_readonly, fold
from musicsearch.index.store import VectorBackend
from musicsearch.search.textenc import OnnxEmbedder, TextEmbeddingCache, open_embedder

__all__ = [
    "GENERIC_QUERIES",
    "MAX_K",
    "MAX_QUERY_CHARS",
    "NO_MATCH_THRESHOLD",
    "Calibration",
    "FilterIndex",
    "ParsedQuery",
    "Result",
    "SearchResponse",
    "Searcher",
    "calibrate",
    "parse_filters",
    "parse_query",
    "prepare_store",
    "scan_vectors",
    "search",
]

log = logging.getLogger(__name__)

#: Longest accepted text query, in characters.
MAX_QUERY_CHARS = 500
#: Most negative terms in one query.
MAX_NEGATIVES = 8
#: Filters keeping at most this many tracks are ranked exactly from the tracks' vectors (read by id).
DIRECT_FILTER_MAX = 65_536
#: Most results one query may ask for.
MAX_K = 1000
#: Relevance below which the best result counts as "no good match".
NO_MATCH_THRESHOLD = 0.5
#: Logistic slope of the relevance mapping, per unit of z.
RELEVANCE_SLOPE = 2.0
#: Quantile of the best z-scores of meaningless queries that maps to relevance 0.5.
BACKGROUND_QUANTILE = 0.95
CALIBRATION_FILE = "calibration.json"
MAP_FILE = "map.json"
#: Tracks drawn on the collection map at most (a seeded sample beyond).
MAP_MAX_POINTS = 20_000
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


# --------------------------------------------------------------------------------------------------------------
# Query parsing

#: Words that start a negative term.
NEGATION_WORDS = frozenset({"no", "without", "not", "minus", "except", "excluding", "exclude"})
#: Words that end a negative term (and are dropped next to one).
CONJUNCTIONS = frozenset({"and", "but", "or", "with", "yet", "plus"})
#: Words of a negative term after its marker, at most.
MAX_NEGATIVE_WORDS = 3
_TOKEN = re.compile(r"""-"[^"]*"|-'[^']*'|[,;.!?]|[^\s,;.!?]+""")


@dataclass(frozen=True)
class ParsedQuery:
    """A text query split into what is wanted and what is not.

    Attributes:
        raw: the query as given (normalised: NFC, spaces collapsed).
        positive: the text embedded as the query ("" when the query has only negative terms).
        negatives: negative terms, each embedded alone.
    """

    raw: str
    positive: str
    negatives: tuple[str, ...] = ()


#: Control characters (Unicode category Cc) other than tab, newline and carriage return.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
#: Lone surrogates: what undecodable bytes become in ``sys.argv`` and file names (``surrogateescape``).
_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_text(text: Any, what: str) -> str:
    """``text`` checked and normalised (NFC, spaces collapsed); every check runs at C speed, so a huge string is
    refused as fast as a short one."""
    if not isinstance(text, str):
        raise MusicSearchError(f"{what} must be a string, got {type(text).__name__}")
    if "\ufffd" in text or _SURROGATE.search(text):
        raise MusicSearchError(f"{what} is not valid UTF-8 text (it holds undecodable bytes); send UTF-8")
    if _CONTROL.search(text):
        raise MusicSearchError(f"{what} holds control characters; send plain text")
    text = " ".join(unicodedata.normalize("NFC", text).split())
    if len(text) > MAX_QUERY_CHARS:
        raise MusicSearchError(
            f"{what} is {len(text)} characters long; the limit is {MAX_QUERY_CHARS}: describe the music in a sentence"
        )
    return text


def parse_query(text: str) -> ParsedQuery:
    """Split a query into its positive text and its negative terms.

    Rule (applied left to right, case-insensitive markers):

    * ``-word`` or ``-"a phrase"`` is a negative term;
    * ``no``, ``without``, ``not``, ``minus``, ``except``, ``excluding``, ``exclude`` start a negative term of
      the following words, up to 3, stopping at punctuation (``, ; . ! ?``), a conjunction (``and but or with yet
      plus``) or another marker: ``"piano, no vocals"`` -> ``"piano"`` minus ``"vocals"``. Write
      ``"no drums, no bass"`` (or ``-drums -bass``) for two negative terms;
    * conjunctions next to a removed negative term are dropped (``"calm piano with no vocals"`` -> ``"calm
      piano"``), and so is leftover punctuation at the ends.

    Args:
        text: the query.

    Returns:
        The :class:`ParsedQuery`.

    Raises:
        MusicSearchError: empty, over :data:`MAX_QUERY_CHARS` characters, holding control characters or
            undecodable bytes, or more than :data:`MAX_NEGATIVES` negative terms.
    """
    raw = _check_text(text, "the query")
    if not raw:
        raise MusicSearchError("the query is empty; describe the music you want, e.g. 'calm piano, no vocals'")
    tokens = _TOKEN.findall(raw)
    pos: list[str] = []
    negs: list[str] = []

    def is_word(tok: str) -> bool:
        return tok not in ",;.!?"

    def drop_trailing_conjunctions() -> None:
        while pos and pos[-1].lower() in CONJUNCTIONS:
            pos.pop()

    i, n = 0, len(tokens)
    after_negative = False
    while i < n:
        tok = tokens[i]
        low = tok.lower()
        if after_negative and low in CONJUNCTIONS:
            i += 1
            continue
        after_negative = False
        if tok.startswith("-") and len(tok) > 1 and not _is_number(tok):
            term = tok[1:].strip("\"'").strip()
            if term:
                negs.append(term)
                drop_trailing_conjunctions()
                after_negative = True
            i += 1
            continue
        if low in NEGATION_WORDS and i + 1 < n and is_word(tokens[i + 1]):
            j = i + 1
            words: list[str] = []
            while (
                j < n
                and is_word(tokens[j])
                and tokens[j].lower() not in CONJUNCTIONS | NEGATION_WORDS
                and not tokens[j].startswith("-")
                and len(words) < MAX_NEGATIVE_WORDS
            ):
                words.append(tokens[j])
                j += 1
            if words:
                negs.append(" ".join(words))
                drop_trailing_conjunctions()
                after_negative = True
                i = j
                continue
        pos.append(tok)
        i += 1
    positive = _join_tokens(pos)
    seen: set[str] = set()
    negatives = tuple(t for t in negs if not (t.casefold() in seen or seen.add(t.casefold())))  # type: ignore[func-returns-value]
    if len(negatives) > MAX_NEGATIVES:
        raise MusicSearchError(f"the query has {len(negatives)} negative terms; at most {MAX_NEGATIVES} are allowed")
    return ParsedQuery(raw, positive, negatives)


def _is_number(tok: str) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return True


def _join_tokens(tokens: Sequence[str]) -> str:
    out = ""
    for tok in tokens:
        if tok in ",;.!?":
            if out and out[-1] not in ",;.!?":
                out += tok
        else:
            out += (" " if out else "") + tok
    out = out.strip(" ,;.!?")
    words = out.split(" ")
    while words and words[0].lower() in CONJUNCTIONS:
        words.pop(0)
    while words and words[-1].lower().strip(",;.!?") in CONJUNCTIONS:
        words.pop()
    return " ".join(words).strip(" ,;.!?")


# --------------------------------------------------------------------------------------------------------------
# Filters

FILTER_KEYS = ("artist", "album", "year", "duration", "folder", "tag")
_FILTER = re.compile(r"^\s*(-?)([A-Za-z_]+)\s*(>=|<=|!=|==|=|>|<|:)\s*(.*?)\s*$", re.DOTALL)


def _filter_error(item: str, why: str) -> MusicSearchError:
    return MusicSearchError(
        f"bad filter {item!r}: {why}. Filters look like artist=NAME, album=NAME, year>=1990, year=1999, "
        "duration<=300 (seconds, or m:ss), folder=PATH, tag=TAG, tag!=TAG (or -tag=TAG)"
    )


def _number(item: str, value: str, *, integer: bool) -> float:
    text = value.strip()
    try:
        if not integer and ":" in text:
            m, s = text.split(":", 1)
            out = 60 * int(m) + float(s)
        else:
            out = int(text) if integer else float(text)
    except ValueError:
        raise _filter_error(item, f"{value!r} is not a {'whole number' if integer else 'number'}") from None
    if not math.isfinite(out):
        raise _filter_error(item, f"{value!r} is not a finite number")
    return float(out)


def parse_filters(filters: MetadataFilter | Mapping[str, Any] | Sequence[str] | str | None) -> MetadataFilter:
    """Build a :class:`~musicsearch.index.metadata.MetadataFilter` from ``KEY OP VALUE`` strings.

    Keys: ``artist``, ``album`` (``=``, exact up to case), ``year`` (whole numbers; ``= >= <= > <``),
    ``duration`` (seconds or ``m:ss``; ``>= <= > <``), ``folder`` (``=``: that folder or below), ``tag``
    (``=``: must have; ``!=`` or ``-tag=``: must not have; repeat for several). Conditions combine with AND.

    A mapping (or a :class:`MetadataFilter`) gives the fields directly: ``artist``, ``album``, ``folder`` (text),
    ``year_min``, ``year_max`` (whole numbers), ``duration_min``, ``duration_max`` (seconds, finite), ``tags``,
    ``without_tags`` (a list of tags, or one string, which is **one tag**: ``{"tags": "jazz"}`` means the tag
    ``jazz``, never the letters j, a, z, z). Each value is checked for its type.

    Args:
        filters: ``None``; a filter; a mapping of :class:`MetadataFilter` fields; or strings such as
            ``["artist=Nina Simone", "year>=1960", "tag=jazz"]`` (one string may hold one condition).

    Returns:
        The filter.

    Raises:
        MusicSearchError: an unknown key, operator or value, a value of the wrong type, or ``filters`` of a type
            other than those above, naming it and showing the syntax.
    """
    if filters is None:
        return MetadataFilter()
    if isinstance(filters, MetadataFilter):
        return _checked_filter(dataclasses.asdict(filters))
    if isinstance(filters, Mapping):
        return _checked_filter(filters)
    if isinstance(filters, bytes | bytearray | memoryview) or not isinstance(filters, str | Iterable):
        raise MusicSearchError(
            f"filters must be a list of conditions like ['year>=1990', 'tag=jazz'], a mapping of filter fields "
            f"like {{'year_min': 1990}}, or None; got {type(filters).__name__} {_short(filters)}"
        )
    items = [filters] if isinstance(filters, str) else list(filters)
    fields: dict[str, Any] = {}
    tags: list[str] = []
    without: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise MusicSearchError(f"filters must be strings like 'year>=1990', got {item!r}")
        item = _check_text(item, "a filter")
        m = _FILTER.match(item)
        if not m:
            raise _filter_error(item, "expected KEY OP VALUE")
        neg, key, op, value = m.group(1), m.group(2).lower(), m.group(3), m.group(4).strip().strip("\"'")
        key = {"tags": "tag", "genre": "tag"}.get(key, key)
        op = "=" if op in ("==", ":") else op
        if key not in FILTER_KEYS:
            raise _filter_error(item, f"unknown key {key!r} (known: {', '.join(FILTER_KEYS)})")
        if not value:
            raise _filter_error(item, "the value is empty")
        if neg and not (key == "tag" and op == "="):
            raise _filter_error(item, "only tags can be negated (-tag=TAG)")
        if key in ("artist", "album", "folder"):
            if op != "=":
                raise _filter_error(item, f"{key} takes '=' only")
            if key in fields:
                raise _filter_error(item, f"{key} is given twice")
            fields[key] = value
        elif key == "tag":
            if op == "=" and not neg:
                tags.append(value)
            elif op == "!=" or neg:
                without.append(value)
            else:
                raise _filter_error(item, "tag takes '=' or '!='")
        else:
            integer = key == "year"
            x = _number(item, value, integer=integer)
            lo_key, hi_key = f"{key}_min", f"{key}_max"
            step = 1.0 if integer else 0.0
            if op in ("=",):
                lo, hi = x, x
            elif op == ">=":
                lo, hi = x, None
            elif op == ">":
                lo, hi = (x + step if integer else math.nextafter(x, math.inf)), None
            elif op == "<=":
                lo, hi = None, x
            elif op == "<":
                lo, hi = None, (x - step if integer else math.nextafter(x, -math.inf))
            else:
                raise _filter_error(item, f"{key} takes = >= <= > <")
            if lo is not None:
                fields[lo_key] = max(lo, fields.get(lo_key, -math.inf))
            if hi is not None:
                fields[hi_key] = min(hi, fields.get(hi_key, math.inf))
    for key in ("year_min", "year_max"):
        if key in fields:
            fields[key] = int(fields[key])
    return _checked_filter({**fields, "tags": tuple(tags), "without_tags": tuple(without)})


#: Largest year a filter accepts (either sign); years beyond would only overflow the database's integers.
MAX_FILTER_YEAR = 1_000_000
_FILTER_FIELDS = tuple(f.name for f in dataclasses.fields(MetadataFilter))


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages about hostile input."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _checked_filter(fields: Mapping[Any, Any]) -> MetadataFilter:
    """A :class:`MetadataFilter` from its fields, each value checked for its type and range (see
    :func:`parse_filters`)."""
    unknown = [key for key in fields if key not in _FILTER_FIELDS]
    if unknown:
        raise MusicSearchError(
            f"unknown filter field {_short(unknown[0])}; the fields are {', '.join(_FILTER_FIELDS)} "
            "(or write conditions like 'year>=1990')"
        )
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if value is None:
            continue
        got = f"got {type(value).__name__} {_short(value)}"
        if key in ("artist", "album", "folder"):
            if not isinstance(value, str):
                raise MusicSearchError(f"filter field {key!r} must be text (a name or folder), {got}")
            out[key] = _check_text(value, f"filter field {key!r}")
            if not out[key]:
                raise MusicSearchError(f"filter field {key!r} must be non-empty text (or None for no condition), {got}")
        elif key in ("year_min", "year_max"):
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise MusicSearchError(f"filter field {key!r} must be a whole number (a year such as 1990), {got}")
            if abs(int(value)) > MAX_FILTER_YEAR:
                raise MusicSearchError(
                    f"filter field {key!r} must be a year between -{MAX_FILTER_YEAR} and {MAX_FILTER_YEAR}, {got}"
                )
            out[key] = int(value)
        elif key in ("duration_min", "duration_max"):
            if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
                raise MusicSearchError(f"filter field {key!r} must be a number of seconds, {got}")
            if not math.isfinite(float(value)):
                raise MusicSearchError(f"filter field {key!r} must be a finite number of seconds, {got}")
            out[key] = float(value)
        else:  # tags, without_tags: one string is one tag
            items = [value] if isinstance(value, str) else value
            if isinstance(items, bytes | bytearray | Mapping) or not isinstance(items, Iterable):
                raise MusicSearchError(f"filter field {key!r} must be a list of tags (or one tag as a string), {got}")
            tags = []
            for tag in items:
                if not isinstance(tag, str):
                    raise MusicSearchError(f"filter field {key!r} must be a list of tags (strings), {got}")
                tag = _check_text(tag, f"a tag in filter field {key!r}")
                if not tag:
                    raise MusicSearchError(f"filter field {key!r} must be a list of non-empty tags, {got}")
                tags.append(tag)
            out[key] = tuple(tags)
    return MetadataFilter(**out)


# --------------------------------------------------------------------------------------------------------------
# Calibration


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
    return unit_rows(g @ (vectors - vectors.mean(axis=0)) + vectors.mean(axis=0), what="random mixtures")


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
    n, mean, _, sample = scan_vectors(store.tracks, max_sample=max_tracks, seed=seed)
    # order the sample by content, not by vector id, so that the same collection numbered differently (a store
    # merged from shards) calibrates the same whenever the whole store fits in the sample
    sample = sample[np.lexsort(sample.T[::-1])]
    if n == 0:
        return Calibration(token, np.zeros(dim, np.float32), 1.0, 1.645, 1.0, 1.645, 0, 0)
    # an ONNX export has a text tower, so it is never a classification model (and holds no torch config)
    config = None if isinstance(embedder, OnnxEmbedder) else embedder.model.config
    if getattr(config, "objective", "") == "classification":
        texts = list(getattr(config, "tags", ()))
        text_vecs = embedder.embed_texts(texts)
        null_text = random_mixtures(text_vecs, n_null, rng)
    else:
        store_tags = _store_tags(store)
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


def scan_vectors(
    backend: VectorBackend, *, max_sample: int, seed: int = 0
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """One streaming pass over a backend: the count, the mean vector and a seeded sample, without holding every
    vector in memory (a million 128-d vectors are 512 MB).

    Returns:
        ``(n, mean (D,) float32, sample ids (S,) sorted, sample vectors (S, D))`` with ``S <= max_sample`` (each
        vector kept with probability ``max_sample / n``, then cut to ``max_sample``).
    """
    n = len(backend)
    total = np.zeros(backend.dim, np.float64)
    if n == 0:
        return 0, total.astype(np.float32), np.zeros(0, np.int64), np.zeros((0, backend.dim), np.float32)
    rng = np.random.default_rng(seed)
    p = min(1.0, max_sample / n)
    ids_parts, vec_parts = [], []
    for ids, vecs in backend.export():
        total += vecs.sum(axis=0, dtype=np.float64)
        keep = rng.random(ids.size) < p if p < 1 else np.ones(ids.size, bool)
        ids_parts.append(ids[keep])
        vec_parts.append(vecs[keep])
    ids = np.concatenate(ids_parts)
    vecs = np.concatenate(vec_parts)
    order = np.argsort(ids)[:max_sample]
    return n, (total / n).astype(np.float32), ids[order], vecs[order]


def _store_tags(store: Store) -> list[str]:
    """The distinct tags of a store (first spelling of each), sorted, read straight from its tag index."""
    con = sqlite3.connect(f"file:{store.path / METADATA_FILE}?mode=ro", uri=True, timeout=30)
    try:
        return sorted(str(r[0]) for r in con.execute("SELECT MIN(tag) FROM tags GROUP BY tag_key"))
    finally:
        con.close()


def export_vectors(backend: VectorBackend) -> tuple[np.ndarray, np.ndarray]:
    """Every vector of a backend sorted by id: ``(ids (N,) int64, vectors (N, D) float32)``."""
    parts = list(backend.export())
    if not parts:
        return np.zeros(0, np.int64), np.zeros((0, backend.dim), np.float32)
    ids = np.concatenate([p[0] for p in parts])
    vecs = np.concatenate([p[1] for p in parts])
    order = np.argsort(ids)
    return ids[order], vecs[order]


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


def _score_ids(backend: VectorBackend, queries: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``(Q, M)`` cosines of queries and the stored vectors ``ids`` (``-inf`` for ids not stored), through a
    search restricted to those ids (the backend interface has no fetch-by-id)."""
    out = np.full((queries.shape[0], ids.size), -np.inf, np.float32)
    if ids.size == 0:
        return out
    scores, hits = backend.search(queries, int(ids.size), allowed_ids=ids)
    pos = {int(v): j for j, v in enumerate(ids.tolist())}
    for q in range(queries.shape[0]):
        for s, v in zip(scores[q], hits[q]):
            if v >= 0:
                out[q, pos[int(v)]] = s
    return out


# --------------------------------------------------------------------------------------------------------------
# The searcher


class FilterIndex:
    """Resolves metadata filters to the allowed track-vector ids, fast on large stores.

    Year and duration conditions are evaluated on NumPy copies of those columns (one SQL read per store version:
    a broad ``year>=1990`` over a million tracks costs a millisecond instead of materialising half a million SQL
    rows); tag conditions go through the ``tags(tag_key)`` index; artist, album and folder through
    :meth:`MetadataDB.resolve_filter` (indexed, selective). The result equals ``resolve_filter(flt, level="track")``
    (tested against it).

    Args:
        db_path: the store's ``metadata.sqlite`` (opened read-only).
    """

    def __init__(self, db_path: Path) -> None:
        self._con = connect_readonly(db_path, what="metadata database")  # works on a read-only store too
        rows = self._con.execute(
            "SELECT id, vector_id, year, duration FROM tracks WHERE vector_id IS NOT NULL ORDER BY id"
        ).fetchall()
        cols = np.array(rows, dtype=np.float64).reshape(-1, 4)  # NULL -> nan
        self.track_ids = cols[:, 0].astype(np.int64)  # (N,) sorted
        self.vector_ids = cols[:, 1].astype(np.int64)
        self.year = cols[:, 2]
        self.duration = cols[:, 3]
        self._tag_cache: dict[str, np.ndarray] = {}
        self._by_vector = np.argsort(self.vector_ids, kind="stable")  # positions in vector-id order
        self._sorted_vectors = self.vector_ids[self._by_vector]

    def _mask_of(self, sorted_keys: np.ndarray, order: np.ndarray | None, wanted: np.ndarray) -> np.ndarray:
        """``(N,)`` mask of the tracks whose key is in ``wanted``; ``sorted_keys`` are the keys sorted, ``order``
        their track positions (``None``: already in track order)."""
        mask = np.zeros(self.track_ids.size, bool)
        wanted = np.unique(wanted)
        if wanted.size == 0 or sorted_keys.size == 0:
            return mask
        at = np.searchsorted(sorted_keys, wanted)
        valid = at < sorted_keys.size
        at, wanted = at[valid], wanted[valid]
        hit = at[sorted_keys[at] == wanted]
        mask[hit if order is None else order[hit]] = True
        return mask

    def close(self) -> None:
        """Close the read-only connection."""
        self._con.close()

    def _tagged(self, tag: str) -> np.ndarray:
        """Sorted track ids with ``tag`` (through the tag index; the last 256 tags asked for are kept)."""
        key = fold(tag)
        got = self._tag_cache.pop(key, None)
        if got is None:
            cursor = self._con.execute("SELECT track FROM tags WHERE tag_key = ?", (key,))
            got = np.unique(np.fromiter((r[0] for r in cursor), np.int64))
        self._tag_cache[key] = got  # most recent last
        while len(self._tag_cache) > 256:
            self._tag_cache.pop(next(iter(self._tag_cache)))
        return got

    def resolve(self, flt: MetadataFilter, db: MetadataDB) -> np.ndarray | None:
        """Sorted ``(M,)`` int64 track-vector ids meeting ``flt``, or ``None`` for an empty filter."""
        if flt.is_empty():
            return None
        mask = np.ones(self.track_ids.size, bool)
        with np.errstate(invalid="ignore"):  # nan (NULL) compares false, as in SQL
            for column, lo, hi in (
                (self.year, flt.year_min, flt.year_max),
                (self.duration, flt.duration_min, flt.duration_max),
            ):
                if lo is not None:
                    mask &= column >= lo
                if hi is not None:
                    mask &= column <= hi
        for tag in flt.tags:
            mask &= self._mask_of(self.track_ids, None, self._tagged(tag))
        for tag in flt.without_tags:
            mask &= ~self._mask_of(self.track_ids, None, self._tagged(tag))
        rest = MetadataFilter(artist=flt.artist, album=flt.album, folder=flt.folder)
        if not rest.is_empty():
            allowed = db.resolve_filter(rest, level="track")
            if allowed is not None:
                mask &= self._mask_of(self._sorted_vectors, self._by_vector, allowed)
        return self._sorted_vectors[mask[self._by_vector]]  # sorted, no sort needed


def _store_path(path: Any) -> Path:
    """A store path as given by a user: a string or path-like, ``~`` expanded."""
    if isinstance(path, bytes) or not isinstance(path, str | os.PathLike):
        raise MusicSearchError(f"the store must be a directory path (a string), got {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str) or not text or "\x00" in text:
        raise MusicSearchError(f"the store path {_short(text)} is not a directory path; give the store's folder")
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
        self.text_cache = TextEmbeddingCache(embedder.embed_texts, text_cache_size)
        self.write_cache = write_cache
        self._lock = threading.RLock()
        self._vectors: tuple[str, np.ndarray, np.ndarray] | None = None
        self._calibration: Calibration | None = None
        self._map: dict[str, Any] | None = None
        self._filter_index: tuple[str, FilterIndex] | None = None

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
        if self._filter_index is not None:
            self._filter_index[1].close()
        self.store.close()

    def _filters(self) -> FilterIndex:
        """The filter index of the current store version (built on first use)."""
        token = self.store.version_token()
        if self._filter_index is None or self._filter_index[0] != token:
            if self._filter_index is not None:
                self._filter_index[1].close()
            self._filter_index = (token, FilterIndex(self.store.path / METADATA_FILE))
        return self._filter_index[1]

    def __enter__(self) -> Searcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- derived data (cached) -------------------------------------------------------------------------------

    def track_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """``(vector ids (N,), unit vectors (N, D))`` of every track, sorted by id: exported on the first query by
        an indexed example (the backend interface has no fetch by id) and kept until the store changes."""
        with self._lock:
            token = self.store.version_token()
            if self._vectors is None or self._vectors[0] != token:
                ids, vecs = export_vectors(self.store.tracks)
                self._vectors = (token, ids, vecs)
            return self._vectors[1], self._vectors[2]

    def calibration(self) -> Calibration:
        """The store's calibration: from ``calibration.json`` when current, else computed (and saved)."""
        with self._lock:
            token = self.store.version_token()
            if self._calibration is not None and self._calibration.token == token:
                return self._calibration
            file = self.store.path / CALIBRATION_FILE
            cal: Calibration | None = None
            try:
                obj = json.loads(file.read_text(encoding="utf-8"))
                if obj.get("token") == token and obj.get("version") == CALIBRATION_VERSION:
                    cal = Calibration.from_json(obj)
            except (OSError, ValueError, KeyError):
                cal = None
            if cal is None:
                cal = calibrate(self.store, self.embedder)
                if self.write_cache:
                    try:
                        write_json(file, cal.to_json(), indent=None)
                    except OSError as exc:
                        log.warning("cannot save %s: %s", file, exc)
            self._calibration = cal
            return cal

    def collection_map(self, *, method: str | None = None, limit: int = 20000) -> dict[str, Any]:
        """2-D coordinates of the collection's tracks for a plot (see :func:`map_coordinates`), cached.

        Args:
            method: ``"pca"`` or ``"umap"``; ``None`` takes the saved map whatever its method (``musicsearch index
                --map umap`` saves a UMAP one), else PCA.
            limit: most points returned (an even sample by id beyond).

        Returns:
            ``{"method", "count", "total", "points": [{"id", "x", "y", "title", "artist", "tag"}]}`` with ``x, y``
            in ``[0, 1]``: ``count`` tracks on the map (a seeded sample of :data:`MAP_MAX_POINTS` in a bigger
            store), ``total`` in the store.
        """
        with self._lock:
            self.store.reload_vectors()
            token = self.store.version_token()
            cached = self._map
            if cached is not None and cached["token"] == token and method in (None, cached["method"]):
                data = cached
            else:
                data = _load_or_build_map(self, token, method)
                self._map = data
        points = data["points"]
        if len(points) > limit:
            step = len(points) / limit
            points = [points[int(i * step)] for i in range(limit)]
        return {
            "method": data["method"],
            "count": len(data["points"]),
            "total": int(data.get("total", len(data["points"]))),
            "points": points,
        }

    # -- lookups ---------------------------------------------------------------------------------------------

    def windows(self, track: int) -> list[float]:
        """Start times (seconds) of a track's windows."""
        with self._lock:
            return [w.start for w in self.store.db.windows(int(track))]

    def playable_path(self, track: int) -> Path:
        """The audio file of a track, under the store's security rule
        (:meth:`musicsearch.index.indexer.Store.playable_path`)."""
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
            raise MusicSearchError(f"no track {_short(track)} in this store")
        return rec

    def _lookup(self, track: Any) -> TrackRecord | None:
        """The track of an integer id or string track id; ``None`` for anything that cannot name one (ids
        outside SQLite's 64-bit range, strings that are not UTF-8, other types)."""
        if isinstance(track, int | np.integer) and not isinstance(track, bool):
            return self.store.db.get_track(int(track)) if 0 <= int(track) <= _MAX_ID else None
        if isinstance(track, str) and len(track) <= _MAX_ID_CHARS and not _SURROGATE.search(track):
            return self.store.db.find_track(track)
        return None

    def _example(self, like: int | str, allow_files: bool) -> tuple[np.ndarray, int | None, str]:
        """Unit example vector, the track id to leave out of results (or None), and its description."""
        rec: TrackRecord | None = None
        if isinstance(like, int | np.integer) and not isinstance(like, bool):
            rec = self._lookup(like)
            if rec is None:
                raise MusicSearchError(f"like={_short(like)}: no track with this id in the store")
        elif isinstance(like, str):
            if "\x00" in like or len(like) > _MAX_ID_CHARS:
                raise MusicSearchError(
                    f"like={_short(like)} is not a track id or a file path (a NUL byte, or over "
                    f"{_MAX_ID_CHARS} characters)"
                )
            rec = self._lookup(like)
            file = Path(like).expanduser()
            if rec is None and allow_files and file.is_file():
                vec, _, _ = self.embedder.embed_file(file, self.store.settings.plan)
                return vec, None, f"file:{like}"
            if rec is None:
                where = "an indexed track id or an audio file" if allow_files else "an indexed track id"
                raise MusicSearchError(f"like={_short(like)} is not {where}")
        else:
            raise MusicSearchError(
                f"like must be a track id (integer or string) or a file path, got {type(like).__name__}"
            )
        if rec.vector_id is not None:
            row, ok = self.store.vector_file.read(np.array([rec.vector_id]))
            if ok[0]:
                return row[0], rec.id, f"track:{rec.id}"
        ids, vecs = self.track_vectors()  # a store without vectors.f32: export once
        j = int(np.searchsorted(ids, rec.vector_id)) if rec.vector_id is not None else -1
        if j < 0 or j >= ids.size or ids[j] != rec.vector_id:
            raise MusicSearchError(f"track {rec.track_id!r} has no stored vector; re-index the collection")
        return vecs[j], rec.id, f"track:{rec.id}"

    def _rank(self, q: np.ndarray, fetch: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``fetch`` track vectors for the unit query ``q`` among ``allowed`` (all when ``None``):
        ``(scores (fetch,), vector ids (fetch,))`` padded with ``-inf`` / ``-1``.

        A filter keeping at most :data:`DIRECT_FILTER_MAX` tracks is answered exactly by scoring those tracks'
        vectors read by id (an approximate index would have to scan nearly all of its cells for them); broader
        filters and no filter go through the index, the allowed ids as its selector.
        """
        if allowed is not None and allowed.size <= DIRECT_FILTER_MAX:
            vecs, ok = self.store.vector_file.read(allowed)
            if ok.all():
                if allowed.size == 0:
                    return np.full(fetch, -np.inf, np.float32), np.full(fetch, -1, np.int64)
                s, i = exact_top_k(vecs, allowed, q[None, :], fetch)  # ties: lower id first, as the backends
                return s[0], i[0]
        scores, vids = self.store.tracks.search(q, fetch, allowed_ids=allowed)
        return scores[0], vids[0]

    def _score(self, backend: VectorBackend, queries: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """``(Q, M)`` cosines of unit queries and stored vectors ``ids``: from ``vectors.f32`` (exact, no scan),
        else (a store without that file) through a search restricted to those ids."""
        out = np.full((queries.shape[0], ids.size), -np.inf, np.float32)
        if ids.size == 0:
            return out
        vecs, ok = self.store.vector_file.read(ids)
        out[:, ok] = queries @ vecs[ok].T
        if not ok.all():
            out[:, ~ok] = _score_ids(backend, queries, ids[~ok])
        return out

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
            filters: metadata filter (see :func:`parse_filters`).
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
            raise MusicSearchError(f"text_weight must be a number from 0 to 1, got {_short(text_weight)}")
        if not (_is_real(negative_weight) and 0.0 <= float(negative_weight) <= 10.0):
            raise MusicSearchError(f"negative_weight must be a number from 0 to 10, got {_short(negative_weight)}")
        parsed = parse_query(query) if query is not None else None
        if parsed is None and like is None:
            raise MusicSearchError("give a text query, an example track (like), or both")
        if parsed is not None and not parsed.positive and like is None:
            raise MusicSearchError(
                f"the query {parsed.raw!r} says only what to leave out ({', '.join(parsed.negatives)}); "
                "add what you want to hear, e.g. 'piano, no vocals'"
            )
        flt = parse_filters(filters)
        with self._lock:
            self.store.reload_vectors()  # an indexing run may have updated the store since it was opened
            return self._search(parsed, like, k, flt, float(text_weight), float(negative_weight), allow_files, t0)

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
    ) -> SearchResponse:
        store = self.store
        cal = self.calibration()
        t_embed = time.perf_counter()
        texts = ([parsed.positive] if parsed is not None and parsed.positive else []) + (
            list(parsed.negatives) if parsed is not None else []
        )
        text_vecs = self.text_cache(texts) if texts else np.zeros((0, store.settings.dim), np.float32)
        has_text = parsed is not None and bool(parsed.positive)
        t_vec = text_vecs[0] if has_text else None
        neg_vecs = text_vecs[1:] if has_text else text_vecs
        example, leave_out, like_desc = (None, None, None) if like is None else self._example(like, allow_files)
        if t_vec is not None and example is not None:
            w = text_weight
            q = unit_rows(w * t_vec + (1 - w) * example, what="combined query")[0]
        elif t_vec is not None:
            w, q = 1.0, t_vec
        else:
            assert example is not None
            w, q = 0.0, unit_rows(example[None, :])[0]
        embed_ms = (time.perf_counter() - t_embed) * 1e3

        t_search = time.perf_counter()
        allowed = self._filters().resolve(flt, store.db)
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
                neg = self._score(store.tracks, neg_vecs, vids).astype(np.float64)  # (n_neg, M)
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
        """Best window (start seconds, cosine) of each track for the unit query ``q``.

        The tracks' window vectors are read by id from ``vectors.f32`` and compared with ``q`` (exact). For a
        store without that file: on an exact window index a search restricted to those windows; on an
        approximate one (where that would scan every window) first the query's top ``max(64, 4·M)`` windows, then
        the restricted search only for tracks with none among them.
        """
        owner: dict[int, tuple[int, float]] = {}
        for rec in tracks:
            for w in self.store.db.windows(rec.id):
                owner[w.vector_id] = (rec.id, w.start)
        if not owner:
            return {}
        best: dict[int, tuple[float, float]] = {}

        def take(vids: Sequence[int], scores: Sequence[float]) -> None:
            for vid, s in zip(vids, scores):
                if vid not in owner or not math.isfinite(s):
                    continue
                track, start = owner[vid]
                if track not in best or s > best[track][1]:
                    best[track] = (start, float(s))

        ids = np.array(sorted(owner), np.int64)
        vecs, ok = self.store.vector_file.read(ids)
        take(ids[ok].tolist(), (vecs[ok] @ q).tolist())
        if ok.all():
            return best
        windows = self.store.windows  # loaded only for a store without (complete) vectors.f32
        if not windows.exact:
            m = min(len(windows), max(64, 4 * len(owner)))
            scores, vids = windows.search(q, m)
            take(vids[0].tolist(), scores[0].tolist())
        missing = np.array([v for v in ids.tolist() if owner[v][0] not in best], np.int64)
        if missing.size:
            take(missing.tolist(), _score_ids(windows, q[None, :], missing)[0].tolist())
        return best

    def similar(self, track: int | str, k: int = 10, filters: Any = None) -> SearchResponse:
        """Tracks most like an indexed track (the track itself left out)."""
        rec = self.track(track)
        return self.search(like=rec.id, k=k, filters=filters, allow_files=False)


# --------------------------------------------------------------------------------------------------------------
# The collection map


def map_coordinates(vectors: np.ndarray, *, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2-D coordinates of unit vectors, scaled into ``[0, 1]`` per axis.

    Args:
        vectors: ``(N, D)`` float32.
        method: ``"pca"`` (two principal axes; deterministic, signs fixed so each axis's largest loading is
            positive) or ``"umap"`` (umap-learn, cosine metric, seeded; slower, keeps neighbourhoods).
        seed: UMAP seed.

    Returns:
        ``(N, 2)`` float32.

    Raises:
        MusicSearchError: an unknown method, or ``umap`` without umap-learn installed.
    """
    n = vectors.shape[0]
    if n == 0:
        return np.zeros((0, 2), np.float32)
    x = np.asarray(vectors, np.float64)
    if method == "pca" or n < 5:
        xc = x - x.mean(axis=0)
        if n == 1 or not np.any(xc):
            xy = np.zeros((n, 2))
        else:
            _, _, vt = np.linalg.svd(xc, full_matrices=False)
            axes = vt[:2]
            signs = np.sign(axes[np.arange(axes.shape[0]), np.abs(axes).argmax(axis=1)])
            xy = xc @ (axes * signs[:, None]).T
            if xy.shape[1] < 2:
                xy = np.concatenate([xy, np.zeros((n, 1))], axis=1)
    elif method == "umap":
        try:
            import umap
        except ImportError as exc:
            raise MusicSearchError("the umap map needs umap-learn (pip install umap-learn); or use pca") from exc
        reducer = umap.UMAP(n_components=2, metric="cosine", random_state=seed, n_neighbors=min(15, n - 1))
        xy = np.asarray(reducer.fit_transform(x), np.float64)
    else:
        raise MusicSearchError(f"unknown map method {method!r}; use pca or umap")
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    return ((xy - lo) / span).astype(np.float32)


def _load_or_build_map(searcher: Searcher, token: str, method: str | None) -> dict[str, Any]:
    file = searcher.store.path / MAP_FILE
    try:
        obj = json.loads(file.read_text(encoding="utf-8"))
        if obj.get("token") == token and method in (None, obj.get("method")):
            return dict(obj)
    except (OSError, ValueError):
        pass
    method = method or "pca"
    total, _, ids, vecs = scan_vectors(searcher.store.tracks, max_sample=MAP_MAX_POINTS)
    xy = map_coordinates(vecs, method=method)
    refs = searcher.store.db.lookup_vectors(ids)
    points = []
    for (x, y), ref in zip(xy.tolist(), refs):
        if ref is None:
            continue
        rec = ref.track
        points.append(
            {
                "id": rec.id,
                "x": round(x, 5),
                "y": round(y, 5),
                "title": rec.title or rec.track_id,
                "artist": rec.artist,
                "tag": rec.tags[0] if rec.tags else None,
            }
        )
    data = {"token": token, "method": method, "total": total, "points": points}
    if searcher.write_cache:
        try:
            write_json(file, data, indent=None)
        except OSError as exc:
            log.warning("cannot save %s: %s", file, exc)
    return data


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
            ``{"year_min": 1960, "tags": ["jazz"]}`` (see :func:`parse_filters`; a string where a list of tags is
            expected is one tag: ``{"tags": "jazz"}``).
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
            store.store.check_model(store.store.load_embedder(model))
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
