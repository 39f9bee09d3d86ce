"""Synthetic vector data for the benchmarks and the tests (not part of the library).

The benchmarks import it as ``from _data import gaussian_mixture_vectors`` (``python benchmarks/NAME.py`` puts
``benchmarks/`` on the path); the tests through ``tests/conftest.py``.
"""

from __future__ import annotations

import numpy as np

from musicsearch.index.backends.base import l2_normalize


def gaussian_mixture_vectors(
    n: int,
    dim: int,
    *,
    rng: np.random.Generator,
    n_clusters: int = 1024,
    spread: tuple[float, float] = (0.5, 1.5),
    centers: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic clustered unit vectors (more like real embeddings than uniform noise), for tests and benchmarks.

    Each vector is a random cluster centre (a unit vector) plus isotropic Gaussian noise whose total norm is about
    the cluster's spread (drawn per cluster from ``spread``), then L2-normalised.

    Args:
        n: number of vectors.
        dim: dimension.
        rng: the one source of randomness.
        n_clusters: number of mixture components (ignored when ``centers`` is given).
        spread: range of per-cluster noise norms relative to the unit centre.
        centers: ``(C, dim + 1)`` output of an earlier call (centre rows plus the spread column), to draw queries
            from the same mixture.

    Returns:
        ``(vectors (n, dim) float32 unit rows, centers (C, dim + 1) float32)``.
    """
    if centers is None:
        c = rng.standard_normal((n_clusters, dim)).astype(np.float32)
        c /= np.linalg.norm(c, axis=1, keepdims=True)
        s = rng.uniform(spread[0], spread[1], size=(n_clusters, 1)).astype(np.float32)
        centers = np.concatenate([c, s], axis=1)
    label = rng.integers(0, centers.shape[0], size=n)
    mu, sigma = centers[label, :dim], centers[label, dim:]
    x = mu + rng.standard_normal((n, dim)).astype(np.float32) * (sigma / np.float32(np.sqrt(dim)))
    return l2_normalize(x), centers
