"""``musicsearch demo``: make a demo collection offline, index it with the default model, run example queries,
then serve the web page (``--no-serve`` stops after the queries, for CI)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    """Register the ``demo`` subcommand."""
    p = sub.add_parser(
        "demo",
        help="build, index and search a demo collection, then serve the web page",
        description="Build a demo collection (procedural clips + the shipped real recordings), index it with the "
        "default model, print example queries, and serve the web page.",
    )
    p.add_argument("--dir", default=".cache/demo", help="where the collection and its store go (reused)")
    p.add_argument("--n", type=int, default=200, help="procedural clips in the collection")
    p.add_argument(
        "--model",
        default=None,
        help="model name or path (default: the store's own model when --dir holds one, else the shipped default)",
    )
    p.add_argument("-k", type=int, default=5, help="results per example query")
    p.add_argument("--no-serve", action="store_true", help="run the example queries and exit")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=None, help="rendering / decoding processes")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build, index, query, serve."""
    from tqdm import tqdm

    from musicsearch.index.indexer import index_collection
    from musicsearch.index.store import store_model
    from musicsearch.search.api import Searcher, prepare_store
    from musicsearch.search.demo import DEMO_QUERIES, build_demo_collection

    root = Path(args.dir)
    print(f"1/4 making the demo collection in {root} ({args.n} procedural clips + 8 real recordings)")
    with tqdm(total=args.n, desc="synth", unit="clip") as bar:
        manifest = build_demo_collection(root, n=args.n, workers=args.workers, progress=bar.update)
    store = root / "store"
    model = store_model(store, args.model)  # the one place that picks a store's model, as `musicsearch index`
    print(f"2/4 indexing it with model {model!r} into {store}")
    report = index_collection(manifest, store, model=model, workers=args.workers, prune=True, progress=True)
    print(f"    {report.embedded} embedded, {len(report.failed)} failed, {report.tracks_per_minute:.0f} tracks/min")
    prepare_store(store)
    print("3/4 example queries (relevance is calibrated: below 0.5 means no good match)")
    with Searcher.open(store) as searcher:
        for q in DEMO_QUERIES:
            label = " + ".join(x for x in (f'"{q.query}"' if q.query else "", f"like {q.like}" if q.like else "") if x)
            print(f"\n  [{q.kind}] {label}")
            response = searcher.search(q.query, q.like, args.k, None)
            for r in response.results:
                tags = ", ".join(r.tags[:6]) or "-"
                print(
                    f"    {r.rank:>2}. rel {r.relevance:4.2f}  cos {r.score:+.3f}  {r.track_id:<48} "
                    f"@{r.segment_start:5.1f}s  {tags}"
                )
    if args.no_serve:
        print("\n4/4 skipped the web page (--no-serve)")
        return 0
    from musicsearch.search.service import build_server, create_app, default_allowed_hosts

    print(f"\n4/4 serving the web page at http://{args.host}:{args.port}/  (Ctrl-C to stop)")
    sys.stdout.flush()
    app = create_app(store, allowed_hosts=default_allowed_hosts(args.host))
    try:
        build_server(app, host=args.host, port=args.port).run()  # serve's limits and timeouts
    finally:
        app.state.searcher.close()
    return 0
