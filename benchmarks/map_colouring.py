"""What colouring the collection map costs beside drawing it: the map's PCA coordinates (what a map cost before it
was coloured) against its colourings (:func:`musicsearch.search.collection_map.map_colourings`: seeded spherical
k-means with its cluster names, and every tag family the collection has), and the text tower's embedding of the
collection's tags (paid only when a cluster is named by text similarity). Prints a table.

The collection is synthetic: N unit vectors from a Gaussian mixture of 40 components (clustered like real
embeddings), each track tagged like the procedural corpus (a genre, 2-3 instruments, a mood, a tempo and a key of
the shipped vocabulary, drawn mostly from its component's own, so clusters have telling tags). N at most
:data:`~musicsearch.search.collection_map.MAP_MAX_POINTS` (20 000): a bigger store's map is a sample of that size.
Each step runs ``--repeat`` times in turn on the same data; the table gives the median seconds.

Usage:
    nice -n 10 python benchmarks/map_colouring.py --sizes 2000,20000 --repeat 3
    nice -n 10 python benchmarks/map_colouring.py --sizes 20000 --texts 1000   # + the default model's text tower
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from _data import gaussian_mixture_vectors
from musicsearch.data.synth.tags import VOCABULARY
from musicsearch.search.collection_map import CLUSTERS, map_colourings, map_coordinates

DIM = 128
COMPONENTS = 40


def synthetic_collection(n: int, seed: int = 0) -> tuple[np.ndarray, list[list[str]]]:
    """``(vectors (n, DIM) float32 unit, tags per track)``: tags drawn mostly from the track's component's own."""
    rng = np.random.default_rng(seed)
    vectors, centers = gaussian_mixture_vectors(n, DIM, rng=rng, n_clusters=COMPONENTS, spread=(0.4, 0.8))
    component = np.argmax(vectors @ centers[:, :DIM].T, axis=1)  # the nearest centre stands in for the component
    by_family: dict[str, list[str]] = {}
    for tag, family in VOCABULARY.items():
        by_family.setdefault(family, []).append(tag)
    own = {
        c: {f: list(rng.choice(by_family[f], size=min(3, len(by_family[f])), replace=False)) for f in by_family}
        for c in range(COMPONENTS)
    }
    wanted = {"genre": 1, "instrument": 3, "mood": 1, "tempo": 1, "key": 1}
    tags = []
    for c in component.tolist():
        mine: list[str] = []
        for family, count in wanted.items():
            pool = own[c][family] if rng.random() < 0.8 else by_family[family]
            mine.extend(str(t) for t in rng.choice(pool, size=min(count, len(pool)), replace=False))
        tags.append(list(dict.fromkeys(mine)))
    return vectors, tags


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2000,20000", help="comma-separated collection sizes (<= 20000)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--texts", type=int, default=0, help="also time the default model embedding N tags")
    args = parser.parse_args()
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        vectors, tags = synthetic_collection(n)
        pca = median_seconds(lambda: map_coordinates(vectors), args.repeat)  # noqa: B023 - called right here
        col = median_seconds(lambda: map_colourings(vectors, tags), args.repeat)  # noqa: B023
        result = map_colourings(vectors, tags)
        clusters = result[CLUSTERS]["groups"]
        named = sum(1 for g in clusters if g["named_by"] == "tags")
        rows.append((n, pca, col, len(clusters), named, len(result) - 1))
    print("| tracks | PCA coordinates (s) | colourings (s) | colourings / PCA | clusters (named by tags) | families |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n, pca, col, k, named, fams in rows:
        print(f"| {n} | {pca:.3f} | {col:.3f} | {col / pca:.1f}x | {k} ({named}) | {fams} |")
    if args.texts:
        from musicsearch.search.textenc import open_embedder

        embedder = open_embedder("default")
        texts = sorted(VOCABULARY)[: args.texts]
        texts = (texts * (args.texts // max(1, len(texts)) + 1))[: args.texts]
        secs = median_seconds(lambda: embedder.embed_texts(texts), args.repeat)
        print(f"\nembedding {len(texts)} tag texts with the default model ({type(embedder).__name__}): {secs:.2f} s")


if __name__ == "__main__":
    main()
