"""``musicsearch synth``: make a labelled corpus of procedurally composed clips rendered with FluidSynth."""

from __future__ import annotations

import argparse
import os

from tqdm import tqdm


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``musicsearch synth``."""
    p = subparsers.add_parser(
        "synth",
        help="make a labelled synthetic music corpus (procedural MIDI rendered with FluidSynth)",
        description="Compose, render and tag N clips into DIR: audio/*.flac (16 kHz), manifest.jsonl, splits.json, "
        "stats.json and corpus.json. Deterministic for a seed; re-running completes an interrupted corpus.",
    )
    p.add_argument("--out", required=True, help="corpus folder (created if missing)")
    p.add_argument("--n", type=int, default=100, help="number of clips (default 100)")
    p.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    p.add_argument("--seconds", type=float, default=10.0, help="clip length in seconds (default 10)")
    p.add_argument(
        "--workers", type=int, default=None, help=f"render processes (default: CPU count, {os.cpu_count()} here)"
    )
    p.add_argument("--soundfont", default=None, help="General MIDI .sf2 (default: FluidR3_GM in /usr/share/sounds/sf2)")
    p.add_argument(
        "--figure",
        "--stats-figure",
        dest="figure",
        default=None,
        metavar="PNG",
        help="also plot the tag frequency distribution to this PNG",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Make the corpus and print a one-line summary."""
    from musicsearch.data.synth.corpus import make_corpus

    with tqdm(total=args.n, unit="clip", desc="synth") as bar:
        summary = make_corpus(
            args.out,
            args.n,
            seed=args.seed,
            seconds=args.seconds,
            workers=args.workers,
            soundfont=args.soundfont,
            progress=bar.update,
        )
    per_clip = summary.clip_seconds / summary.made if summary.made else 0.0
    print(
        f"{summary.out}: {summary.n_clips} clips ({summary.made} made, {summary.skipped} kept) in "
        f"{summary.seconds:.1f} s, {summary.clips_per_second:.2f} clips/s, {per_clip:.3f} s of worker time a clip; "
        f"manifest {summary.out / 'manifest.jsonl'}"
    )
    if args.figure:
        from musicsearch.data.synth.figures import plot_tag_frequencies

        path = plot_tag_frequencies(summary.out / "stats.json", args.figure)
        print(f"tag frequency figure: {path}")
    return 0
