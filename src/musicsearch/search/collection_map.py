"""The collection map: 2-D coordinates of a store's tracks for the web page's plot, cached in ``map.json``."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

from musicsearch.errors import MusicSearchError
from musicsearch.fileio import write_json
from musicsearch.index.backends.base import scan_vectors
from musicsearch.index.store import Store

__all__ = ["MAP_FILE", "MAP_MAX_POINTS", "load_or_build_map", "map_coordinates", "map_view"]

log = logging.getLogger(__name__)

MAP_FILE = "map.json"
#: Tracks drawn on the collection map at most (a seeded sample beyond).
MAP_MAX_POINTS = 20_000


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


def load_or_build_map(store: Store, token: str, method: str | None, *, write_cache: bool = True) -> dict[str, Any]:
    """The map of a store version: from ``map.json`` when it is current (and of ``method``), else built.

    Args:
        store: the store.
        token: its version token (:meth:`~musicsearch.index.store.Store.version_token`).
        method: ``"pca"`` or ``"umap"``; ``None`` takes the saved map whatever its method, else PCA.
        write_cache: save a built map into the store (best effort: a read-only store only logs).

    Returns:
        ``{"token", "method", "total", "points": [{"id", "x", "y", "title", "artist", "tag"}]}``: up to
        :data:`MAP_MAX_POINTS` tracks (a seeded sample beyond), ``total`` in the store.
    """
    file = store.path / MAP_FILE
    try:
        obj = json.loads(file.read_text(encoding="utf-8"))
        if obj.get("token") == token and method in (None, obj.get("method")):
            return dict(obj)
    except (OSError, ValueError):
        pass
    method = method or "pca"
    total, _, ids, vecs = scan_vectors(store.tracks, max_sample=MAP_MAX_POINTS)
    xy = map_coordinates(vecs, method=method)
    refs = store.db.lookup_vectors(ids)
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
    if write_cache:
        try:
            write_json(file, data, indent=None)
        except OSError as exc:
            log.warning("cannot save %s: %s", file, exc)
    return data


def map_view(data: dict[str, Any], limit: int) -> dict[str, Any]:
    """What a client gets of a map: at most ``limit`` of its points (an even sample beyond).

    Args:
        data: a map from :func:`load_or_build_map`.
        limit: most points returned.

    Returns:
        ``{"method", "count", "total", "points"}``: ``count`` tracks on the map, ``total`` in the store.
    """
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
