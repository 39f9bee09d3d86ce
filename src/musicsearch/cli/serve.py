"""``musicsearch serve --store PATH``: the HTTP API and web page of a store."""

from __future__ import annotations

import argparse
from typing import Any

from musicsearch.errors import ConfigError


def add_parser(subparsers: Any) -> None:
    """Register ``serve``."""
    p = subparsers.add_parser(
        "serve",
        help="serve a store's search API and web page",
        description=(
            "Start an HTTP server (FastAPI + uvicorn) with the search API (/api/search, /api/tracks/{id}, "
            "/api/audio/{id} with range requests, /api/map, /api/health; schema at /docs) and the web page at /."
        ),
    )
    p.add_argument("--store", required=True, help="store directory built by `musicsearch index`")
    p.add_argument("--model", default=None, help="model (default: the store's own)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch and FAISS threads per query (default 1: one query at a time is fastest without spinning "
        "thread pools; 0 leaves the libraries' defaults)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Open the store, then serve until interrupted."""
    try:
        import uvicorn
    except ImportError as exc:
        raise ConfigError("serving needs uvicorn and fastapi: pip install 'musicsearch[serve]'") from exc
    from musicsearch.search.service import create_app

    if args.threads > 0:
        limit_threads(args.threads)
    app = create_app(args.store, model=args.model)
    print(f"serving {args.store} on http://{args.host}:{args.port}/ (Ctrl-C to stop)")
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        app.state.searcher.close()
    return 0


def limit_threads(n: int) -> None:
    """Use ``n`` threads in torch and FAISS (their OpenMP pools spin between queries otherwise)."""
    import torch

    torch.set_num_threads(n)
    try:
        import faiss
    except ImportError:
        return
    faiss.omp_set_num_threads(n)
