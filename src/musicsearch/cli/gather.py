"""``musicsearch gather debian --out DIR``: real, freely licensed recordings from Debian soundtrack packages."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from musicsearch.data.sources.debian_music import DEBIAN_MUSIC_PACKAGES, gather_debian_music


def add_parser(subparsers: Any) -> None:
    """Register ``gather`` (with its one source, ``debian``)."""
    p = subparsers.add_parser(
        "gather",
        help="gather real, redistributable recordings (Debian game-soundtrack packages) into a manifest",
        description=(
            "Fetch Debian packages that carry free game soundtracks with `apt-get download`, unpack their audio "
            "and copyright files, and write an unlabelled manifest whose metadata records each package's licence. "
            "For your own music library use `musicsearch scan DIR` instead."
        ),
    )
    sources = p.add_subparsers(dest="source", metavar="SOURCE", required=True)
    d = sources.add_parser(
        "debian",
        help="Debian *-music packages of free games",
        description="Known packages: " + ", ".join(f"{x.name} ({x.download_mb:.0f} MB)" for x in DEBIAN_MUSIC_PACKAGES),
    )
    d.add_argument("--out", type=Path, required=True, help="folder for the .deb cache, the audio and manifest.jsonl")
    d.add_argument(
        "--packages",
        default=None,
        help="comma-separated package names (default: all known soundtrack packages, about 590 MB)",
    )
    d.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Gather, then print the manifest path, hours of audio, and per-package counts and licences."""
    packages = [x.strip() for x in args.packages.split(",") if x.strip()] if args.packages else None
    report = gather_debian_music(args.out, packages)
    for p in report.packages:
        state = "downloaded" if p.downloaded else "cached"
        print(f"{p.package} {p.version}: {p.files} files, {p.seconds / 3600:.2f} h ({state}); licence: {p.licence}")
        for rel, reason in p.skipped:
            print(f"  skipped {rel}: {reason}")
    n = sum(p.files for p in report.packages)
    print(f"wrote {n} tracks ({report.hours:.2f} h of audio) to {report.manifest}")
    return 0
