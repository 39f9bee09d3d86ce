"""The HTTP service facing a hostile network: Host allow-list, API key, health under queued searches, JSON 4xx for
huge ids and bad ranges, audio only while the file is the one indexed, connection limits and bounded logs.

Traffic goes only to 127.0.0.1 (in-process ``TestClient``, or a real uvicorn on a free loopback port)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient

from musicsearch.errors import MusicSearchError
from musicsearch.index.indexer import index_collection
from musicsearch.models.checkpoint import save_model
from musicsearch.models.registry import build_model, model_config
from musicsearch.search.service import (
    LogRateLimit,
    ServerLimits,
    build_server,
    create_app,
    default_allowed_hosts,
    is_loopback,
)

SR = 16000
LOCAL = "http://127.0.0.1"


def _tone(path: Path, freq: float, seconds: float = 2.0) -> None:
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR, subtype="FLOAT")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    save_model(build_model(model_config("debug", text_encoder="tiny-bert"), pretrained_text=False), root / "m.st")
    return root / "m.st"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Path:
    root = tmp_path_factory.mktemp("sec")
    music = root / "music"
    music.mkdir()
    for i in range(3):
        _tone(music / f"t{i}.wav", 220 + 110 * i)
    index_collection(music, root / "store", model=model_path, workers=0)
    return root / "store"


@pytest.fixture(scope="module")
def client(store: Path) -> Iterator[TestClient]:
    app = create_app(store)
    with TestClient(app, base_url=LOCAL) as c:
        yield c
    app.state.searcher.close()


def _ids(c: TestClient) -> dict[str, int]:
    return {r["track_id"]: r["id"] for r in c.get("/api/search", params={"q": "x", "k": 10}).json()["results"]}


@contextmanager
def _serving(app: FastAPI, limits: ServerLimits | None = None) -> Iterator[str]:
    """A real uvicorn on a free loopback port, in a thread, for as long as the block runs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = build_server(app, host="127.0.0.1", port=port, limits=limits)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


# -- Host allow-list ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:8000", "localhost", "LOCALHOST:80", "[::1]:8000", "::1"])
def test_default_hosts_are_served(client: TestClient, host: str) -> None:
    assert client.get("/api/health", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.evil.example", "[::2]", ""]
)
def test_other_hosts_are_refused_dns_rebinding(client: TestClient, host: str) -> None:
    """A page on evil.example that re-points its name at 127.0.0.1 still sends ``Host: evil.example``."""
    for url in ("/api/health", "/api/search?q=x", "/", "/api/audio/1"):
        resp = client.get(url, headers={"Host": host})
        assert resp.status_code == 400, (host, url)
        assert "not allowed" in resp.json()["error"] and "--allowed-host" in resp.json()["error"]


def test_allowed_host_option_and_wildcards(store: Path) -> None:
    app = create_app(store, allowed_hosts=[*default_allowed_hosts("127.0.0.1"), "music.example.org", "*.lan"])
    try:
        with TestClient(app, base_url=LOCAL) as c:
            for ok in ("music.example.org", "Music.Example.Org.:443", "box.lan", "a.b.lan:8000", "127.0.0.1"):
                assert c.get("/api/health", headers={"Host": ok}).status_code == 200, ok
            for bad in ("example.org", "lan", "box.lan.evil.example", "xlan"):
                assert c.get("/api/health", headers={"Host": bad}).status_code == 400, bad
    finally:
        app.state.searcher.close()


def test_default_hosts_and_loopback() -> None:
    assert default_allowed_hosts("127.0.0.1") == ["localhost", "127.0.0.1", "::1"]
    assert default_allowed_hosts("0.0.0.0") == ["localhost", "127.0.0.1", "::1"]  # all interfaces: not a name
    assert default_allowed_hosts("192.168.1.5")[0] == "192.168.1.5"
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost", "LocalHost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.org", ""))


# -- API key ----------------------------------------------------------------------------------------------------


def test_api_key(store: Path) -> None:
    key = "k3y-" + "x" * 40
    app = create_app(store, api_key=key)
    try:
        with TestClient(app, base_url=LOCAL) as c:
            for url in ("/api/health", "/api/search?q=x", "/api/tracks/1", "/api/audio/1", "/openapi.json", "/docs"):
                resp = c.get(url)
                assert resp.status_code == 401, url
                assert resp.headers["www-authenticate"] == "Bearer" and "API key" in resp.json()["error"]
            for wrong in ({"X-API-Key": key[:-1]}, {"Authorization": f"Basic {key}"}, {"X-API-Key": key + "x"}):
                assert c.get("/api/health", headers=wrong).status_code == 401, wrong
            for right in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}, {"Cookie": f"musicsearch_key={key}"}):
                assert c.get("/api/health", headers=right).status_code == 200, right
            odd = create_app(store, api_key="a b;c=d%")  # the page stores the cookie URL-encoded
            try:
                with TestClient(odd, base_url=LOCAL) as c2:
                    assert (
                        c2.get("/api/health", headers={"Cookie": "musicsearch_key=a%20b%3Bc%3Dd%25"}).status_code == 200
                    )
                    assert c2.get("/api/health", headers={"X-API-Key": "a b;c=d%"}).status_code == 200
            finally:
                odd.state.searcher.close()
            ids = _ids_with(c, {"X-API-Key": key})
            assert c.get(f"/api/audio/{next(iter(ids.values()))}", cookies={"musicsearch_key": key}).status_code == 200
            for public in ("/", "/static/app.js", "/static/style.css"):  # the page has no data; it asks for the key
                assert c.get(public).status_code == 200
            assert c.get("/api/health", headers={"Host": "evil.example", "X-API-Key": key}).status_code == 400
    finally:
        app.state.searcher.close()
    with pytest.raises(MusicSearchError, match="empty"):
        create_app(store, api_key="  ")


def _ids_with(c: TestClient, headers: dict[str, str]) -> dict[str, int]:
    got = c.get("/api/search", params={"q": "x", "k": 10}, headers=headers).json()["results"]
    return {r["track_id"]: r["id"] for r in got}


def test_serve_help_and_exposure_warning(capsys: pytest.CaptureFixture[str]) -> None:
    from musicsearch.cli.main import main
    from musicsearch.cli.serve import exposure_warning

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default: 127.0.0.1" in text and "WARNING" in text and "--api-key" in text and "--allowed-host" in text
    assert "0.0.0.0 for all" not in text
    assert exposure_warning("127.0.0.1", 8000, None) is None and exposure_warning("localhost", 80, None) is None
    assert exposure_warning("0.0.0.0", 8000, "key") is None
    msg = exposure_warning("0.0.0.0", 8000, None)
    assert msg is not None and "all interfaces without an API key" in msg and "docs/security.md" in msg
    assert "192.168.1.5" in (exposure_warning("192.168.1.5", 8000, None) or "")


# -- errors: JSON 4xx -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "status", "words"),
    [
        (f"/api/tracks/{2**63}", 404, "no track"),
        (f"/api/tracks/{2**64 + 5}", 404, "no track"),
        (f"/api/tracks/{2**63}/similar", 404, "no track"),
        (f"/api/audio/{2**63}", 404, "no track"),
        (f"/api/audio/{2**63 - 1}", 404, "no track"),
        (f"/api/tracks/{'9' * 4000}", 404, "no track"),
        (f"/api/tracks/{'9' * 5000}", 422, "track_id"),
        (f"/api/search?like={2**63}", 400, "no track"),
        (f"/api/search?like={'9' * 5000}", 422, "like"),
        (f"/api/search?q=x&k={'9' * 5000}", 422, "k"),
        ("/api/search?q=x&text_weight=nan", 422, "text_weight"),
    ],
)
def test_huge_and_malformed_get_json_4xx(client: TestClient, url: str, status: int, words: str) -> None:
    resp = client.get(url)
    assert resp.status_code == status, (url, resp.status_code, resp.text[:200])
    assert resp.headers["content-type"] == "application/json"
    assert words in resp.json()["error"].lower()
    assert len(resp.content) < 2000  # a 5,000-digit input is not echoed whole


def test_wrong_method_gets_json_405(client: TestClient) -> None:
    resp = client.post("/api/search", json={"q": "x"})
    assert resp.status_code == 405 and "error" in resp.json() and resp.headers["allow"] == "GET"


@pytest.mark.parametrize(
    "header",
    [
        "bytes=" + "9" * 5000 + "-",
        "bytes=0-" + "9" * 5000,
        "bytes=-" + "9" * 5000,
        "bytes=" + "1" * 4000 + "-",
        "bytes=x-y",
        "bytes=--5",
        "bytes=5",
        "bytes",
        "bytes=,,,",
        "bytes=-0",
        "bytes=9-5",
    ],
)
def test_bad_range_headers_get_json_416(client: TestClient, header: str) -> None:
    tid = next(iter(_ids(client).values()))
    size = len(client.get(f"/api/audio/{tid}").content)
    resp = client.get(f"/api/audio/{tid}", headers={"Range": header})
    assert resp.status_code == 416, (header[:40], resp.status_code)
    assert resp.headers["content-range"] == f"bytes */{size}"
    body = resp.json()
    assert "range not satisfiable" in body["error"] and len(resp.content) < 1000


def test_ranges_starlette_serves_whole(client: TestClient) -> None:
    """Over 100 ranges (Starlette's cap) or another unit: the whole file, 200, as RFC 9110 allows."""
    tid = next(iter(_ids(client).values()))
    data = client.get(f"/api/audio/{tid}").content
    for header in ("bytes=" + ",".join(f"{i}-{i}" for i in range(0, 404, 4)), "seconds=0-5", "=0-5"):
        resp = client.get(f"/api/audio/{tid}", headers={"Range": header})
        assert resp.status_code == 200 and resp.content == data, header[:30]


# -- audio only while the file is the one indexed ----------------------------------------------------------------


def test_audio_verifier_oracle(tmp_path: Path) -> None:
    """The verifier against the plain rule: served iff the bytes hash to the recorded SHA-256."""
    import hashlib

    from musicsearch.search.service import AudioVerifier, FileChangedError

    rng = np.random.default_rng(0)
    f = tmp_path / "x.wav"
    v = AudioVerifier(max_entries=2)
    for i in range(12):  # rewritten in place, the same size each time: only the bytes tell the versions apart
        data = rng.integers(0, 256, 1000, dtype=np.uint8).tobytes()
        f.write_bytes(data)
        good = hashlib.sha256(data).hexdigest()
        recorded = good if i % 3 else hashlib.sha256(data + b"!").hexdigest()
        if recorded == good:
            assert v.check(i, f, f"sha256:{recorded};meta:abc").st_size == len(data)
        else:
            with pytest.raises(FileChangedError):
                v.check(i, f, f"sha256:{recorded};meta:abc")
    assert len(v._ok) == 0  # a file changed in the last 2 s: no verdict kept (timestamps tick coarsely)
    old = time.time_ns() - 10**10
    for i in range(4):
        g = tmp_path / f"settled{i}.wav"
        g.write_bytes(b"x" * (i + 1))
        os.utime(g, ns=(old, old))
    time.sleep(2.1)  # ctime moved with utime: let it settle
    for i in range(4):
        g = tmp_path / f"settled{i}.wav"
        v.check(i, g, f"sha256:{hashlib.sha256(b'x' * (i + 1)).hexdigest()};meta:")
    hashed = v.hashes
    assert len(v._ok) == 2  # kept, and bounded
    v.check(3, tmp_path / "settled3.wav", f"sha256:{hashlib.sha256(b'xxxx').hexdigest()};meta:")
    assert v.hashes == hashed  # the kept verdict served
    with pytest.raises(FileChangedError, match="no SHA-256"):
        v.check(0, f, "md5:abc")


def test_audio_refused_once_the_file_changes(tmp_path: Path, model_path: Path) -> None:
    music = tmp_path / "music"
    music.mkdir()
    for name, freq in (("a.wav", 300), ("b.wav", 500), ("c.wav", 700)):
        _tone(music / name, freq)  # same length and format: the same size
    a, b, c = music / "a.wav", music / "b.wav", music / "c.wav"
    assert a.stat().st_size == b.stat().st_size == c.stat().st_size
    original = a.read_bytes()
    written = time.monotonic()
    index_collection(music, tmp_path / "store", model=model_path, workers=0)
    app = create_app(tmp_path / "store")
    verifier = app.state.audio_verifier
    try:
        with TestClient(app, base_url=LOCAL) as client:
            ids = _ids(client)
            url = f"/api/audio/{ids['a.wav']}"
            time.sleep(max(0.0, 2.2 - (time.monotonic() - written)))  # verdicts are kept for files settled 2 s
            assert client.get(url).content == original
            hashed = verifier.hashes
            assert client.get(url, headers={"Range": "bytes=0-9"}).status_code == 206
            assert verifier.hashes == hashed  # the verdict is kept while the file is untouched

            # a hard link to another file of the same size, with a's modification time: same path, other bytes
            st = a.stat()
            os.unlink(a)
            os.link(b, a)
            os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
            resp = client.get(url)
            assert resp.status_code == 409 and "changed since it was indexed" in resp.json()["error"]
            assert client.head(url).status_code == 409
            assert client.get(f"/api/audio/{ids['b.wav']}").status_code == 200  # b itself is still b (mtime aside)

            # the original bytes back in a new file: served again
            os.unlink(a)
            a.write_bytes(original)
            assert client.get(url).content == original

            # an edit in place of the same size, modification time restored
            st = a.stat()
            with open(a, "r+b") as fh:
                fh.seek(len(original) // 2)
                fh.write(b"\x00" * 64)
            os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
            assert a.stat().st_size == st.st_size and a.stat().st_mtime_ns == st.st_mtime_ns
            resp = client.get(url, headers={"Range": "bytes=0-1"})
            assert resp.status_code == 409 and "re-index" in resp.json()["error"]

            c.write_bytes(c.read_bytes()[:-100])  # shorter
            assert client.get(f"/api/audio/{ids['c.wav']}").status_code == 409
            os.unlink(c)
            assert client.get(f"/api/audio/{ids['c.wav']}").status_code == 404
    finally:
        app.state.searcher.close()


# -- health answers while searches queue ----------------------------------------------------------------------


def _hold_searches(searcher: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Make every search wait inside the searcher until the first event is set; the second is set on entry."""
    release, entered = threading.Event(), threading.Event()
    real_search = searcher.search

    def held_search(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        assert release.wait(60), "the test never released the searches"
        return real_search(*args, **kwargs)

    monkeypatch.setattr(searcher, "search", held_search)
    return release, entered


def test_health_answers_while_searches_queue(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """48 searches held inside the searcher (more than anyio's default 40 threads) and health still answers."""
    app = create_app(store, search_threads=1, max_queued=100)
    searcher = app.state.searcher
    release, entered = _hold_searches(searcher, monkeypatch)
    n = 48
    try:
        with _serving(app) as base, ThreadPoolExecutor(n) as pool:
            futures = [pool.submit(httpx.get, f"{base}/api/search", params={"q": "x"}, timeout=120) for _ in range(n)]
            assert entered.wait(30)
            deadline = time.monotonic() + 30
            while True:  # until every search is in the server (one running, the rest waiting)
                state = httpx.get(f"{base}/api/health", timeout=10).json()["searches"]
                if state["running"] + state["waiting"] == n or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert state == {"running": 1, "waiting": n - 1, "limit": 101}
            times = []
            for _ in range(20):
                t0 = time.perf_counter()
                resp = httpx.get(f"{base}/api/health", timeout=10)
                times.append(time.perf_counter() - t0)
                assert resp.status_code == 200 and resp.json()["tracks"] == 3
            assert max(times) < 2.0 and sorted(times)[10] < 0.5, times  # no search finishes while these run
            assert not any(f.done() for f in futures)
            release.set()
            assert all(f.result().status_code == 200 for f in futures)
    finally:
        release.set()
        searcher.close()


def test_searches_beyond_the_queue_get_503(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(store, search_threads=1, max_queued=2)
    searcher = app.state.searcher
    release, _ = _hold_searches(searcher, monkeypatch)
    try:
        with _serving(app) as base, ThreadPoolExecutor(3) as pool:
            held = [pool.submit(httpx.get, f"{base}/api/search", params={"q": "x"}, timeout=60) for _ in range(3)]
            deadline = time.monotonic() + 30
            while httpx.get(f"{base}/api/health").json()["searches"]["waiting"] < 2:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            resp = httpx.get(f"{base}/api/search", params={"q": "x"}, timeout=10)
            assert resp.status_code == 503 and resp.headers["retry-after"] == "1" and "busy" in resp.json()["error"]
            assert "the limit is 3" in resp.json()["error"]
            release.set()
            assert [f.result().status_code for f in held] == [200, 200, 200]
    finally:
        release.set()
        searcher.close()


def test_a_request_waits_at_most_queue_timeout(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(store, search_threads=1, max_queued=8, queue_timeout=0.5)
    searcher = app.state.searcher
    release, _ = _hold_searches(searcher, monkeypatch)
    try:
        with _serving(app) as base, ThreadPoolExecutor(1) as pool:
            held = pool.submit(httpx.get, f"{base}/api/search", params={"q": "x"}, timeout=60)
            deadline = time.monotonic() + 30
            while httpx.get(f"{base}/api/health").json()["searches"]["running"] < 1:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            t0 = time.perf_counter()
            resp = httpx.get(f"{base}/api/tracks/0", timeout=10)  # a lookup queued behind the held search
            waited = time.perf_counter() - t0
            assert resp.status_code == 503 and "waited 0.5 s" in resp.json()["error"]
            assert 0.45 < waited < 5.0
            release.set()
            assert held.result().status_code == 200  # the running search was not cut short
            assert httpx.get(f"{base}/api/tracks/0", timeout=10).status_code == 200
    finally:
        release.set()
        searcher.close()


# -- the server: connection limits, header timeout, bounded logs ------------------------------------------------


def _closed_by_server(sock: socket.socket, wait: float) -> bool:
    sock.settimeout(wait)
    try:
        return sock.recv(1024) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_half_open_connections_are_closed_and_limited(store: Path) -> None:
    app = create_app(store)
    limits = ServerLimits(max_connections=8, header_timeout=3.0, keep_alive=1)
    socks: list[socket.socket] = []
    try:
        with _serving(app, limits) as base:
            port = int(base.rsplit(":", 1)[1])
            for i in range(8):  # half-open: a request line and part of the headers, never finished
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n" if i % 2 else b"")
                socks.append(s)
            time.sleep(0.2)
            busy = httpx.get(f"{base}/api/health", timeout=10)
            assert busy.status_code == 503  # the connection limit holds while they are open
            t0 = time.monotonic()
            assert all(_closed_by_server(s, 8.0) for s in socks)  # the header timeout closed every one
            assert time.monotonic() - t0 < 8.0
            slow = socket.create_connection(("127.0.0.1", port))  # slowloris: a header byte now and then
            socks.append(slow)
            slow.sendall(b"GET /api/health HTTP/1.1\r\n")
            closed = False
            for _ in range(50):  # 10 s of a byte every 0.2 s, against a 3 s header timeout
                try:
                    slow.sendall(b"X")
                except OSError:
                    closed = True
                    break
                time.sleep(0.2)
            assert closed or _closed_by_server(slow, 1.0)
            ok = httpx.get(f"{base}/api/health", timeout=10)
            assert ok.status_code == 200
    finally:
        for s in socks:
            s.close()
        app.state.searcher.close()


def test_connection_error_logs_are_bounded(store: Path) -> None:
    app = create_app(store)
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(level=logging.DEBUG)
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with _serving(app, ServerLimits(log_burst=5)) as base:
            port = int(base.rsplit(":", 1)[1])
            for _ in range(100):
                with socket.create_connection(("127.0.0.1", port)) as s:
                    s.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
                    s.settimeout(5)
                    assert s.recv(1024).startswith(b"HTTP/1.1 400")
        invalid = [r for r in records if "Invalid HTTP request" in r.getMessage()]
        assert 1 <= len(invalid) <= 5
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        app.state.searcher.close()


def test_log_rate_limit_oracle() -> None:
    now = [0.0]
    f = LogRateLimit(burst=3, window=10.0, clock=lambda: now[0])

    def rec(msg: str) -> logging.LogRecord:
        return logging.LogRecord("uvicorn.error", logging.WARNING, __file__, 1, msg, None, None)

    passed = [f.filter(rec("Invalid HTTP request received.")) for _ in range(10)]
    assert passed == [True] * 3 + [False] * 7
    assert f.filter(rec("another message"))  # counted per kind
    now[0] = 10.5
    r = rec("Invalid HTTP request received.")
    assert f.filter(r) and "[7 more like this not logged]" in r.getMessage()
    assert [f.filter(rec("Invalid HTTP request received.")) for _ in range(3)] == [True, True, False]


def test_server_limits_are_validated() -> None:
    with pytest.raises(MusicSearchError, match="header-timeout"):
        ServerLimits(header_timeout=0).validate()
    with pytest.raises(MusicSearchError, match="max-connections"):
        ServerLimits(max_connections=-1).validate()
