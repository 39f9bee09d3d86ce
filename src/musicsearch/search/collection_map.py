"""The collection map: 2-D coordinates of a store's tracks for the web page's plot, and how its dots are coloured,
cached in ``map.json``.

Colours show what organises a collection. By default (:data:`CLUSTERS`) the tracks are clustered in the joint space
(:func:`spherical_kmeans`, seeded, :func:`cluster_count` clusters from the collection's size) and each cluster is
named by the 1-3 tags that best tell it from the rest (:func:`telling_tags`: share of the cluster's tracks with the
tag minus share of the other tracks); a cluster of mostly untagged tracks is named by the collection's tags whose
text embeddings lean towards it (:func:`closest_texts`). A collection whose tags fall into families (genre,
instrument, mood, tempo, ...; :func:`tag_family`) can also be coloured by one family (:func:`family_groups`).
All colourings are computed with the map and saved beside its coordinates.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from musicsearch.errors import MusicSearchError
from musicsearch.fileio import write_json
from musicsearch.index.metadata import fold as _fold_uncached
from musicsearch.index.store import Store

__all__ = [
    "CLUSTERS",
    "MAP_FILE",
    "MAP_MAX_POINTS",
    "MAP_VERSION",
    "closest_texts",
    "cluster_count",
    "cluster_groups",
    "family_groups",
    "load_or_build_map",
    "map_colourings",
    "map_coordinates",
    "map_families",
    "map_view",
    "spherical_kmeans",
    "tag_family",
    "telling_tags",
]

log = logging.getLogger(__name__)

MAP_FILE = "map.json"
#: Tracks drawn on the collection map at most (a seeded sample beyond).
MAP_MAX_POINTS = 20_000


#: :func:`~musicsearch.index.metadata.fold`, memoised: a map folds every tag of every track several times.
fold = functools.lru_cache(maxsize=1 << 16)(_fold_uncached)


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


# --------------------------------------------------------------------------------------------------------------
# Colouring: clusters of the joint space named by their most telling tags, or a tag family


#: Layout of ``map.json``; a file of another version is rebuilt (version 1 had no colourings).
MAP_VERSION = 2
#: Colouring by clusters of the joint space (the default); the other colourings are tag families.
CLUSTERS = "clusters"
#: Clusters at most (colours a reader tells apart), and groups of a tag family at most before "other".
MAX_CLUSTERS = 8
MAX_FAMILY_GROUPS = 7
#: Tags (or tag texts) naming a group at most.
MAX_NAMES = 3
#: A tag family is offered when at least this share of the map's tracks has a tag of it.
FAMILY_MIN_COVERAGE = 0.5
#: Distinct store tags embedded to name clusters of untagged tracks at most (the most frequent).
MAX_NAME_TEXTS = 1000
#: Display names of tag families whose bare name reads ambiguously.
FAMILY_LABELS = {"family": "instrument family"}


def cluster_count(n: int) -> int:
    """How many clusters colour a map of ``n`` tracks: ``round(sqrt(n / 2))`` clipped to ``[1, MAX_CLUSTERS]``
    (and never more than ``n``): 2 for 10 tracks, 5 for 50, 8 from 113 on."""
    if n <= 0:
        return 0
    return int(min(n, MAX_CLUSTERS, max(1, round(math.sqrt(n / 2)))))


def spherical_kmeans(
    vectors: np.ndarray, k: int, *, rng: np.random.Generator, n_init: int = 4, max_iter: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster unit vectors by cosine: k-means++ seeding on the cosine distance, then Lloyd steps (assign each
    vector to the centroid of highest cosine; each centroid the normalised mean of its members) until the
    assignment stops changing; the best of ``n_init`` runs (lowest total cosine distance) is kept.

    Args:
        vectors: ``(N, D)`` unit vectors.
        k: clusters wanted, ``1 <= k <= N``.
        rng: the seeding's random generator (the result is a function of it and the vectors).
        n_init: seeded runs.
        max_iter: Lloyd steps per run at most.

    Returns:
        ``(labels (N,) int64, centroids (K, D) float64 unit)`` with ``K <= k`` non-empty clusters numbered by
        size, largest first (ties: the cluster holding the lower first index first).

    Raises:
        MusicSearchError: ``k`` outside ``[1, N]`` or a bad shape.
    """
    x = np.asarray(vectors, np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise MusicSearchError(f"clustering needs (N, D) vectors with N >= 1, got shape {x.shape}")
    n = x.shape[0]
    if not 1 <= k <= n:
        raise MusicSearchError(f"cannot make {k} clusters of {n} vectors; give 1 <= k <= {n}")
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for _ in range(max(1, n_init)):
        centroids = x[_kmeans_pp(x, k, rng)]  # (k, D)
        labels = np.full(n, -1)
        for _ in range(max_iter):
            new = np.argmax(x @ centroids.T, axis=1)  # (N,)
            if np.array_equal(new, labels):
                break
            labels = new
            centroids = _unit_means(x, labels, centroids)
        cost = float(np.sum(1.0 - np.einsum("nd,nd->n", x, centroids[labels])))
        if best is None or cost < best[0] - 1e-9 * n:
            best = (cost, labels, centroids)
    assert best is not None
    _, labels, centroids = best
    used = np.unique(labels)
    first = np.array([np.flatnonzero(labels == c)[0] for c in used])
    sizes = np.array([np.count_nonzero(labels == c) for c in used])
    order = used[np.lexsort((first, -sizes))]
    renumber = np.empty(int(labels.max()) + 1, np.int64)
    renumber[order] = np.arange(order.size)
    return renumber[labels], centroids[order]


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    """k-means++ seeds: the first uniform, each next with probability proportional to its cosine distance to the
    nearest seed so far (uniform over the unchosen when all distances are zero)."""
    n = x.shape[0]
    seeds = [int(rng.integers(n))]
    dist = np.maximum(1.0 - x @ x[seeds[0]], 0.0)  # (N,)
    for _ in range(k - 1):
        total = dist.sum()
        if total > 0:
            p = dist / total
        else:
            p = np.ones(n)
            p[seeds] = 0.0
            p /= p.sum()
        seeds.append(int(rng.choice(n, p=p)))
        dist = np.minimum(dist, np.maximum(1.0 - x @ x[seeds[-1]], 0.0))
    return seeds


def _unit_means(x: np.ndarray, labels: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Each cluster's normalised mean (an empty cluster, or one whose mean is zero, keeps its centroid)."""
    sums = np.stack([x[labels == c].sum(axis=0) for c in range(previous.shape[0])])  # (K, D)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return np.where(norms > 0, sums / np.where(norms > 0, norms, 1.0), previous)


def telling_tags(
    labels: np.ndarray, track_tags: Sequence[Sequence[str]], *, max_names: int = MAX_NAMES
) -> list[list[str]]:
    """The tags that best tell each group from the rest, by frequency lift.

    A tag's score in group ``g`` is ``share of g's tracks with the tag - share of the other tracks with it`` (in
    ``[-1, 1]``; tags are matched up to case, see :func:`~musicsearch.index.metadata.fold`, and spelled as first
    met). A group is named by its best tag and the next ones scoring at least half of it, ``max_names`` at most,
    all scoring above 0; ties go to the alphabetically first tag.

    Args:
        labels: ``(N,)`` group of each track, ``0..G-1``.
        track_tags: each track's tags (``N`` sequences).
        max_names: tags per group at most.

    Returns:
        ``G`` lists of tags, best first (empty when no tag scores above 0).
    """
    labels = np.asarray(labels, np.int64)
    n_groups = int(labels.max()) + 1 if labels.size else 0
    sizes = np.bincount(labels, minlength=n_groups)
    spelling: dict[str, str] = {}
    counts: dict[str, np.ndarray] = {}  # fold(tag) -> (G,) tracks with it per group
    for g, tags in zip(labels.tolist(), track_tags, strict=True):
        for key in {fold(t): t for t in tags if fold(t)}:
            if key not in counts:
                counts[key] = np.zeros(n_groups, np.int64)
            counts[key][g] += 1
        for t in tags:
            spelling.setdefault(fold(t), t.strip())
    n = labels.size
    names: list[list[str]] = []
    for g in range(n_groups):
        rest = n - sizes[g]
        scored = []
        for key, c in counts.items():
            inside = c[g] / sizes[g]
            outside = (c.sum() - c[g]) / rest if rest else 0.0
            if inside - outside > 0:
                scored.append((-(inside - outside), spelling[key], inside - outside))
        scored.sort()
        names.append(_leading([(t, s) for _, t, s in scored], max_names))
    return names


def closest_texts(
    centroids: np.ndarray,
    mean: np.ndarray,
    text_vectors: np.ndarray,
    texts: Sequence[str],
    *,
    max_names: int = MAX_NAMES,
) -> list[list[str]]:
    """The texts whose embeddings lean most towards each centroid, compared with the collection as a whole.

    A text's score for centroid ``c`` is ``cos(c, t) - cos(mean, t)``: how much closer the group sits to the text
    than the average track does (so a text every track is near does not name every group). A group is named like
    in :func:`telling_tags`: the best text and the next ones scoring at least half of it, all above 0.

    Args:
        centroids: ``(G, D)`` group centroids (any norm).
        mean: ``(D,)`` mean of the collection's vectors.
        text_vectors: ``(T, D)`` unit text embeddings.
        texts: the ``T`` texts.
        max_names: texts per group at most.

    Returns:
        ``G`` lists of texts, best first.
    """
    c = np.asarray(centroids, np.float64)
    c = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
    m = np.asarray(mean, np.float64)
    m = m / max(float(np.linalg.norm(m)), 1e-12)
    t = np.asarray(text_vectors, np.float64)
    scores = t @ c.T - (t @ m)[:, None]  # (T, G)
    out = []
    for g in range(c.shape[0]):
        ranked = sorted(zip(texts, scores[:, g].tolist()), key=lambda ts: (-ts[1], ts[0]))
        out.append(_leading(ranked, max_names))
    return out


def _leading(ranked: Sequence[tuple[str, float]], max_names: int) -> list[str]:
    """The first name and those after it scoring at least half of it, all above 0, ``max_names`` at most."""
    if not ranked or ranked[0][1] <= 0:
        return []
    top = ranked[0][1]
    return [name for name, score in ranked[:max_names] if score > 0 and score >= top / 2]


@functools.lru_cache(maxsize=1 << 16)
def tag_family(tag: str) -> str | None:
    """The family of a tag (genre, instrument, mood, ...), or ``None`` when it has none known.

    A tag written ``"<family>---<tag>"`` (MTG-Jamendo's form: ``"genre---rock"``, ``"mood/theme---sad"``) names its
    family; any other tag takes its category in the procedural corpus's vocabulary
    (:data:`musicsearch.data.synth.tags.VOCABULARY`: ``"rock"`` is a genre, ``"piano"`` an instrument,
    ``"calm"`` a mood, ``"fast"`` a tempo), matched up to case. Answers are memoised (a map asks for every tag
    of every track, once per family).
    """
    head, sep, rest = tag.partition("---")
    if sep:
        return fold(head) or None if fold(rest) else None
    return _vocabulary_families().get(fold(tag))


@functools.cache
def _vocabulary_families() -> dict[str, str]:
    """``fold(tag) -> category`` of the procedural corpus's vocabulary (imported on first use)."""
    from musicsearch.data.synth.tags import VOCABULARY

    return {fold(t): c for t, c in VOCABULARY.items()}


def map_families(track_tags: Sequence[Sequence[str]], *, min_coverage: float = FAMILY_MIN_COVERAGE) -> list[str]:
    """The tag families a map can be coloured by: those with at least two distinct tags in the collection, on at
    least ``min_coverage`` of its tracks; most covering first (ties by name).

    Args:
        track_tags: each track's tags.
        min_coverage: share of the tracks that must have a tag of the family.

    Returns:
        Family names (see :func:`tag_family`).
    """
    covered: dict[str, int] = {}
    distinct: dict[str, set[str]] = {}
    for tags in track_tags:
        seen = set()
        for t in tags:
            fam = tag_family(t)
            if fam is not None:
                seen.add(fam)
                distinct.setdefault(fam, set()).add(fold(t))
        for fam in seen:
            covered[fam] = covered.get(fam, 0) + 1
    n = len(track_tags)
    ok = [f for f, c in covered.items() if f != CLUSTERS and len(distinct[f]) >= 2 and c >= min_coverage * n]
    return sorted(ok, key=lambda f: (-covered[f], f))


def family_groups(
    track_tags: Sequence[Sequence[str]], family: str, *, max_groups: int = MAX_FAMILY_GROUPS
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Group tracks by their tag of one family.

    The groups are the family's ``max_groups`` most frequent tags in the collection (ties by name). A track joins
    the group of the least frequent of its tags among them (the most specific: a track tagged rock and metal is
    metal), else ``"other <family>"`` when it has a tag of the family, else ``"no <family> tag"``.

    Args:
        track_tags: each track's tags.
        family: a family (see :func:`tag_family`).
        max_groups: named groups at most.

    Returns:
        ``(labels (N,) int64, groups)``: each track's group and, per group, ``{"name", "tags", "count", "kind"}``
        (the tag without its family prefix, the tag as stored, the tracks in the group, and ``"tag"``,
        ``"other"`` or ``"none"``); named groups first, largest first, then "other", then "no tag"; only groups
        with tracks.
    """
    label = FAMILY_LABELS.get(family, family)
    per_track: list[set[str]] = []
    freq: dict[str, int] = {}
    spelling: dict[str, str] = {}  # fold(tag) -> the tag as first met
    for tags in track_tags:
        mine = set()
        for t in tags:
            if tag_family(t) == family:
                mine.add(fold(t))
                spelling.setdefault(fold(t), t.strip())
        for key in mine:
            freq[key] = freq.get(key, 0) + 1
        per_track.append(mine)
    top = sorted(freq, key=lambda k: (-freq[k], spelling[k]))[:max_groups]
    rank = {k: i for i, k in enumerate(top)}
    other, none = len(top), len(top) + 1
    raw = np.empty(len(per_track), np.int64)
    for i, mine in enumerate(per_track):
        named = [k for k in mine if k in rank]
        if named:
            raw[i] = rank[min(named, key=lambda k: (freq[k], spelling[k]))]
        else:
            raw[i] = other if mine else none
    counts = np.bincount(raw, minlength=none + 1)
    names = [_bare(spelling[k]) for k in top] + [f"other {label}", f"no {label} tag"]
    group_tags: list[list[str]] = [[spelling[k]] for k in top] + [[], []]
    named_order = sorted(range(len(top)), key=lambda g: (-counts[g], names[g]))
    order = [g for g in [*named_order, other, none] if counts[g] > 0]
    renumber = np.full(none + 1, -1, np.int64)
    renumber[order] = np.arange(len(order))
    kinds = ["tag"] * len(top) + ["other", "none"]
    groups = [{"name": names[g], "tags": group_tags[g], "count": int(counts[g]), "kind": kinds[g]} for g in order]
    return renumber[raw], groups


def _bare(tag: str) -> str:
    """A tag without its ``"<family>---"`` prefix."""
    return tag.partition("---")[2].strip() if "---" in tag else tag.strip()


def cluster_groups(
    vectors: np.ndarray,
    track_tags: Sequence[Sequence[str]],
    *,
    seed: int = 0,
    embed_texts: Callable[[Sequence[str]], np.ndarray] | None = None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Cluster a collection in the joint space and name each cluster by what tells it apart.

    :func:`spherical_kmeans` with :func:`cluster_count` clusters. A cluster at least half of whose tracks have
    tags is named by its :func:`telling_tags`. One of mostly untagged tracks (recordings nobody labelled), or one
    whose tags are no different from the rest's, is named by the collection's tags whose text embeddings lean
    towards it (:func:`closest_texts`, when ``embed_texts`` is given; the :data:`MAX_NAME_TEXTS` most frequent
    tags are embedded), else by the tags it has; a cluster with no name is ``"group <i>"``.

    Args:
        vectors: ``(N, D)`` unit track vectors.
        track_tags: each track's tags (``N`` sequences).
        seed: seed of the clustering.
        embed_texts: the store's text tower (texts -> ``(T, D)`` unit vectors), or ``None``.

    Returns:
        ``(labels (N,) int64, groups)``: each track's cluster and, per cluster (largest first),
        ``{"name", "tags", "count", "kind": "cluster", "named_by"}`` with ``named_by`` ``"tags"`` (frequency
        lift), ``"text"`` (embedding similarity) or ``None``.
    """
    x = np.asarray(vectors, np.float64)
    n = x.shape[0]
    if n == 0:
        return np.zeros(0, np.int64), []
    labels, centroids = spherical_kmeans(x, cluster_count(n), rng=np.random.default_rng(seed))
    by_tags = telling_tags(labels, track_tags)
    tagged = np.bincount(labels, weights=[1.0 if t else 0.0 for t in track_tags], minlength=len(centroids))
    sizes = np.bincount(labels, minlength=len(centroids))
    unnamed = [g for g in range(len(centroids)) if tagged[g] < sizes[g] / 2 or not by_tags[g]]
    by_text: dict[int, list[str]] = {}
    if unnamed and embed_texts is not None:
        texts = _frequent_tags(track_tags, MAX_NAME_TEXTS)
        vecs = _embed_or_none(embed_texts, texts)
        if vecs is not None:
            named = closest_texts(centroids[unnamed], x.mean(axis=0), vecs, texts)
            by_text = {g: names for g, names in zip(unnamed, named, strict=True) if names}
    groups = []
    for g in range(len(centroids)):
        if g in by_text:
            tags, how = by_text[g], "text"
        elif by_tags[g]:
            tags, how = by_tags[g], "tags"
        else:
            tags, how = [], None
        name = " · ".join(_bare(t) for t in tags) if tags else f"group {g + 1}"
        groups.append({"name": name, "tags": tags, "count": int(sizes[g]), "kind": "cluster", "named_by": how})
    return labels, groups


def _frequent_tags(track_tags: Sequence[Sequence[str]], limit: int) -> list[str]:
    """The collection's ``limit`` most frequent distinct tags (up to case; first spelling), ties by name."""
    freq: dict[str, int] = {}
    spelling: dict[str, str] = {}
    for tags in track_tags:
        for key, t in {fold(t): t.strip() for t in tags if fold(t)}.items():
            freq[key] = freq.get(key, 0) + 1
            spelling.setdefault(key, t)
    return [spelling[k] for k in sorted(freq, key=lambda k: (-freq[k], spelling[k]))[:limit]]


def _embed_or_none(embed_texts: Callable[[Sequence[str]], np.ndarray], texts: list[str]) -> np.ndarray | None:
    """The texts' embeddings, or ``None`` (logged) when there are none or the model refuses them (a
    classification model embeds its own tags only)."""
    if not texts:
        return None
    try:
        return np.asarray(embed_texts([_bare(t) for t in texts]), np.float64)
    except MusicSearchError as exc:
        log.info("map clusters are not named by text similarity: %s", exc)
        return None


def map_colourings(
    vectors: np.ndarray,
    track_tags: Sequence[Sequence[str]],
    *,
    seed: int = 0,
    embed_texts: Callable[[Sequence[str]], np.ndarray] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every way a map can be coloured: by clusters (:func:`cluster_groups`) and by each tag family the
    collection has (:func:`map_families`, :func:`family_groups`).

    Args:
        vectors: ``(N, D)`` unit track vectors, in the map's point order.
        track_tags: each point's tags.
        seed: seed of the clustering.
        embed_texts: the store's text tower, to name clusters of untagged tracks (see :func:`cluster_groups`).

    Returns:
        ``{name: {"label", "groups", "labels"}}``, :data:`CLUSTERS` first: ``labels`` (``N`` ints) is each point's
        index into ``groups``.
    """
    labels, groups = cluster_groups(vectors, track_tags, seed=seed, embed_texts=embed_texts)
    out = {CLUSTERS: {"label": CLUSTERS, "groups": groups, "labels": labels.tolist()}}
    for fam in map_families(track_tags):
        labels, groups = family_groups(track_tags, fam)
        out[fam] = {"label": FAMILY_LABELS.get(fam, fam), "groups": groups, "labels": labels.tolist()}
    return out


def load_or_build_map(
    store: Store,
    token: str,
    method: str | None,
    *,
    write_cache: bool = True,
    embed_texts: Callable[[Sequence[str]], np.ndarray] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The map of a store version: from ``map.json`` when it is current (its token, :data:`MAP_VERSION` and
    ``method``), else built with its colourings (:func:`map_colourings`).

    Args:
        store: the store.
        token: its version token (:meth:`~musicsearch.index.store.Store.version_token`).
        method: ``"pca"`` or ``"umap"``; ``None`` takes the saved map whatever its method (a map saved before
            colourings existed keeps its method when rebuilt), else PCA.
        write_cache: save a built map into the store (best effort: a read-only store only logs).
        embed_texts: the store's text tower, to name clusters of untagged tracks (see :func:`cluster_groups`).
        seed: seed of the sample of a big store and of the clustering.

    Returns:
        ``{"token", "version", "method", "total", "points": [{"id", "x", "y", "title", "artist"}],
        "colourings": {name: {"label", "groups", "labels"}}}``: up to :data:`MAP_MAX_POINTS` tracks (a seeded
        sample beyond), ``total`` in the store.
    """
    file = store.path / MAP_FILE
    try:
        obj = json.loads(file.read_text(encoding="utf-8"))
        if obj.get("token") == token and method in (None, obj.get("method")):
            if obj.get("version") == MAP_VERSION:
                return dict(obj)
            if method is None and obj.get("method") in ("pca", "umap"):
                method = str(obj["method"])
    except (OSError, ValueError, AttributeError):
        pass
    method = method or "pca"
    total, _, ids, vecs = store.sample_tracks(max_sample=MAP_MAX_POINTS, seed=seed)
    refs = store.db.lookup_vectors(ids)
    keep = [i for i, ref in enumerate(refs) if ref is not None]
    vecs = vecs[keep]
    records = [refs[i].track for i in keep]  # type: ignore[union-attr]
    xy = map_coordinates(vecs, method=method, seed=seed)
    points = [
        {"id": rec.id, "x": round(x, 5), "y": round(y, 5), "title": rec.title or rec.track_id, "artist": rec.artist}
        for (x, y), rec in zip(xy.tolist(), records, strict=True)
    ]
    colourings = map_colourings(vecs, [rec.tags for rec in records], seed=seed, embed_texts=embed_texts)
    data = {
        "token": token,
        "version": MAP_VERSION,
        "method": method,
        "total": total,
        "points": points,
        "colourings": colourings,
    }
    if write_cache:
        try:
            write_json(file, data, indent=None)
        except OSError as exc:
            log.warning("cannot save %s: %s", file, exc)
    return data


def map_view(data: dict[str, Any], limit: int, colour: str = CLUSTERS) -> dict[str, Any]:
    """What a client gets of a map: at most ``limit`` of its points (an even sample beyond), coloured one way.

    Args:
        data: a map from :func:`load_or_build_map`.
        limit: most points returned.
        colour: :data:`CLUSTERS` or one of the map's tag families (``"colourings"`` of the result lists them).

    Returns:
        ``{"method", "count", "total", "colour", "colourings": [{"name", "label"}], "groups": [{"name", "tags",
        "count", ...}], "points": [{"id", "x", "y", "title", "artist", "group"}]}``: ``count`` tracks on the map,
        ``total`` in the store; ``group`` indexes ``groups`` (whose counts are over the whole map).

    Raises:
        MusicSearchError: a colouring the map does not have.
    """
    colourings = data["colourings"]
    if colour not in colourings:
        raise MusicSearchError(
            f"the map cannot be coloured by {str(colour)[:40]!r}; use one of: {', '.join(colourings)}"
        )
    chosen = colourings[colour]
    every = data["points"]
    picked: Sequence[int] = range(len(every))
    if len(every) > limit:
        step = len(every) / limit
        picked = [int(i * step) for i in range(limit)]
    labels = chosen["labels"]
    return {
        "method": data["method"],
        "count": len(every),
        "total": int(data.get("total", len(every))),
        "colour": colour,
        "colourings": [{"name": name, "label": c["label"]} for name, c in colourings.items()],
        "groups": chosen["groups"],
        "points": [{**every[i], "group": labels[i]} for i in picked],
    }
