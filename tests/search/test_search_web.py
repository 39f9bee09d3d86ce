"""The web page in a real headless Chromium (Debian's ``chromium`` driven by Playwright): search, play from the
matched segment, "more like this", and the collection map."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from musicsearch.data.manifest import Track, write_manifest
from musicsearch.index.indexer import index_collection
from musicsearch.models.checkpoint import save_model
from musicsearch.models.registry import build_model, model_config
from musicsearch.search.service import create_app

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
]
SR = 16000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    uvicorn = pytest.importorskip("uvicorn")
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    root = tmp_path_factory.mktemp("web")
    torch.manual_seed(0)
    save_model(build_model(model_config("debug", text_encoder="tiny-bert"), pretrained_text=False), root / "m.st")
    music = root / "music"
    music.mkdir()
    tracks = []
    tags = [("piano", "calm"), ("drums", "loud"), ("piano", "loud"), ("strings", "calm"), ("drums", "fast")]
    for i, tag in enumerate(tags * 2):
        t = np.arange(6 * SR) / SR  # 6 s: several windows, so segments start past 0
        wave = 0.3 * np.sin(2 * np.pi * (180 + 90 * i) * t) * np.where(t > 2 + 0.3 * i, 1.0, 0.2)
        sf.write(music / f"track {i}.wav", wave.astype(np.float32), SR)
        tracks.append(Track(f"t{i}", str(music / f"track {i}.wav"), tags=tag, metadata={"artist": f"Band {i % 3}"}))
    write_manifest(root / "m.jsonl", tracks)
    index_collection(root / "m.jsonl", root / "store", model=root / "m.st", workers=0)
    app = create_app(root / "store")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)
    app.state.searcher.close()


def test_search_play_more_like_this_and_map(server: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server + "/")
            page.wait_for_function("document.getElementById('status').textContent.includes('tracks')")
            assert "10 tracks" in page.text_content("#status")

            # the map is drawn from /api/map: one dot per track, pixels painted
            page.wait_for_function("document.getElementById('map').dataset.points === '10'")
            painted = page.evaluate(
                """() => { const c = document.getElementById('map');
                   const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                   let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] < 200 || d[i + 2] < 200) n++;
                   return n; }"""
            )
            assert painted > 50

            # search: results with tags, relevance and the best segment
            page.fill("#q", "calm piano, no drums")
            page.press("#q", "Enter")
            page.wait_for_selector("#results .result")
            assert page.locator("#results .result").count() == 10
            assert "without drums" in page.text_content("#understood")
            first = page.evaluate("window.musicsearch.results[0]")
            assert first["segment"]["start"] >= 0 and 0 <= first["relevance"] <= 1
            assert page.locator("#results .result").first.locator(".tag").count() == 2

            # play: the audio element starts at the matched segment and advances
            page.locator("#results .result .play").first.click()
            page.wait_for_function(
                "(s) => { const p = document.getElementById('player'); return !p.paused && p.currentTime > s + 0.3; }",
                arg=first["segment"]["start"],
                timeout=15000,
            )
            current = page.evaluate("document.getElementById('player').currentTime")
            assert current >= first["segment"]["start"]
            assert page.locator("#results .result.playing").count() == 1
            page.screenshot(path=str(tmp_path / "results.png"), full_page=True)
            if os.environ.get("MUSICSEARCH_SCREENSHOT"):
                page.screenshot(path=os.environ["MUSICSEARCH_SCREENSHOT"], full_page=True)

            # more like this: the clicked track is left out, the others come back
            page.locator("#results .result .more").nth(1).click()
            page.wait_for_function("document.getElementById('understood').textContent.includes('tracks like')")
            ids = page.evaluate("window.musicsearch.results.map(r => r.id)")
            second = page.evaluate("window.musicsearch.lastResponse.like")
            assert second.startswith("track:") and int(second.split(":")[1]) not in ids and len(ids) == 9

            # a bad filter shows the server's message
            page.click("#more-options summary")
            page.fill("#filters", "bpm>100")
            page.press("#q", "Enter")
            page.wait_for_selector("#error:not([hidden])")
            assert "unknown key" in page.text_content("#error")
            assert errors == []
        finally:
            browser.close()
