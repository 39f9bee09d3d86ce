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
from typing import Any

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
#: The tracks' tags (the store holds each pair twice): piano, drums and strings are instruments to the map.
TAGS = [("piano", "calm"), ("drums", "loud"), ("piano", "loud"), ("strings", "calm"), ("drums", "fast")]
PITCH = {"piano": 220.0, "drums": 1800.0, "strings": 660.0}


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
    for i, tag in enumerate(TAGS * 2):
        t = np.arange(6 * SR) / SR  # 6 s: several windows, so segments start past 0
        pitch = PITCH[tag[0]] * (1 + 0.02 * i)  # the tags describe the sound, as in a real collection
        wave = 0.3 * np.sin(2 * np.pi * pitch * t) * np.where(t > 2 + 0.3 * i, 1.0, 0.2)
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

            # coloured by clusters named by the store's own tags (not a track's alphabetically first tag)
            store_tags = {t for pair in TAGS for t in pair}
            groups = page.evaluate("window.musicsearch.mapGroups")
            assert len(groups) >= 2 and sum(g["count"] for g in groups) == 10
            assert all(
                g["tags"] and set(g["tags"]) <= store_tags and g["name"] == " · ".join(g["tags"]) for g in groups
            )
            assert legend_names(page) == [g["name"] for g in groups]
            assert dots_follow_groups(page) >= 2

            # the control switches the colouring to a tag family the store's tags have
            options = page.evaluate("[...document.getElementById('map-colour').options].map(o => o.value)")
            assert options == ["clusters", "instrument"]
            page.select_option("#map-colour", "instrument")
            page.wait_for_function("document.getElementById('map').dataset.colour === 'instrument'")
            # "strings" is an instrument family, not an instrument, to the shipped vocabulary
            assert legend_names(page) == ["drums", "piano", "no instrument tag"]
            assert [g["count"] for g in page.evaluate("window.musicsearch.mapGroups")] == [4, 4, 2]
            assert dots_follow_groups(page) == 3

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


def legend_names(page: Any) -> list[str]:
    """The names the map's legend shows, in order."""
    names: list[str] = page.evaluate("[...document.querySelectorAll('#map-legend li .name')].map(e => e.textContent)")
    return names


def dots_follow_groups(page: Any) -> int:
    """Check that every dot no other dot overlaps shows its group's legend colour at its centre (dots are opaque
    on a small map); returns how many groups those dots show."""
    dots = page.evaluate(
        """() => {
          const c = document.getElementById('map'), ctx = c.getContext('2d');
          const s = window.musicsearch, w = c.clientWidth, ratio = c.width / w, pad = 14, r = 5;
          const xy = s.mapPoints.map(p => [pad + p.x * (w - 2 * pad), pad + (1 - p.y) * (w - 2 * pad)]);
          return s.mapPoints.map((p, i) => {
            const alone = xy.every(([x, y], j) => j === i || Math.hypot(x - xy[i][0], y - xy[i][1]) > 2 * r + 1);
            const px = ctx.getImageData(Math.round(xy[i][0] * ratio), Math.round(xy[i][1] * ratio), 1, 1).data;
            return { group: p.group, alone, rgb: [px[0], px[1], px[2]], colour: s.mapColours[p.group] };
          });
        }"""
    )
    alone = [d for d in dots if d["alone"]]
    assert len(alone) >= len(dots) // 2, "dots overlap too much to check their colours"
    for d in alone:
        assert d["rgb"] == [int(d["colour"][k : k + 2], 16) for k in (1, 3, 5)], d
    return len({d["group"] for d in alone})
