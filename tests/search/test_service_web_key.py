"""The web page against a server started with an API key, in a real headless Chromium: it asks for the key once,
then searches and plays audio (the ``<audio>`` element carries the key in the page's cookie)."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from musicsearch.index.indexer import index_collection
from musicsearch.models.checkpoint import save_model
from musicsearch.models.registry import build_model, model_config
from musicsearch.search.service import build_server, create_app

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--autoplay-policy=no-user-gesture-required"]
SR = 16000


def test_page_asks_for_the_key_then_searches_and_plays(tmp_path: Path) -> None:
    pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    torch.manual_seed(0)
    save_model(build_model(model_config("debug", text_encoder="tiny-bert"), pretrained_text=False), tmp_path / "m")
    music = tmp_path / "music"
    music.mkdir()
    for i in range(3):
        t = np.arange(4 * SR) / SR
        sf.write(music / f"t{i}.wav", (0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t)).astype(np.float32), SR)
    index_collection(music, tmp_path / "store", model=tmp_path / "m", workers=0)
    key = "0123456789abcdef" * 4
    app = create_app(tmp_path / "store", api_key=key)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = build_server(app, host="127.0.0.1", port=port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = browser.new_page()
                asked: list[str] = []

                def answer(dialog: object) -> None:
                    asked.append(dialog.message)  # type: ignore[attr-defined]
                    dialog.accept(key)  # type: ignore[attr-defined]

                page.on("dialog", answer)
                page.goto(f"http://127.0.0.1:{port}/")
                page.wait_for_function("document.getElementById('status').textContent.includes('3 tracks')")
                assert len(asked) == 1 and "API key" in asked[0]
                page.fill("#q", "calm")
                page.press("#q", "Enter")
                page.wait_for_selector("#results .result")
                page.locator("#results .result .play").first.click()
                page.wait_for_function(
                    "() => { const p = document.getElementById('player'); return !p.paused && p.currentTime > 0.3; }",
                    timeout=15000,
                )
                assert len(asked) == 1  # the cookie carried the key from then on, <audio> included
            finally:
                browser.close()
    finally:
        server.should_exit = True
        thread.join(15)
        app.state.searcher.close()
