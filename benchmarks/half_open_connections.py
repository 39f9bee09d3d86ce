"""Hold N half-open connections (a request line and one header, never finished) against a running server on
127.0.0.1 and probe ``/api/health`` once a second meanwhile. Prints how many connections the server closed and
what each probe got.

    (ulimit -n 1024; musicsearch serve --store STORE --port 8000 2> serve.log) &
    python benchmarks/half_open_connections.py --port 8000 --connections 1100 --seconds 25
    wc -c serve.log
"""

from __future__ import annotations

import argparse
import socket
import time

import httpx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--connections", type=int, default=1100)
    ap.add_argument("--seconds", type=float, default=25.0)
    args = ap.parse_args()
    health = f"http://127.0.0.1:{args.port}/api/health"
    deadline = time.monotonic() + 120
    while True:  # the server is up
        try:
            if httpx.get(health, timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"nothing answers {health}")
        time.sleep(0.5)
    socks, refused = [], 0
    for _ in range(args.connections):
        try:
            s = socket.create_connection(("127.0.0.1", args.port), timeout=5)
            s.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            socks.append(s)
        except OSError:
            refused += 1
    t0 = time.monotonic()
    probes = []
    while time.monotonic() - t0 < args.seconds:
        t = time.perf_counter()
        try:
            got: object = httpx.get(health, timeout=5).status_code
        except httpx.HTTPError as exc:
            got = type(exc).__name__
        probes.append(f"{time.monotonic() - t0:.0f}s:{got}/{(time.perf_counter() - t) * 1000:.0f}ms")
        time.sleep(1)
    open_now = 0
    for s in socks:
        s.setblocking(False)
        try:
            open_now += s.recv(1) != b""
        except BlockingIOError:
            open_now += 1
        except OSError:
            pass
        s.close()
    print(f"opened {len(socks)}, refused {refused}; still open after {args.seconds:g} s: {open_now}")
    print("probes (time: status/latency):", " ".join(probes))


if __name__ == "__main__":
    main()
