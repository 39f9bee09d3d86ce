"""HTTP API: search, tracks, similar, map, health, audio with range requests; bad and hostile input."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from fastapi.testclient import TestClient

from musicsearch.data.manifest import Track, write_manifest
from musicsearch.index.indexer import index_collection
from musicsearch.models.checkpoint import save_model
from musicsearch.models.registry import build_model, model_config
from musicsearch.search.service import create_app

SR = 16000


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("svc")
    torch.manual_seed(0)
    model = build_model(model_config("debug", text_encoder="tiny-bert"), pretrained_text=False)
    save_model(model, root / "model.safetensors")
    music = root / "music"
    music.mkdir()
    tracks = []
    for i in range(6):
        t = np.arange(int((2 + i * 0.5) * SR)) / SR
        path = music / f"song {i}.wav"
        sf.write(path, (0.3 * np.sin(2 * np.pi * (200 + 120 * i) * t)).astype(np.float32), SR)
        tracks.append(
            Track(f"s{i}", str(path), tags=("calm" if i < 3 else "loud", "sine"), metadata={"artist": f"A{i % 2}"})
        )
    write_manifest(root / "m.jsonl", tracks)
    (root / "secret.wav").write_bytes((music / "song 0.wav").read_bytes())
    index_collection(root / "m.jsonl", root / "store", model=root / "model.safetensors", workers=0)
    return {"root": root, "store": root / "store", "music": music}


@pytest.fixture(scope="module")
def client(collection: dict[str, Path]) -> Iterator[TestClient]:
    app = create_app(collection["store"])
    with TestClient(app, base_url="http://127.0.0.1") as c:  # a Host on the default allow-list
        yield c
    app.state.searcher.close()


def test_health_search_track_similar_map(client: TestClient) -> None:
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["tracks"] == 6 and health["backend"] == "faiss"
    resp = client.get("/api/search", params={"q": "calm sine, no loud", "k": 3})
    assert resp.status_code == 200
    body = resp.json()
    assert body["query"] == {"text": "calm sine, no loud", "positive": "calm sine", "negatives": ["loud"]}
    assert len(body["results"]) == 3
    first = body["results"][0]
    assert {"id", "track_id", "score", "relevance", "segment", "tags"} <= set(first) and "path" not in first
    assert 0 <= first["relevance"] <= 1 and first["segment"]["start"] >= 0
    filtered = client.get("/api/search", params=[("q", "sine"), ("filter", "artist=A1"), ("filter", "tag=loud")])
    assert {r["track_id"] for r in filtered.json()["results"]} == {"s3", "s5"}  # artist A1 (odd) and loud (>= 3)
    track = client.get(f"/api/tracks/{first['id']}").json()
    assert track["track_id"] == first["track_id"] and track["audio_url"] == f"/api/audio/{first['id']}"
    assert track["windows"][0] == 0 and "path" not in track
    similar = client.get(f"/api/tracks/{first['id']}/similar", params={"k": 10}).json()
    assert len(similar["results"]) == 5 and first["id"] not in [r["id"] for r in similar["results"]]
    like = client.get("/api/search", params={"like": first["id"], "k": 2}).json()
    assert [r["id"] for r in like["results"]] == [r["id"] for r in similar["results"][:2]]
    both = client.get("/api/search", params={"q": "loud", "like": first["id"], "text_weight": 0.7})
    assert both.status_code == 200 and both.json()["like"] == f"track:{first['id']}"
    points = client.get("/api/map").json()
    assert points["count"] == 6 and all(0 <= p["x"] <= 1 and 0 <= p["y"] <= 1 for p in points["points"])
    schema = client.get("/openapi.json").json()
    assert {"/api/search", "/api/tracks/{track_id}", "/api/audio/{track_id}", "/api/map", "/api/health"} <= set(
        schema["paths"]
    )


@pytest.mark.parametrize(
    ("url", "status", "words"),
    [
        ("/api/search", 400, "give a text query"),
        ("/api/search?q=", 400, "empty"),
        ("/api/search?q=" + "a" * 3000, 400, "limit"),
        ("/api/search?q=%FF%FE%FD", 400, "UTF-8"),
        ("/api/search?q=caf%C3%28", 400, "UTF-8"),
        ("/api/search?q=a%00b", 400, "control"),
        ("/api/search?q=rock&k=0", 422, "k"),
        ("/api/search?q=rock&k=1000", 422, "k"),
        ("/api/search?q=rock&k=ten", 422, "k"),
        ("/api/search?q=rock&k=1e3", 422, "k"),
        ("/api/search?q=rock&filter=bpm%3E100", 400, "unknown key"),
        ("/api/search?q=rock&filter=year%3E%3Dnineteen", 400, "whole number"),
        ("/api/search?q=rock&filter=garbage", 400, "KEY OP VALUE"),
        ("/api/search?q=no+vocals", 400, "leave out"),
        ("/api/search?like=999", 400, "no track"),
        ("/api/search?like=-1", 422, "like"),
        ("/api/search?like=..%2F..%2Fetc%2Fpasswd", 422, "like"),
        ("/api/search?q=x&text_weight=2", 422, "text_weight"),
        ("/api/tracks/999", 404, "no track"),
        ("/api/tracks/abc", 422, "track_id"),
        ("/api/tracks/1/similar?k=-3", 422, "k"),
        ("/api/map?limit=0", 422, "limit"),
        ("/api/map?colour=nope", 400, "cannot be coloured by 'nope'; use one of: clusters"),
        ("/api/nope", 404, "Not Found"),
    ],
)
def test_bad_input_gets_a_clear_4xx_json_error(client: TestClient, url: str, status: int, words: str) -> None:
    resp = client.get(url)
    assert resp.status_code == status, resp.text
    assert words.lower() in resp.json()["error"].lower()


def test_audio_full_and_ranges(client: TestClient, collection: dict[str, Path]) -> None:
    data = (collection["music"] / "song 2.wav").read_bytes()
    size = len(data)
    tid = client.get("/api/search", params={"q": "x", "k": 6}).json()["results"]
    tid = next(r["id"] for r in tid if r["track_id"] == "s2")
    url = f"/api/audio/{tid}"
    full = client.get(url)
    assert full.status_code == 200 and full.content == data
    assert full.headers["accept-ranges"] == "bytes" and full.headers["content-type"] == "audio/wav"
    assert int(full.headers["content-length"]) == size
    for header, first, last in [
        ("bytes=0-9", 0, 9),
        ("bytes=10-", 10, size - 1),  # open-ended
        ("bytes=-100", size - 100, size - 1),  # suffix
        ("bytes=5-5", 5, 5),
        (f"bytes=100-{size + 5000}", 100, size - 1),  # clipped to the end
        (f"bytes=-{size + 10}", 0, size - 1),  # suffix longer than the file
        (f"bytes={size - 1}-", size - 1, size - 1),
    ]:
        resp = client.get(url, headers={"Range": header})
        assert resp.status_code == 206, header
        assert resp.headers["content-range"] == f"bytes {first}-{last}/{size}"
        assert resp.content == data[first : last + 1]
        assert int(resp.headers["content-length"]) == last - first + 1
    for header in [f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=9-5", "bytes=-0", "bytes=abc", "bytes=-"]:
        resp = client.get(url, headers={"Range": header})
        assert resp.status_code == 416, header
        assert resp.headers["content-range"] == f"bytes */{size}"
    for header in ["items=0-5", "", "  "]:  # another unit, or nothing: ignored, the whole file (RFC 9110)
        resp = client.get(url, headers={"Range": header})
        assert resp.status_code == 200 and resp.content == data, header
    multi = client.get(url, headers={"Range": "bytes=0-1,5-9"})  # several ranges: multipart/byteranges
    assert multi.status_code == 206 and multi.headers["content-type"].startswith("multipart/byteranges")
    assert data[0:2] in multi.content and data[5:10] in multi.content
    assert f"Content-Range: bytes 0-1/{size}".encode() in multi.content
    head = client.head(url, headers={"Range": "bytes=0-99"})
    assert head.status_code == 206 and head.headers["content-length"] == "100" and head.content == b""


def test_ranges_against_the_obvious_definition(client: TestClient, collection: dict[str, Path]) -> None:
    """Random ranges over HTTP against the plain definition (RFC 9110 section 14.1.2)."""
    tid = next(r["id"] for r in client.get("/api/search", params={"q": "x", "k": 6}).json()["results"])
    data = client.get(f"/api/audio/{tid}").content
    size = len(data)
    rng = np.random.default_rng(0)
    for _ in range(150):
        a, b = (int(x) for x in rng.integers(0, size + 200, 2))
        resp = client.get(f"/api/audio/{tid}", headers={"Range": f"bytes={a}-{b}"})
        if a > b or a >= size:
            assert resp.status_code == 416, (a, b)
            assert resp.headers["content-range"] == f"bytes */{size}" and "range" in resp.json()["error"]
        else:
            assert resp.status_code == 206, (a, b)
            assert resp.content == data[a : min(b, size - 1) + 1]


@pytest.mark.parametrize(
    "url",
    [
        "/api/audio/../../etc/passwd",
        "/api/audio/..%2F..%2Fetc%2Fpasswd",
        "/api/audio/%2e%2e/%2e%2e/etc/passwd",
        "/api/audio/%2Fetc%2Fpasswd",
        "/api/audio//etc/passwd",
        "/api/audio/1%2F..%2F..%2Fsecret.wav",
        "/api/audio/0x1",
        "/api/audio/1.5",
        "/api/audio/-1",
        "/api/audio/99999",
        "/static/../../../etc/passwd",
        "/static/..%2F..%2Fstore%2Fstore.json",
        "/static/%2e%2e%2fservice.py",
        "/static/index.html/../../api.py",
        "/static/api.py",
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
    ],
)
def test_no_path_outside_the_collection_is_served(client: TestClient, url: str) -> None:
    resp = client.get(url)
    assert resp.status_code in (404, 422), (url, resp.status_code)
    assert b"root:" not in resp.content and b"RIFF" not in resp.content


def test_symlink_repointed_outside_is_refused(collection: dict[str, Path], tmp_path: Path) -> None:
    """A file replaced after indexing by a symlink to a file outside the collection is not served."""
    root = tmp_path
    music = root / "music"
    music.mkdir()
    t = np.arange(2 * SR) / SR
    sf.write(music / "a.wav", (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), SR)
    sf.write(music / "b.wav", (0.3 * np.sin(2 * np.pi * 500 * t)).astype(np.float32), SR)
    index_collection(music, root / "store", model=collection["root"] / "model.safetensors", workers=0)
    app = create_app(root / "store")
    try:
        with TestClient(app, base_url="http://localhost:8000") as c:
            ids = {r["track_id"]: r["id"] for r in c.get("/api/search", params={"q": "x"}).json()["results"]}
            assert c.get(f"/api/audio/{ids['a.wav']}").status_code == 200
            outside = collection["root"] / "secret.wav"
            os.unlink(music / "a.wav")
            os.symlink(outside, music / "a.wav")  # same name, now pointing outside the indexed folder
            resp = c.get(f"/api/audio/{ids['a.wav']}")
            assert resp.status_code == 404 and "re-index" in resp.json()["error"]
            os.unlink(music / "b.wav")  # a deleted file: a clean 404, not a 500
            assert c.get(f"/api/audio/{ids['b.wav']}").status_code == 404
    finally:
        app.state.searcher.close()


def test_page_and_static_files(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert '<script src="/static/app.js">' in page.text and "http" not in page.text.replace("http-equiv", "")
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"] and ".innerHTML" not in js.text
    assert client.get("/static/style.css").status_code == 200


def test_serve_cli_refuses_a_missing_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from musicsearch.cli.main import main

    assert main(["serve", "--store", str(tmp_path / "nothing"), "--port", "0"]) == 2
    assert "not a musicsearch store" in capsys.readouterr().err
