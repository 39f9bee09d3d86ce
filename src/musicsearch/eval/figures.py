"""The joint embedding map (the paper's Fig. 3): audio, tag and caption embeddings in one UMAP projection.

All points are L2-normalised and projected together with cosine UMAP (umap-learn), seeded, so a map is
reproducible for the same embeddings. Small sets are handled: ``n_neighbors`` is capped at ``N - 1``, random
initialisation replaces the spectral one below 16 points, and fewer than 3 points are laid out by their first
two principal components. Rendering uses matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from musicsearch.errors import MusicSearchError
from musicsearch.fileio import atomic_path
from musicsearch.models.inference import normalize

__all__ = ["joint_projection", "umap_figure"]

log = logging.getLogger(__name__)


def joint_projection(points: Any, *, n_neighbors: int = 15, random_state: int = 0) -> np.ndarray:
    """2-D cosine UMAP of ``(N, D)`` points (deterministic for a ``random_state``).

    Args:
        points: ``(N, D)`` embeddings (normalised here).
        n_neighbors: UMAP neighbourhood size, capped at ``N - 1``.
        random_state: UMAP seed.

    Returns:
        ``(N, 2)`` float32 coordinates; for ``N < 3`` the first two principal components (zeros for ``N = 1``).

    Raises:
        MusicSearchError: for no points or a non-2-D array.
    """
    x = normalize(np.asarray(points, dtype=np.float32))
    if x.ndim != 2 or x.shape[0] == 0:
        raise MusicSearchError(f"the joint map needs (N, D) points with N >= 1, got shape {x.shape}")
    n = x.shape[0]
    if n < 3:
        centred = x - x.mean(axis=0, keepdims=True)
        _, _, vt = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
        coords = centred.astype(np.float64) @ vt[:2].T if vt.shape[0] else np.zeros((n, 0))
        out = np.zeros((n, 2), dtype=np.float32)
        out[:, : coords.shape[1]] = coords
        return out
    import umap  # slow import (numba): only when a map is drawn

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")
        warnings.filterwarnings("ignore", category=UserWarning, module="umap")
        reducer = umap.UMAP(
            n_components=2,
            n_neighbors=max(2, min(n_neighbors, n - 1)),
            metric="cosine",
            random_state=random_state,
            init="spectral" if n >= 16 else "random",
            n_jobs=1,
        )
        coords = reducer.fit_transform(x)
    return np.asarray(coords, dtype=np.float32)


def umap_figure(
    path: str | os.PathLike[str],
    *,
    audio: Any,
    tags: Any,
    tag_names: Sequence[str],
    captions: Any = None,
    title: str = "",
    n_neighbors: int = 15,
    random_state: int = 0,
    max_tag_labels: int = 50,
) -> Path:
    """Draw audio, tag and caption embeddings in one joint UMAP map and save it as PNG (atomically).

    Args:
        path: the PNG file to write.
        audio: ``(Na, D)`` track embeddings.
        tags: ``(Nt, D)`` tag embeddings (text embeddings or classifier rows).
        tag_names: the Nt tag names (the first ``max_tag_labels`` are written beside their points).
        captions: ``(Nc, D)`` caption embeddings, or ``None``.
        title: figure title.
        n_neighbors: UMAP neighbourhood size (capped at N - 1).
        random_state: UMAP seed.
        max_tag_labels: how many tag names to print.

    Returns:
        The path written.

    Raises:
        MusicSearchError: if there is nothing to draw or the shapes disagree.
    """
    a = np.asarray(audio, dtype=np.float32) if audio is not None and np.size(audio) else None
    t = np.asarray(tags, dtype=np.float32) if tags is not None and np.size(tags) else None
    c = np.asarray(captions, dtype=np.float32) if captions is not None and np.size(captions) else None
    groups = [(name, arr) for name, arr in (("audio", a), ("tag", t), ("caption", c)) if arr is not None]
    if not groups:
        raise MusicSearchError("the joint map needs audio, tag or caption embeddings")
    dims = {arr.shape[1] for _, arr in groups}
    if len(dims) != 1:
        raise MusicSearchError(f"embeddings of different sizes cannot share one map: {sorted(dims)}")
    if t is not None and len(tag_names) != t.shape[0]:
        raise MusicSearchError(f"{len(tag_names)} tag names for {t.shape[0]} tag embeddings")
    coords = joint_projection(np.concatenate([arr for _, arr in groups]), n_neighbors=n_neighbors,
                              random_state=random_state)  # fmt: skip

    from matplotlib.figure import Figure  # the object API renders with Agg and needs no pyplot state

    fig = Figure(figsize=(8, 7), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    style = {
        "audio": {"c": "#4C72B0", "marker": "o", "s": 12, "alpha": 0.6},
        "caption": {"c": "#55A868", "marker": "^", "s": 16, "alpha": 0.7},
        "tag": {"c": "#C44E52", "marker": "*", "s": 60, "alpha": 0.9},
    }
    start = 0
    tag_coords = None
    for name, arr in groups:
        xy = coords[start : start + arr.shape[0]]
        start += arr.shape[0]
        ax.scatter(xy[:, 0], xy[:, 1], label=f"{name} ({arr.shape[0]})", **style[name])  # type: ignore[arg-type]
        if name == "tag":
            tag_coords = xy
    if tag_coords is not None:
        for (x0, y0), label in list(zip(tag_coords, tag_names))[:max_tag_labels]:
            ax.annotate(label, (float(x0), float(y0)), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_title(title or "joint embedding space (UMAP, cosine)", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    dest = Path(path)
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png")
    log.info("joint map written to %s", dest)
    return dest
