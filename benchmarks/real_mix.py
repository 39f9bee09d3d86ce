"""Real-embedding collections for the 1 M query benchmark, and the ``nprobe`` sweep on a kept store.

**Vectors** (``--vectors real-mix`` of ``benchmarks/query_latency.py``). The base set is REAL: the window
embeddings, by the shipped ``default`` model, of the 3,212 windows of 598 real recordings (``data/debian-music``)
and the 300 procedural-corpus windows whose backbone features ``runs/soft2`` caches (the model's own head applied
to them: the audio tower on cached backbone outputs, checked against the ONNX audio tower on decoded audio). A
real collection of 1 M tracks does not exist on this machine, so the set is grown to ``N`` by seeded mixtures of
real neighbours: each new vector is ``normalise(λ·a + (1-λ)·b + ε)`` for a random real vector ``a``, one of its 8
nearest real neighbours ``b``, ``λ ~ U(0, 1)`` and isotropic noise ``ε`` whose norm is half the distance
``|a - b|`` (so the grown set fills the real neighbourhoods, never leaves the manifold the model maps music to).

**Queries** are real texts embedded by the model's text tower: the tuning texts the indexer uses
(``musicsearch.index.tuning``: the model's 209 tags, the corpus vocabulary, captions) and a held-out set the
tuning never saw, the captions of the procedural corpus (``data/corpus``, 3 a clip), plus queries by example.

**Sweep** (this file's ``main``): FAISS alone on a kept store's track index, 1 thread, recall@10 against exact
search and p50/p99 latency per query for each ``nprobe`` of the ladder, per query group.

Usage (after ``query_latency.py --vectors real-mix --keep DIR`` built the store)::

    python benchmarks/real_mix.py --store ~/.cache/musicsearch-bench/store1000000x1-realmix-c351aec00b88
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CACHE = Path("~/.cache/musicsearch-bench").expanduser()


def real_window_embeddings(model: str = "default", soft_dir: Path = REPO / "runs/soft2") -> np.ndarray:
    """``(M, D)`` float32 unit window embeddings of ``model`` from the backbone features cached in ``soft_dir``
    (real recordings, then corpus windows); cached in ``~/.cache/musicsearch-bench``. Checked once against the
    model's ONNX audio tower on 8 decoded real windows (cosine >= 0.999, else ``SystemExit``)."""
    import torch

    from musicsearch.data.manifest import read_manifest
    from musicsearch.index.backends.base import l2_normalize
    from musicsearch.models.loading import resolve_model
    from musicsearch.models.registry import PRESETS
    from musicsearch.train.heads import feature_columns, load_features, load_window

    resolved = resolve_model(model)
    out = CACHE / f"real-windows-{resolved.sha256[:12]}.npy"
    if out.is_file():
        return np.load(out)
    net = resolved.model
    if net.config.audio.kind != "musicnn":
        raise SystemExit(f"model {model} has no musicnn tower: the cached features of {soft_dir} do not apply")
    source_audio, _ = PRESETS.get("musicnn-both-small")()
    cols = feature_columns(source_audio, net.config.audio)
    parts, windows = [], []
    for name, sub in (("windows.jsonl", "real"), ("corpus_windows.jsonl", "corpus")):
        wins = read_manifest(soft_dir / name)
        feats = load_features(wins, soft_dir / "features" / sub)
        with torch.inference_mode():
            emb = net.joint_from_features(torch.from_numpy(feats.features[:, cols])).numpy()
        parts.append(l2_normalize(emb))
        windows += wins
    vecs = np.concatenate(parts).astype(np.float32)
    from musicsearch.search.textenc import open_embedder

    onnx = open_embedder(model, onnx=True)
    probe = np.linspace(0, len(windows) // 2, 8).astype(int)  # real windows only
    wave = np.stack([load_window(windows[i], onnx.window_samples) for i in probe])
    cos = np.sum(l2_normalize(onnx.embed_windows(wave)) * vecs[probe], axis=1)  # embed_windows: raw vectors
    if float(cos.min()) < 0.999:
        raise SystemExit(f"cached-feature embeddings differ from the model's audio tower (cosine {cos.min():.4f})")
    print(f"real windows: {vecs.shape[0]} ({model}); cached features vs ONNX audio tower: cosine >= {cos.min():.5f}",
          file=sys.stderr)  # fmt: skip
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(out, vecs)
    return vecs


def grow_real_mix(base: np.ndarray, n: int, rng: np.random.Generator, *, neighbours: int = 8) -> np.ndarray:
    """``(n, D)`` float32 unit vectors: ``base`` itself first, then seeded mixtures of real neighbours plus noise
    (see the module docstring)."""
    from musicsearch.index.backends.base import l2_normalize

    m, dim = base.shape
    sims = base @ base.T  # (M, M)
    np.fill_diagonal(sims, -np.inf)
    near = np.argpartition(-sims, neighbours, axis=1)[:, :neighbours]  # (M, neighbours)
    out = np.empty((n, dim), np.float32)
    take = min(n, m)
    out[:take] = base[:take]
    block = 200_000
    for start in range(take, n, block):
        b = min(block, n - start)
        a = rng.integers(0, m, b)
        nb = near[a, rng.integers(0, neighbours, b)]
        lam = rng.random((b, 1), dtype=np.float32)
        va, vb = base[a], base[nb]
        scale = 0.5 * np.linalg.norm(va - vb, axis=1, keepdims=True) / np.sqrt(dim)
        noise = rng.standard_normal((b, dim), dtype=np.float32) * scale
        out[start : start + b] = l2_normalize(lam * va + (1 - lam) * vb + noise)
    return out


def heldout_captions(corpus: Path = REPO / "data/corpus/manifest.jsonl", limit: int = 600) -> list[str]:
    """Captions of the procedural corpus (never used by the tuning), first ``limit`` distinct ones."""
    texts: list[str] = []
    with open(corpus, encoding="utf-8") as fh:
        for line in fh:
            texts += json.loads(line).get("captions", [])
    return list(dict.fromkeys(texts))[:limit]


def query_groups(embedder: object, tracks: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Query groups of a real-mix store: ``tuning texts``, ``held-out captions`` (text tower of ``embedder``) and
    ``examples`` (256 stored vectors, seeded)."""
    from musicsearch.index.tuning import tuning_texts

    embed = embedder.embed_texts  # type: ignore[attr-defined]
    return {
        "tuning texts": embed(tuning_texts(embedder)),  # type: ignore[arg-type]
        "held-out captions": embed(heldout_captions()),
        "examples": tracks[np.sort(rng.choice(tracks.shape[0], 256, replace=False))],
    }


def sweep(store_path: Path, *, model: str, threads: int, repeats: int) -> None:
    """Print recall@10 and latency over the ``nprobe`` ladder for each query group on the store's track index."""
    import faiss
    from threadpoolctl import threadpool_limits

    from musicsearch.index.backends.faiss_backend import nprobe_ladder, recall_at_k
    from musicsearch.index.store import Store
    from musicsearch.search.textenc import open_embedder

    embedder = open_embedder(model, onnx=True)
    store = Store.open(store_path)
    backend = store.tracks
    index = faiss.downcast_index(backend._index)  # type: ignore[attr-defined]
    nlist = int(index.nlist)
    tuning = backend.tuning  # type: ignore[attr-defined]
    ids = backend.ids()
    vecs = store.vectors(ids)
    groups = query_groups(embedder, vecs, np.random.default_rng(1))
    faiss.omp_set_num_threads(max(1, os.cpu_count() or 1))
    kth = {g: faiss.knn(q, vecs, 10, metric=faiss.METRIC_INNER_PRODUCT)[0][:, 9] for g, q in groups.items()}
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nnprobe sweep: {store_path.name}, IVF{nlist},Flat, {len(ids):,} vectors; FAISS alone, {threads} thread(s),"
          f" one query at a time; tuned nprobe {getattr(tuning, 'nprobe', None)}; load average {load}\n")  # fmt: skip
    names = list(groups)
    print("| nprobe | " + " | ".join(f"{g} recall@10 ({len(groups[g])} q)" for g in names) + " | p50 ms | p99 ms |")
    print("|---:|" + "---:|" * len(names) + "---:|---:|")
    ladder = [p for p in nprobe_ladder(nlist) if 4 <= p <= 256]
    with threadpool_limits(limits=threads):
        faiss.omp_set_num_threads(threads)
        for p in ladder:
            params = faiss.SearchParametersIVF(nprobe=p)
            recalls = {g: recall_at_k(index.search(q, 10, params=params)[0], kth[g]) for g, q in groups.items()}
            qs = groups["held-out captions"]
            times = []
            for _ in range(repeats):
                for row in qs:
                    t0 = time.perf_counter()
                    index.search(row[None, :], 26, params=params)  # k + the backend's tie margin, as search asks
                    times.append(1000 * (time.perf_counter() - t0))
            mark = " (tuned)" if tuning is not None and p == tuning.nprobe else ""
            print(f"| {p}{mark} | " + " | ".join(f"{recalls[g]:.3f}" for g in names)
                  + f" | {np.percentile(times, 50):.2f} | {np.percentile(times, 99):.2f} |")  # fmt: skip
    store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True, help="a store built by query_latency.py --vectors real-mix --keep")
    ap.add_argument("--model", default="default")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1, help="passes over the held-out captions for the latency")
    args = ap.parse_args()
    sweep(Path(args.store).expanduser(), model=args.model, threads=args.threads, repeats=args.repeats)


if __name__ == "__main__":
    main()
