"""``musicsearch index SOURCE --store PATH``: embed a folder or manifest of audio into a searchable store."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from musicsearch.errors import MusicSearchError
from musicsearch.index.embedder import DEFAULT_BATCH_ONNX, DEFAULT_BATCH_TORCH, model_threads, open_index_embedder
from musicsearch.index.indexer import DECODE_TIMEOUT, default_workers, index_collection
from musicsearch.index.shards import merge_stores, shard_store_path
from musicsearch.index.store import store_model
from musicsearch.search.api import prepare_store


def add_parser(subparsers: Any) -> None:
    """Register ``index``."""
    p = subparsers.add_parser(
        "index",
        help="index a folder or manifest of audio into a store (incremental, resumable)",
        description=(
            "Embed every track of SOURCE (a folder, searched recursively, or a JSONL manifest) with the model and "
            "store one vector per track and per window in the store PATH. Reruns skip unchanged files, re-embed "
            "changed ones and (with --prune) drop removed ones; a killed run resumes where it stopped. Bad files "
            "are listed with their reason at the end and never stop the run."
        ),
    )
    p.add_argument("source", type=Path, nargs="?", help="folder of audio files, or a JSONL manifest")
    p.add_argument("--store", type=Path, required=True, help="store directory (created when missing)")
    shard = p.add_mutually_exclusive_group()
    shard.add_argument(
        "--shard",
        default=None,
        metavar="K/N",
        help="index only shard K of N (tracks whose SHA-256 of their id is K mod N) into STORE.shard-K-of-N",
    )
    shard.add_argument(
        "--shard-from-env",
        action="store_true",
        help="--shard RANK/WORLD_SIZE from the environment (as torchrun sets them)",
    )
    shard.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        default=None,
        metavar="SHARD_STORE",
        help="merge these shard stores (all ranks of one run) into the new store --store; no SOURCE",
    )
    p.add_argument(
        "--model",
        default=None,
        help="model: .safetensors checkpoint, training run folder, or name (default: the store's own model for an "
        "existing store, the shipped 'default' model for a new one)",
    )
    p.add_argument("--backend", default=None, help="vector backend of a new store: faiss (default), numpy, milvus")
    p.add_argument(
        "--backend-options",
        type=json.loads,
        default=None,
        metavar="JSON",
        help='options of a new (or --merge) store\'s backend, e.g. \'{"uri": "http://milvus:19530", "collection": '
        '"music", "num_shards": 4}\' (docs/scaling.md)',
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"decoding processes (default {default_workers()} here; 0 decodes in the main process)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"windows per model forward pass (default: {DEFAULT_BATCH_ONNX} with ONNX Runtime, {DEFAULT_BATCH_TORCH} "
        "with torch)",
    )
    p.add_argument("--device", default="cpu", help="where the model runs: cpu (default), cuda, cuda:N")
    p.add_argument("--max-windows", type=int, default=None, help="windows per track at most, for a new store (16)")
    p.add_argument("--prune", action="store_true", help="drop stored tracks whose files are gone from SOURCE")
    p.add_argument("--retry-failed", action="store_true", help="retry files that failed before and did not change")
    p.add_argument(
        "--rehash",
        action="store_true",
        help="hash every file again even if its size and modification time are unchanged (finds same-size edits "
        "whose modification time was restored; changed files are re-embedded)",
    )
    p.add_argument(
        "--decode-timeout",
        type=float,
        default=DECODE_TIMEOUT,
        metavar="SECONDS",
        help=f"give up on a file that takes longer to read and decode (default {DECODE_TIMEOUT:g}; 0: no limit)",
    )
    p.add_argument("--commit-every", type=int, default=256, help="commit after this many tracks (default: 256)")
    p.add_argument(
        "--map", choices=("pca", "umap", "none"), default="pca", help="2-D map of the collection to precompute"
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="decode and embed on a Ray cluster (pip install 'musicsearch[cluster]'): no ADDRESS starts Ray on this "
        "machine, 'auto' joins this node's cluster, ray://HOST:10001 a remote one (docs/scaling.md)",
    )
    p.add_argument(
        "--ray-actors", type=int, default=None, help="embedding actors with --ray (default: one per GPU, else CPUs/4)"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)``.

    Raises:
        MusicSearchError: if ``text`` is not ``K/N`` with ``0 <= K < N``.
    """
    try:
        rank, world = (int(part) for part in text.split("/"))
    except ValueError:
        raise MusicSearchError(f"--shard {text!r}: write it as K/N, e.g. 0/4 for the first of four shards") from None
    if not 0 <= rank < world:
        raise MusicSearchError(f"--shard {text!r}: need 0 <= K < N")
    return rank, world


def shard_from_env(env: Mapping[str, str] = os.environ) -> tuple[int, int]:
    """``(RANK, WORLD_SIZE)`` from the environment (torchrun sets both).

    Raises:
        MusicSearchError: if either is missing or invalid.
    """
    if "RANK" not in env or "WORLD_SIZE" not in env:
        raise MusicSearchError("--shard-from-env needs RANK and WORLD_SIZE in the environment (run under torchrun)")
    return parse_shard(f"{env['RANK']}/{env['WORLD_SIZE']}")


def run(args: argparse.Namespace) -> int:
    """Index (or merge), calibrate, print the report; exit 1 only when files failed and none could be indexed."""
    if args.merge is not None:
        if args.source is not None:
            raise MusicSearchError("--merge takes no SOURCE: give the shard stores after --merge and the new --store")
        merged = merge_stores(
            args.merge, args.store.expanduser(), backend=args.backend, backend_options=args.backend_options
        )
        prepare_store(args.store.expanduser(), map_method=None if args.map == "none" else args.map)
        if args.json:
            print(json.dumps(merged.to_json(), indent=2, ensure_ascii=False))
        else:
            print(
                f"{merged.store}: merged {len(merged.shards)} shards: {merged.tracks} tracks, "
                f"{merged.vectors} vectors, {merged.files} files"
            )
        return 0
    if args.source is None:
        raise MusicSearchError("give the SOURCE folder or manifest to index (or --merge SHARD_STORE ...)")
    shard = shard_from_env() if args.shard_from_env else None if args.shard is None else parse_shard(args.shard)
    base = args.store.expanduser()
    store = base if shard is None else shard_store_path(base, shard)
    index_fn: Any = index_collection
    if args.ray is not None:  # checked before loading the model: without Ray, say at once how to install it
        from musicsearch.index.cluster import RayOptions, import_ray, index_collection_ray

        import_ray()
        ray_options = RayOptions(address=None if args.ray == "local" else args.ray, actors=args.ray_actors)
        index_fn = functools.partial(index_collection_ray, options=ray_options)
    workers = default_workers() if args.workers is None else args.workers
    embedder = open_index_embedder(  # its session made at once for the threads the run gives the model
        store_model(store, args.model), batch_size=args.batch_size, device=args.device, threads=model_threads(workers)
    )
    report = index_fn(
        args.source.expanduser(),
        store,
        model=embedder,
        backend=args.backend,
        backend_options=args.backend_options,
        workers=args.workers,
        batch_size=embedder.batch_size,  # the runtime's default unless --batch-size
        max_windows=args.max_windows,
        prune=args.prune,
        retry_failed=args.retry_failed,
        rehash=args.rehash,
        decode_timeout=args.decode_timeout or None,
        commit_tracks=args.commit_every,
        progress=True,
        shard=shard,
    )
    if shard is None:  # a shard's calibration and map would describe part of the collection: made after merging
        prepare_store(store, model=embedder, map_method=None if args.map == "none" else args.map)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        print(
            f"{report.store}: {report.added} added, {report.updated} updated, {report.unchanged} unchanged, "
            f"{report.removed} removed, {len(report.failed)} failed ({report.scanned} in the source)"
        )
        if report.embedded:
            print(
                f"embedded {report.embedded} tracks ({report.windows} windows) in {report.wall_seconds:.1f} s: "
                f"{report.tracks_per_minute:.0f} tracks/min; decoding {report.decode_seconds:.1f} CPU-s in "
                f"{report.workers} workers, model {report.model_seconds:.1f} s, writing {report.write_seconds:.1f} s"
            )
        if report.stale:
            print(f"{report.stale} stored tracks are no longer in the source; rerun with --prune to drop them")
        if report.repaired:
            print(f"repaired {report.repaired} items left by an interrupted run")
        for f in report.failed:
            print(f"failed {f.track_id}: {f.reason}", file=sys.stderr)
    return 1 if report.failed and not (report.embedded or report.unchanged) else 0
