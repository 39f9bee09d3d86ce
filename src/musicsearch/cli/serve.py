"""``musicsearch serve --store PATH``: the HTTP API and web page of a store."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from musicsearch.errors import ConfigError

log = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> None:
    """Register ``serve``."""
    p = subparsers.add_parser(
        "serve",
        help="serve a store's search API and web page",
        description=(
            "Start an HTTP server (FastAPI + uvicorn) with the search API (/api/search, /api/tracks/{id}, "
            "/api/audio/{id} with range requests, /api/map, /api/health; schema at /docs) and the web page at /. "
            "It listens on this machine only (127.0.0.1) by default. To reach it from elsewhere, put a reverse "
            "proxy with TLS in front and set an API key; see docs/security.md."
        ),
    )
    p.add_argument("--store", required=True, help="store directory built by `musicsearch index`")
    p.add_argument("--model", default=None, help="model (default: the store's own)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s, this machine only). WARNING: any other address, such "
        "as all interfaces, lets everyone who reaches the port search and download the collection: set "
        "--api-key and put a TLS reverse proxy in front (docs/security.md)",
    )
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also accept requests whose Host header is NAME (a proxy's public name, a LAN address; repeatable; "
        "'*.example.org' for subdomains). By default only the bind address, localhost, 127.0.0.1 and ::1: "
        "this blocks DNS rebinding",
    )
    p.add_argument(
        "--api-key",
        default=None,
        help="require this key on the API (header 'Authorization: Bearer KEY' or 'X-API-Key: KEY'). Prefer the "
        "environment variable MUSICSEARCH_API_KEY: a command-line argument is visible to other local users",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch and FAISS threads per query (default 1: a query is fastest without spinning thread pools; "
        "0 leaves the libraries' defaults)",
    )
    p.add_argument(
        "--text-sessions",
        type=int,
        default=0,
        help="ONNX Runtime sessions of the text tower, used in parallel by concurrent searches (default 0: one "
        "per core); the torch fallback runs one model, one query at a time",
    )
    p.add_argument(
        "--text-threads",
        type=int,
        default=1,
        help="intra-op threads of each text session (default: %(default)s; 0: ONNX Runtime's default, one per "
        "core, right only with --text-sessions 1)",
    )
    p.add_argument(
        "--search-threads",
        type=int,
        default=0,
        help="worker threads for searches and file checks, off the event loop (default 0: text sessions + 1)",
    )
    p.add_argument(
        "--max-queued",
        type=int,
        default=32,
        help="requests that may wait for a worker thread; more get 503 (default: %(default)s)",
    )
    p.add_argument(
        "--queue-timeout",
        type=float,
        default=30.0,
        help="seconds a request may wait for a worker thread; then 503 (default: %(default)s)",
    )
    p.add_argument(
        "--text-cache",
        type=int,
        default=1024,
        help="query texts whose embeddings are kept in memory (LRU; 0: none; default: %(default)s)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=128,
        help="open connections beyond which new requests get 503 (default: %(default)s)",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds a connection has to send a request's headers before it is closed (default: %(default)s)",
    )
    p.add_argument(
        "--keep-alive",
        type=int,
        default=5,
        help="seconds an idle keep-alive connection stays open (default: %(default)s)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Open the store, then serve until interrupted."""
    try:
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ConfigError("serving needs uvicorn and fastapi: pip install 'musicsearch[serve]'") from exc
    from musicsearch.search.service import (
        API_KEY_ENV,
        ServerLimits,
        build_server,
        create_app,
        default_allowed_hosts,
    )

    limits = ServerLimits(
        max_connections=args.max_connections,
        header_timeout=args.header_timeout,
        keep_alive=args.keep_alive,
    )
    limits.validate()
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    warning = exposure_warning(args.host, args.port, api_key)
    if warning:
        log.warning("%s", warning)
    hosts = default_allowed_hosts(args.host) + list(args.allowed_host)
    app = create_app(
        args.store,
        model=args.model,
        allowed_hosts=hosts,
        api_key=api_key,
        search_threads=args.search_threads or None,
        max_queued=args.max_queued,
        queue_timeout=args.queue_timeout,
        text_cache_size=args.text_cache,
        text_sessions=args.text_sessions or None,
        text_threads=args.text_threads,
        thread_setup=(lambda: limit_threads(args.threads)) if args.threads > 0 else None,
    )
    if args.threads > 0:  # after the model is open: torch is then loaded only if it is the model's runtime
        limit_threads(args.threads)
    server = build_server(app, host=args.host, port=args.port, limits=limits)
    print(f"serving {args.store} on http://{args.host}:{args.port}/ (Ctrl-C to stop)")
    try:
        server.run()
    finally:
        app.state.searcher.close()
    return 0


def exposure_warning(host: str, port: int, api_key: str | None) -> str | None:
    """The warning to log when ``serve`` listens beyond this machine without an API key, else ``None``."""
    from musicsearch.search.service import API_KEY_ENV, is_loopback

    if is_loopback(host) or api_key is not None:
        return None
    where = "all interfaces" if host.strip("[] ") in ("0.0.0.0", "::", "") else host
    return (
        f"serving on {where} without an API key: anyone who can reach port {port} can search the collection and "
        f"download its audio; set {API_KEY_ENV} and put a TLS reverse proxy in front (docs/security.md)"
    )


def limit_threads(n: int) -> None:
    """Use ``n`` threads in torch (if it is loaded: the ONNX search path never imports it) and FAISS (their
    OpenMP pools spin between queries otherwise), in the calling thread: FAISS's OpenMP setting is per thread, so
    the server calls this in each worker thread too."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    try:
        import faiss
    except ImportError:
        return
    faiss.omp_set_num_threads(n)
