"""``musicsearch cache MANIFEST --out DIR``: decode every track once into a memory-mapped audio cache."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from musicsearch.data.cache import EXCERPTS, build_audio_cache
from musicsearch.data.manifest import read_manifest


def _seconds(text: str) -> float | None:
    if text.lower() in ("none", "all", "0"):
        return None
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"--max-seconds must be positive or 'none', got {text}")
    return value


def add_parser(subparsers: Any) -> None:
    """Register ``cache``."""
    p = subparsers.add_parser(
        "cache",
        help="decode a manifest's audio once into a memory-mapped cache (16 kHz float32 .npy)",
        description=(
            "Decode every track of MANIFEST to 16 kHz mono float32 .npy files under DIR, read later memory-mapped. "
            "Resumable: run it again to add new tracks or retry failed ones. Unreadable files are listed and skipped."
        ),
    )
    p.add_argument("manifest", type=Path, help="manifest (JSONL) of the tracks to cache")
    p.add_argument("--out", type=Path, required=True, help="cache folder")
    p.add_argument("--workers", type=int, default=2, help="decoding processes (default: %(default)s)")
    p.add_argument(
        "--max-seconds",
        type=_seconds,
        default=30.0,
        help="seconds cached per track, or 'none' for whole tracks (default: %(default)s)",
    )
    p.add_argument("--excerpt", choices=EXCERPTS, default="start", help="which part of a longer track to cache")
    p.add_argument("--split", choices=("train", "valid", "test"), default=None, help="cache only this split")
    p.add_argument("--sample-rate", type=int, default=16000, help="sample rate in Hz (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build or resume the cache and print a summary and the failures."""
    tracks = read_manifest(args.manifest, split=args.split)
    cache = build_audio_cache(
        tracks,
        args.out,
        sample_rate=args.sample_rate,
        max_seconds=args.max_seconds,
        excerpt=args.excerpt,
        workers=args.workers,
        progress=True,
    )
    wanted = {t.track_id for t in tracks}
    failed = {tid: reason for tid, reason in cache.failed.items() if tid in wanted}
    for tid, reason in failed.items():
        print(f"failed {tid}: {reason}", file=sys.stderr)
    cached = sum(1 for tid in wanted if tid in cache)
    hours = sum(cache.duration(tid) for tid in wanted if tid in cache) / 3600
    print(f"{cached} of {len(tracks)} tracks cached in {args.out} ({hours:.2f} h of audio); {len(failed)} failed")
    return 0
