"""``musicsearch query "TEXT" --store PATH``: search an indexed collection from the command line."""

from __future__ import annotations

import argparse
import json
from typing import Any

from musicsearch.errors import MusicSearchError
from musicsearch.search.api import MAX_K, NO_MATCH_THRESHOLD, Searcher
from musicsearch.search.query import parse_filters, parse_query


def add_parser(subparsers: Any) -> None:
    """Register ``query``."""
    p = subparsers.add_parser(
        "query",
        help="search a store by text, by example, or both",
        description=(
            "Rank the store's tracks for a text query (tags or a sentence; negative terms such as 'no vocals' or "
            "-drums are subtracted, not embedded), an example (--like: an audio file or an indexed track id), or "
            "both. Results show the calibrated relevance, the raw cosine score and where the best-matching "
            "segment starts."
        ),
    )
    p.add_argument("text", nargs="?", default=None, help="what to look for, e.g. 'calm piano, no vocals'")
    p.add_argument("--store", required=True, help="store directory built by `musicsearch index` (~ allowed)")
    p.add_argument("--model", default=None, help="model (default: the store's own; another one is refused)")
    p.add_argument("-k", type=int, default=10, help=f"number of results (1 to {MAX_K}; default: 10)")
    p.add_argument("--like", default=None, help="example: an audio file, or the track id of an indexed track")
    p.add_argument(
        "--filter",
        nargs="+",
        action="extend",
        default=[],
        metavar="COND",
        help="metadata conditions: artist=NAME album=NAME year>=1990 duration<=300 folder=PATH tag=TAG tag!=TAG",
    )
    p.add_argument("--text-weight", type=float, default=0.5, help="text share when TEXT and --like (default 0.5)")
    p.add_argument("--json", action="store_true", help="print the response as JSON")
    p.set_defaults(func=run)


def _clock(seconds: float) -> str:
    s = max(0, round(seconds))
    return f"{s // 60}:{s % 60:02d}"


def run(args: argparse.Namespace) -> int:
    """Search and print a table (or JSON).

    The text, ``-k`` and ``--filter`` are checked before the store and its model are opened, so bad input (an
    empty or huge query, undecodable bytes, a bad filter) fails at once with one line. Paths (``--store``,
    ``--like``, ``--model``) may start with ``~``.
    """
    if args.text is None and args.like is None:
        raise MusicSearchError("give a text query, --like FILE_OR_TRACK_ID, or both")
    if args.text is not None:
        parse_query(args.text)
    parse_filters(args.filter or None)
    if not 1 <= args.k <= MAX_K:
        raise MusicSearchError(f"-k {args.k}: give a number of results from 1 to {MAX_K}")
    with Searcher.open(args.store, model=args.model) as searcher:
        resp = searcher.search(args.text, args.like, args.k, args.filter or None, text_weight=args.text_weight)
    if args.json:
        print(json.dumps(resp.to_json(), indent=2, ensure_ascii=False))
        return 0
    if resp.query is not None:
        line = f"query: {resp.query.positive!r}"
        if resp.query.negatives:
            line += f" without {', '.join(repr(n) for n in resp.query.negatives)}"
        print(line)
    if resp.like:
        print(f"like: {resp.like}")
    if not resp.results:
        print("no tracks match these filters")
        return 0
    print(f"{'#':>3}  {'relevance':>9}  {'score':>7}  {'segment':>7}  track")
    for r in resp.results:
        name = " - ".join(x for x in (r.artist, r.title or r.track_id) if x)
        tags = f"  [{', '.join(r.tags)}]" if r.tags else ""
        print(f"{r.rank:>3}  {r.relevance:>9.3f}  {r.score:>7.3f}  {_clock(r.segment_start):>7}  {name}{tags}")
    if resp.no_good_match:
        print(f"no good match: the best relevance is below {NO_MATCH_THRESHOLD}")
    return 0
