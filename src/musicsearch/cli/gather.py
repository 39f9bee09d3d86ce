"""``musicsearch gather debian --out DIR``: real, freely licensed recordings from Debian game-music packages."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from musicsearch.data.sources.debian_music import DEBIAN_MUSIC_PACKAGES, MIN_SECONDS, gather_debian_music


def add_parser(subparsers: Any) -> None:
    """Register ``gather`` (with its one source, ``debian``)."""
    p = subparsers.add_parser(
        "gather",
        help="gather real, redistributable recordings (Debian game-music packages) into a manifest",
        description=(
            "Fetch Debian packages that carry free game music with `apt-get download`, unpack their music "
            "(also from .pk3/.zip archives inside them; tracker modules rendered to FLAC) and copyright files, "
            "drop sound effects and duplicates, and write an unlabelled manifest whose metadata records each "
            "track's licence. For your own music library use `musicsearch scan DIR` instead."
        ),
    )
    sources = p.add_subparsers(dest="source", metavar="SOURCE", required=True)
    total = sum(x.download_mb for x in DEBIAN_MUSIC_PACKAGES)
    d = sources.add_parser(
        "debian",
        help="Debian packages of free-game music",
        description="Known packages: " + ", ".join(f"{x.name} ({x.download_mb:.0f} MB)" for x in DEBIAN_MUSIC_PACKAGES),
    )
    d.add_argument("--out", type=Path, required=True, help="folder for the .deb cache, the audio and manifest.jsonl")
    d.add_argument(
        "--packages",
        default=None,
        help=f"comma-separated package names, earlier ones win duplicates (default: all known, {total / 1000:.1f} GB)",
    )
    d.add_argument(
        "--min-seconds",
        type=float,
        default=MIN_SECONDS,
        help=f"shortest file kept, in seconds; shorter ones are sound effects (default {MIN_SECONDS:g})",
    )
    d.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Gather, then print per package the tracks, hours, what was left out and the licence, then the total."""
    packages = [x.strip() for x in args.packages.split(",") if x.strip()] if args.packages else None
    report = gather_debian_music(args.out, packages, min_seconds=args.min_seconds)
    for p in report.packages:
        if p.error is not None:
            print(f"{p.package}: LEFT OUT: {p.error}")
            continue
        state = "downloaded" if p.downloaded else "cached"
        print(
            f"{p.package} {p.version}: {p.files} tracks, {p.seconds / 3600:.2f} h ({state}); "
            f"left out {p.too_short} shorter than {args.min_seconds:g} s, {len(p.duplicates)} duplicates, "
            f"{len(p.skipped)} unreadable; licence: {p.licence}"
        )
        for rel, reason in p.skipped:
            print(f"  unreadable {rel}: {reason}")
        for copy, kept in p.duplicates:
            print(f"  duplicate {copy} = {kept}")
    n = sum(p.files for p in report.packages)
    print(f"wrote {n} tracks ({report.hours:.2f} h of audio) to {report.manifest}")
    return 0
