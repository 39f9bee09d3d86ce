"""Reading stored vectors by id: ``VectorBackend.get`` against the route search took before it existed (a search
restricted to those ids, ``allowed_ids``, scoring them all), on the FAISS backend in both of its modes. Prints a
table.

Search reads a few vectors by id per query (the windows of the results, the candidates of a negative term, an
indexed example) from ``vectors.f32``; a store without that file (one written before it existed, or merged by
hand) reads them from the backend. Vectors: seeded Gaussian-mixture unit vectors (:mod:`_data`). The first
``get`` on an IVF index builds its id map (one pass over the ids): timed apart as ``first get``.

Usage:
    nice -n 10 python benchmarks/vector_get.py
    nice -n 10 python benchmarks/vector_get.py --sizes 20000,200000 --fetch 64,640 --repeat 20
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

import numpy as np

from _data import gaussian_mixture_vectors
from musicsearch.index.backends.base import VectorBackend, create_backend

DIM = 256


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def restricted_search(backend: VectorBackend, ids: np.ndarray, query: np.ndarray) -> np.ndarray:
    """The route before ``get``: the cosines of ``query`` with the vectors ``ids``, by a search restricted to them."""
    scores, _ = backend.search(query, int(ids.size), allowed_ids=ids)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="20000,200000", help="stored vectors (comma-separated)")
    parser.add_argument("--fetch", default="64,640", help="ids read at a time (comma-separated)")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(
        f"{'n':>8} {'mode':>6} {'fetch':>6} {'restricted search ms':>21} {'found':>6} {'get ms':>8} {'ratio':>7} "
        f"{'first get ms':>13}"
    )
    for n in (int(x) for x in args.sizes.split(",")):
        vectors, centers = gaussian_mixture_vectors(n, DIM, rng=rng, n_clusters=max(16, n // 1000))
        query, _ = gaussian_mixture_vectors(1, DIM, rng=rng, centers=centers)
        ids = np.arange(n, dtype=np.int64)
        backend = create_backend("faiss", DIM, exact_threshold=50_000)  # the default: exact below 50k, IVF above
        backend.add(ids, vectors)
        mode = backend.mode  # type: ignore[attr-defined]
        first = None
        for m in (int(x) for x in args.fetch.split(",")):
            ask = np.sort(rng.choice(ids, size=min(m, n), replace=False))
            if first is None:
                t0 = time.perf_counter()
                backend.get(ask)
                first = 1e3 * (time.perf_counter() - t0)
            exact = np.sort(backend.get(ask) @ query[0])[::-1]  # (m,) the true cosines, best first
            routed = restricted_search(backend, ask, query)[0]
            found = int(np.isfinite(routed).sum())  # an IVF index may leave some of them out
            assert np.allclose(routed[:found], exact[:found], atol=1e-5), "get and the search disagree"
            old = median_ms(functools.partial(restricted_search, backend, ask, query), args.repeat)
            new = median_ms(functools.partial(backend.get, ask), args.repeat)
            print(f"{n:>8} {mode:>6} {m:>6} {old:>21.2f} {found:>6} {new:>8.2f} {old / new:>6.1f}x {first:>13.1f}")
        backend.close()


if __name__ == "__main__":
    main()
