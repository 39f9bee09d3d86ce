"""``musicsearch tag FILE``: the top tags of a recording from a pretrained musicnn tagger."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from musicsearch.errors import ConfigError

#: ``musicsearch.teachers.musicnn.MODEL_NAMES``, repeated so that parsing arguments imports no torch
#: (tests/cli/test_lazy_imports.py checks the two agree).
MODEL_NAMES: tuple[str, ...] = ("MTT_musicnn", "MSD_musicnn", "MTT_vgg", "MSD_vgg")


def add_parser(subparsers: Any) -> None:
    """Register ``tag``."""
    p = subparsers.add_parser(
        "tag",
        help="top tags of audio files from a pretrained musicnn tagger",
        description=(
            "Tag each 3 s patch of FILE with a pretrained musicnn model (Pons and Serra, 2019; loaded from the "
            "`musicnn` package's TensorFlow checkpoints without TensorFlow) and print the tags with the highest "
            "probability averaged over patches. MTT models use MagnaTagATune's 50 tags (instruments, genres, "
            "moods, vocals); MSD models the Million Song Dataset's 50 Last.fm tags (genres, eras, moods)."
        ),
    )
    p.add_argument("files", type=Path, nargs="+", metavar="FILE", help="audio file(s) to tag")
    p.add_argument("--model", default="MTT_musicnn", choices=MODEL_NAMES, help="tagger (default: %(default)s)")
    p.add_argument("--top", type=int, default=5, help="tags to print per file (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object per file instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the tagger once, tag every file, print ``tag<TAB>score`` lines (a header per file when several)."""
    from musicsearch.teachers.tagger import MusicnnTagger

    if args.top < 1:
        raise ConfigError(f"--top must be at least 1, got {args.top}")
    tagger = MusicnnTagger.load(args.model)
    many = len(args.files) > 1
    for path in tqdm(args.files, desc="tagging", unit="file", disable=not many, file=sys.stderr):
        out = tagger.analyze_file(path)
        top = out.top(args.top)
        if args.json:
            record = {
                "file": str(path),
                "model": args.model,
                "patches": int(out.probs.shape[0]),
                "tags": [{"tag": t, "score": round(s, 4)} for t, s in top],
            }
            print(json.dumps(record, ensure_ascii=False))
            continue
        if many:
            print(f"# {path} ({args.model}, {out.probs.shape[0]} patches)")
        for t, s in top:
            print(f"{t}\t{s:.3f}")
    return 0
