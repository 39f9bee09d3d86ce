"""``musicsearch scan DIR``: make a manifest from a folder of audio files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from musicsearch.data.manifest import write_manifest
from musicsearch.data.scan import DEFAULT_SPLIT_RATIOS, parse_split_ratios, scan_directory
from musicsearch.errors import ManifestError


def add_parser(subparsers: Any) -> None:
    """Register ``scan``."""
    p = subparsers.add_parser(
        "scan",
        help="make a manifest (JSONL) from a folder of audio files",
        description=(
            "Walk DIR for audio files (wav, flac, ogg, opus, mp3, aiff; m4a/aac/wma with ffmpeg) and write one "
            "manifest line per readable file. Ids are relative paths without suffix; artist/album/title come from "
            "the path convention Artist/Album/NN Title.ext; a tags CSV adds tags, captions, splits and metadata. "
            "Unreadable files are listed and skipped."
        ),
    )
    p.add_argument("dir", type=Path, help="folder of audio files")
    p.add_argument(
        "--tags",
        type=Path,
        default=None,
        help="CSV with a header: path (relative to DIR, or a bare file name), tags (';' or ',' separated), "
        "optional captions ('|' separated), split, artist, album, year",
    )
    p.add_argument("--out", type=Path, default=None, help="manifest to write (default: DIR/manifest.jsonl)")
    p.add_argument(
        "--split-ratios",
        default=",".join(str(r) for r in DEFAULT_SPLIT_RATIOS),
        help="train,valid,test fractions for tracks without a split in the CSV (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split hash (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Scan, write the manifest, print a summary and the skipped files."""
    ratios = parse_split_ratios(args.split_ratios)
    report = scan_directory(args.dir, tags_csv=args.tags, split_ratios=ratios, seed=args.seed, progress=True)
    for rel, reason in report.skipped:
        print(f"skipped {rel}: {reason}", file=sys.stderr)
    for rel in report.unmatched_tags:
        print(f"tags CSV row matched no audio file: {rel}", file=sys.stderr)
    if not report.tracks:
        raise ManifestError(
            f"no readable audio files in {args.dir} ({len(report.skipped)} skipped); "
            f"supported: wav, flac, ogg, opus, mp3, aiff (m4a/aac/wma need ffmpeg)"
        )
    out = args.out if args.out is not None else args.dir / "manifest.jsonl"
    n = write_manifest(out, report.tracks)
    counts = {s: sum(t.split == s for t in report.tracks) for s in ("train", "valid", "test")}
    split_text = ", ".join(f"{k} {v}" for k, v in counts.items())
    print(f"wrote {n} tracks to {out} ({split_text}); skipped {len(report.skipped)} unreadable files")
    return 0
