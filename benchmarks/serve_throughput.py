"""``musicsearch serve`` throughput with distinct text queries: searches/s, p50 and p99 latency at each
``--clients`` count, for several ways of serving, all in one run. Prints a table.

Each way is the real server (``python -m musicsearch serve`` in its own process, on a free loopback port, limits
and keep-alive/header timeouts raised so that no request is refused or cut); the load is ``N`` asyncio clients
(an httpx client of its own each, one keep-alive connection) in this process, each sending its next query as
soon as the previous answer arrives, for ``--seconds`` per way and client count, split into ``--rounds`` turns
in which the ways alternate (so that load drifts hit all alike; all servers are started first and wait while
another way is loaded). Every query text is new to the server (a counter runs across client counts), so the
text cache never answers: what is measured is text encoding + vector search + metadata + HTTP. A way's first
``--warmup`` queries are not counted.

Ways (``--ways``, comma-separated):

* ``pool``: this tree's default: one text session per core, 1 intra-op thread each, encoding off the searcher's
  lock; ``pool-f32`` / ``pool-int8``: the same with the float32 / int8 text tower (``MUSICSEARCH_TEXT_INT8``);
* ``one``: this tree with ``--text-sessions 1 --text-threads 0`` (one session using every core, one query at a
  time: the old text path);
* ``before``: ``musicsearch serve`` of the commit ``--before`` (``git archive`` of its ``src/``), as it was;
  ``before-torch``: the same on the torch text tower (the issue's "44 searches/s" was measured on torch);
* ``torch``: this tree on the torch text tower (``MUSICSEARCH_ONNX=0``; one model behind a lock).

The store: ``--store PATH`` or a demo-size one made here (``--tracks`` seeded 4 s clips indexed with the shipped
``default`` model, as ``benchmarks/query_cli.py`` makes it; kept in ``--keep DIR`` if given, and reused from it).
``--model`` indexes it with another model: with ``--before``, give a checkpoint file both trees can load (the
``default`` of an older commit is another model, and its server refuses a store of today's ``default``), e.g.
``--model src/musicsearch/assets/models/adapted.safetensors`` (the default of 044db8e; the text tower, which is
all a text search runs, is the same MiniLM as today's ``default``).

Usage:
    nice -n 5 .venv/bin/python benchmarks/serve_throughput.py --clients 4,200 --seconds 15 \\
        --ways before,one,pool --before 044db8e
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from query_cli import make_store  # the demo store, made the same way

ADJ = ["calm", "energetic", "sad", "dreamy", "dark", "happy", "slow", "fast", "epic", "gentle", "noisy", "warm"]
SOUND = ["piano", "guitar", "strings", "synth", "drums", "choir", "flute", "bass", "organ", "brass", "bells"]
STYLE = ["ballad", "techno", "jazz", "ambient", "rock", "folk", "film score", "lullaby", "march", "waltz"]


def distinct_queries() -> itertools.count[int]:
    """A counter; :func:`query_text` turns each value into a query text no earlier value gave."""
    return itertools.count()


def query_text(i: int) -> str:
    """The ``i``-th distinct query: ``"<adj> <sound> <style>"``, with a number once the combinations run out."""
    n = len(ADJ) * len(SOUND) * len(STYLE)
    a, rest = divmod(i % n, len(SOUND) * len(STYLE))
    s, t = divmod(rest, len(STYLE))
    text = f"{ADJ[a]} {SOUND[s]} {STYLE[t]}"
    return text if i < n else f"{text} {i // n}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(store: Path, extra: list[str], env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``musicsearch serve`` and wait until ``/api/health`` answers; returns (process, base URL)."""
    port = free_port()
    argv = [sys.executable, "-m", "musicsearch", "serve", "--store", str(store), "--port", str(port)]
    argv += ["--max-connections", "1000", "--max-queued", "1000", "--queue-timeout", "600"]
    argv += ["--keep-alive", "120", "--header-timeout", "120", *extra]  # a starved client may be slow to send
    out = log.open("wb")
    proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}); its log: {log}\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/api/health", timeout=5).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"the server did not answer in 300 s; its log: {log}")


async def load(base: str, clients: int, seconds: float, counter: itertools.count[int], k: int) -> dict[str, Any]:
    """``clients`` concurrent clients for ``seconds``: wall seconds, latencies of the answered searches (ms) and
    the count of errors."""
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async def one() -> None:
        # a client of its own per simulated user: one shared pool of N connections costs the load generator
        # O(N) work per request (httpcore scans its connections), CPU the server then lacks on a small machine
        nonlocal errors
        async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as client:
            while time.monotonic() < stop:
                q = query_text(next(counter))
                t0 = time.perf_counter()
                try:
                    r = await client.get("/api/search", params={"q": q, "k": k})
                except httpx.TransportError:  # counted; the client reconnects
                    errors += 1
                    continue
                if r.status_code == 200:
                    latencies.append((time.perf_counter() - t0) * 1e3)
                else:
                    errors += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(clients)))
    wall = time.perf_counter() - t0
    return {"wall": wall, "latencies": latencies, "errors": errors}


def merge(parts: list[dict[str, Any]]) -> dict[str, float]:
    """One way's rounds at one client count -> searches/s (all searches over all load time), p50/p99 ms, counts."""
    lat = np.array([x for p in parts for x in p["latencies"]] or [np.nan])
    wall = sum(p["wall"] for p in parts)
    n = sum(len(p["latencies"]) for p in parts)
    return {
        "per_s": n / wall,
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
        "n": n,
        "errors": sum(p["errors"] for p in parts),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, help="an existing store (default: make a demo-size one)")
    ap.add_argument("--tracks", type=int, default=208, help="clips of the demo-size store")
    ap.add_argument("--model", default="default", help="the model the demo store is indexed with (name or file)")
    ap.add_argument("--keep", type=Path, help="make the demo store here, or reuse the one made there before")
    ap.add_argument("--clients", default="4,200", help="comma-separated concurrent client counts")
    ap.add_argument("--seconds", type=float, default=15.0, help="load time per way and client count, all rounds")
    ap.add_argument("--rounds", type=int, default=3, help="the ways take turns this many times (load drifts)")
    ap.add_argument("--warmup", type=int, default=20, help="queries sent before each way is timed")
    ap.add_argument("--ways", default="one,pool", help="comma-separated: pool, one, before, torch")
    ap.add_argument("--before", help="the commit the `before` way serves")
    ap.add_argument("--text-sessions", type=int, default=0, help="the pool way's sessions (0: serve's default)")
    ap.add_argument("-k", type=int, default=10, help="results per search")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="serve_throughput."))
    if args.store:
        store = args.store
    elif args.keep and (args.keep / "store" / "store.json").exists():
        store = args.keep / "store"
    else:
        model = str(Path(args.model).resolve()) if Path(args.model).is_file() else args.model
        store = make_store(args.keep or tmp / "demo", args.tracks, model)
    from musicsearch.index.store import read_settings
    from musicsearch.search.textenc import open_embedder

    source = read_settings(store).model_source
    open_embedder(source, onnx=True, text_int8=True)  # the exports, made once before any way is timed
    open_embedder(source, onnx=True, text_int8=False)
    env = dict(os.environ)
    pool = ["--text-sessions", str(args.text_sessions)] if args.text_sessions else []
    ways: dict[str, tuple[list[str], dict[str, str]]] = {
        "pool": (pool, env),
        "pool-f32": (pool, {**env, "MUSICSEARCH_TEXT_INT8": "0"}),
        "pool-int8": (pool, {**env, "MUSICSEARCH_TEXT_INT8": "1"}),
        "one": (["--text-sessions", "1", "--text-threads", "0"], env),
        "torch": ([], {**env, "MUSICSEARCH_ONNX": "0"}),
    }
    if args.before:
        old = tmp / "before"
        old.mkdir()
        archive = subprocess.run(["git", "archive", args.before, "src"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        ways["before"] = ([], {**env, "PYTHONPATH": str(old / "src")})
        ways["before-torch"] = ([], {**env, "PYTHONPATH": str(old / "src"), "MUSICSEARCH_ONNX": "0"})
    chosen = [w.strip() for w in args.ways.split(",") if w.strip()]
    for w in chosen:
        if w not in ways:
            known = "pool, pool-f32, pool-int8, one, torch; before and before-torch with --before"
            raise SystemExit(f"unknown way {w!r} ({known})")
    counts = [int(c) for c in args.clients.split(",")]
    servers: dict[str, tuple[subprocess.Popen[bytes], str, itertools.count[int]]] = {}
    results: dict[tuple[str, int], list[dict[str, float]]] = {(w, n): [] for w in chosen for n in counts}
    try:
        for w in chosen:  # all started first: idle ones wait, and the ways take turns within each round
            extra, e = ways[w]
            proc, base = start_server(store, extra, e, tmp / f"server-{w}.log")
            counter = distinct_queries()
            servers[w] = (proc, base, counter)
            with httpx.Client(base_url=base, timeout=600) as c:
                for _ in range(args.warmup):
                    c.get("/api/search", params={"q": query_text(next(counter)), "k": args.k}).raise_for_status()
        for rnd in range(args.rounds):
            for n in counts:
                for w in chosen:
                    _, base, counter = servers[w]
                    r = asyncio.run(load(base, n, args.seconds / args.rounds, counter, args.k))
                    results[w, n].append(r)
                    print(f"[round {rnd + 1}] {w}, {n} clients: {r}", file=sys.stderr, flush=True)
    finally:
        for proc, _, _ in servers.values():
            proc.terminate()
            proc.wait(30)
    rows = [(w, n, merge(results[w, n])) for w in chosen for n in counts]
    name = {
        "pool": "pool (now)",
        "pool-f32": "pool, float32 text",
        "pool-int8": "pool, int8 text",
        "one": "1 session, all-core threads",
        "torch": "torch (MUSICSEARCH_ONNX=0)",
    }
    name["before"] = f"before ({args.before})"
    name["before-torch"] = f"before ({args.before}), torch text tower"
    load_avg = os.getloadavg()
    print(
        f"\nstore: {store} ; distinct queries, k={args.k}, {args.seconds:g} s per row in {args.rounds} turns ; "
        f"{os.cpu_count()} CPUs ; "
        f"load average {load_avg[0]:.1f} {load_avg[1]:.1f} {load_avg[2]:.1f}\n"
    )
    print("| way | clients | searches/s | p50 ms | p99 ms | searches | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for w, n, r in rows:
        print(
            f"| {name[w]} | {n} | {r['per_s']:.1f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['n']:.0f} "
            f"| {r['errors']:.0f} |"
        )


if __name__ == "__main__":
    main()
