"""``/api/health`` latency while many clients search: a real server in its own process on a loopback port,
``--clients`` threads searching in a loop, one prober calling ``/api/health`` every 50 ms. Prints one table row.

    python benchmarks/health_under_load.py --clients 64 --seconds 15

A tiny store (debug model, ``--tracks`` sine tones) is built in a temporary folder; the numbers measure the
server's scheduling (does health wait behind searches?), not search speed on a real collection.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf
import torch

from musicsearch.index.indexer import index_collection
from musicsearch.models.checkpoint import save_model
from musicsearch.models.registry import build_model, model_config
from musicsearch.search.service import build_server, create_app

SR = 16000


def _serve(store: Path, port: int, search_threads: int, clients: int, ready: Any) -> None:
    from musicsearch.cli.serve import limit_threads

    limit_threads(1)  # as `musicsearch serve` does by default
    app = create_app(
        store,
        search_threads=search_threads,
        max_queued=4 * clients,
        queue_timeout=600,
        thread_setup=lambda: limit_threads(1),  # in each worker thread too, as `musicsearch serve` does
    )
    server = build_server(app, host="127.0.0.1", port=port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    ready.set()
    thread.join()


def _load(base: str, clients: int, seconds: float, done: Any) -> None:
    """``clients`` threads searching until ``seconds`` have passed; puts ``(searches, errors)`` on ``done``."""
    stop = time.monotonic() + seconds
    counts = [0, 0]
    lock = threading.Lock()

    def client(i: int) -> None:
        with httpx.Client(timeout=120) as c:
            while time.monotonic() < stop:
                r = c.get(f"{base}/api/search", params={"q": f"calm tone {i}", "k": 5})
                with lock:
                    counts[r.status_code != 200] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.put((counts[0], counts[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--tracks", type=int, default=20)
    ap.add_argument("--search-threads", type=int, default=2)
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="health-load-"))
    torch.manual_seed(0)
    save_model(build_model(model_config("debug", text_encoder="tiny-bert"), pretrained_text=False), root / "m")
    music = root / "music"
    music.mkdir()
    rng = np.random.default_rng(0)
    for i in range(args.tracks):
        t = np.arange(3 * SR) / SR
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t)
        sf.write(music / f"t{i}.wav", wave.astype(np.float32), SR)
    index_collection(music, root / "store", model=root / "m", workers=0)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_serve, args=(root / "store", port, args.search_threads, args.clients, ready))
    proc.start()
    assert ready.wait(120), "the server did not start"
    base = f"http://127.0.0.1:{port}"
    done = ctx.Queue()
    load = ctx.Process(target=_load, args=(base, args.clients, args.seconds, done))  # its own GIL
    load.start()
    stop = time.monotonic() + args.seconds
    health_ms, health_errors = [], 0
    with httpx.Client(timeout=120) as c:
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            r = c.get(f"{base}/api/health")
            health_ms.append((time.perf_counter() - t0) * 1000)
            health_errors += r.status_code != 200
            time.sleep(0.05)
    searches, search_errors = done.get(timeout=300)
    load.join(60)
    proc.terminate()
    proc.join(15)
    h = np.array(health_ms)
    print("| clients | search threads | seconds | searches/s | errors | health calls | health p50 | p99 | max (ms) |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.clients} | {args.search_threads} | {args.seconds:g} | {searches / args.seconds:.1f} | "
        f"{search_errors + health_errors} | {h.size} | "
        f"{np.percentile(h, 50):.1f} | {np.percentile(h, 99):.1f} | {h.max():.1f} |"
    )


if __name__ == "__main__":
    main()
