"""The search path on ONNX: ``musicsearch query`` with an exported model imports neither torch nor transformers,
ranks as torch does, falls back to torch (with a warning) on a damaged export; the LRU text cache."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_tone_corpus
from musicsearch.cli.main import main
from musicsearch.errors import MusicSearchError
from musicsearch.index.embedder import load_embedder
from musicsearch.index.indexer import index_collection
from musicsearch.models.checkpoint import save_model
from musicsearch.models.onnx import TEXT_FILE, export_dir_for, weights_of
from musicsearch.models.registry import build_model, model_config
from musicsearch.search.api import Searcher
from musicsearch.search.textenc import TEXT_INT8_DEFAULT, OnnxEmbedder, TextEmbeddingCache, open_embedder

HEAVY = ("torch", "transformers")
QUERY = "calm low sine"

# `musicsearch query` in a fresh interpreter; prints the CLI's JSON, then which heavy modules were imported.
PROBE = f"""
import json, sys
from musicsearch.cli.main import main
code = main(["query", {QUERY!r}, "--store", sys.argv[1], "-k", "5", "--json"])
print(json.dumps({{"code": code, "loaded": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
"""


@pytest.fixture(scope="module")
def exported_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """``(store, model file, cache root)``: eight tones indexed with a seeded debug model, exported to ONNX."""
    root = tmp_path_factory.mktemp("textenc")
    torch.manual_seed(0)
    model = build_model(model_config("debug", text_encoder="tiny-bert"), pretrained_text=False)
    ckpt = root / "debug.safetensors"
    save_model(model, ckpt)
    manifest = write_tone_corpus(root / "corpus")
    index_collection(manifest, root / "store", model=ckpt, workers=0)
    cache = root / "cache"
    old = os.environ.get("MUSICSEARCH_CACHE")
    os.environ["MUSICSEARCH_CACHE"] = str(cache)
    try:
        assert main(["export", "--onnx", "--model", str(ckpt)]) == 0
    finally:
        if old is None:
            del os.environ["MUSICSEARCH_CACHE"]
        else:
            os.environ["MUSICSEARCH_CACHE"] = old
    return root / "store", ckpt, cache


def _query(store: Path, cache: Path, *, onnx: bool) -> tuple[dict, list[str], str]:
    env = {**os.environ, "MUSICSEARCH_CACHE": str(cache), "MUSICSEARCH_ONNX": "1" if onnx else "0"}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(store)], capture_output=True, text=True, env=env, timeout=300, check=True
    )
    lines = proc.stdout.strip().splitlines()
    status = json.loads(lines[-1])
    assert status["code"] == 0, proc.stderr
    return json.loads("\n".join(lines[:-1])), status["loaded"], proc.stderr


def _ranking(resp: dict) -> list[tuple[str, float]]:
    return [(r["track_id"], r["score"]) for r in resp["results"]]


def _assert_same_ranking(a: dict, b: dict) -> None:
    ra, rb = _ranking(a), _ranking(b)
    assert [t for t, _ in ra] == [t for t, _ in rb]
    # cosines of unit vectors from raw embeddings within 1e-4 of each other: well within 1e-3
    np.testing.assert_allclose([s for _, s in ra], [s for _, s in rb], atol=1e-3)


def test_query_with_an_export_imports_no_torch_and_ranks_as_torch(exported_store: tuple[Path, Path, Path]) -> None:
    store, _, cache = exported_store
    fast, loaded, _ = _query(store, cache, onnx=True)
    assert loaded == [], f"the ONNX query path imported {loaded}"
    slow, loaded_torch, _ = _query(store, cache, onnx=False)
    assert "torch" in loaded_torch  # the probe does see torch when it is used
    assert len(fast["results"]) == 5
    _assert_same_ranking(fast, slow)


def test_a_damaged_export_falls_back_to_torch_with_a_warning(
    exported_store: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    store, ckpt, cache = exported_store
    bad_cache = tmp_path / "cache"
    import shutil

    shutil.copytree(cache, bad_cache)
    _, sha = weights_of(ckpt)  # type: ignore[misc]
    text = export_dir_for(sha, root=bad_cache / "onnx") / TEXT_FILE
    data = bytearray(text.read_bytes())
    data[len(data) // 2] ^= 0x01
    text.write_bytes(bytes(data))
    resp, loaded, err = _query(store, bad_cache, onnx=True)
    assert "torch" in loaded
    assert "text.onnx does not match its checksum" in err and "Using torch" in err
    reference, _, _ = _query(store, cache, onnx=False)
    _assert_same_ranking(resp, reference)


def test_open_embedder_picks_onnx_only_for_the_same_weights(
    exported_store: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, ckpt, cache = exported_store
    monkeypatch.setenv("MUSICSEARCH_CACHE", str(cache))
    monkeypatch.setenv("MUSICSEARCH_ONNX", "1")
    fast = open_embedder(ckpt, onnx=True)
    assert isinstance(fast, OnnxEmbedder)
    torch_embedder = load_embedder(ckpt)
    assert (fast.name, fast.checksum, fast.dim) == (torch_embedder.name, torch_embedder.checksum, torch_embedder.dim)
    texts = ["calm", "loud square wave", "noisy treble"]
    assert np.abs(fast.embed_texts(texts) - torch_embedder.embed_texts(texts)).max() <= 1e-4
    windows = np.random.default_rng(0).uniform(-0.5, 0.5, (2, fast.window_samples)).astype(np.float32)
    assert np.abs(fast.embed_windows(windows) - torch_embedder.embed_windows(windows)).max() <= 1e-4
    assert not isinstance(open_embedder(ckpt, onnx=False), OnnxEmbedder)
    # other weights (one more training step's worth of change): no export of them, so torch
    other = build_model(model_config("debug", text_encoder="tiny-bert"), pretrained_text=False)
    save_model(other, tmp_path / "other.safetensors")
    assert not isinstance(open_embedder(tmp_path / "other.safetensors", onnx=True), OnnxEmbedder)
    with Searcher.open(store) as searcher:
        assert isinstance(searcher.embedder, OnnxEmbedder)
        assert searcher.search(QUERY, k=3).results


# --- the text cache --------------------------------------------------------------------------------------------


class CountingEmbed:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.array([[len(t), t.count("a"), 1.0] for t in texts], dtype=np.float32)


def test_text_cache_returns_the_function_values_and_evicts_least_recent() -> None:
    embed = CountingEmbed()
    cache = TextEmbeddingCache(embed, size=2)
    np.testing.assert_array_equal(cache(["a", "bb"]), embed(["a", "bb"]))
    np.testing.assert_array_equal(cache(["a"]), embed(["a"]))
    embed.calls.clear()
    np.testing.assert_array_equal(cache(["a", "bb"]), CountingEmbed()(["a", "bb"]))
    assert embed.calls == []  # cached: the same list of texts
    cache(["bb", "a"])  # another list (another batch): embedded, evicts the least recently used, ["a"]
    assert embed.calls == [["bb", "a"]] and len(cache) == 2
    embed.calls.clear()
    cache(["a", "bb"])
    assert embed.calls == []
    cache(["a"])
    assert embed.calls == [["a"]]
    assert cache.hits == 2 and cache.misses == 4


def test_text_cache_rows_cannot_be_altered_and_size_zero_is_off() -> None:
    cache = TextEmbeddingCache(CountingEmbed(), size=4)
    out = cache(["a"])
    out[0, 0] = 99.0  # the caller's copy
    assert cache(["a"])[0, 0] == 1.0
    embed = CountingEmbed()
    off = TextEmbeddingCache(embed, size=0)
    off(["a"])
    off(["a"])
    assert len(embed.calls) == 2 and len(off) == 0
    with pytest.raises(MusicSearchError, match="text cache size"):
        TextEmbeddingCache(embed, size=-1)


def test_searcher_caches_query_texts(exported_store: tuple[Path, Path, Path]) -> None:
    store, _, _ = exported_store
    with Searcher.open(store, text_cache_size=8) as searcher:
        first = searcher.search(QUERY, k=3)
        second = searcher.search(QUERY, k=3)
        assert searcher.text_cache.hits == 1 and searcher.text_cache.misses == 1
        searcher.search(QUERY + ", no square", k=3)  # another list of texts: a miss
        assert searcher.text_cache.hits == 1 and searcher.text_cache.misses == 2
    assert [r.track_id for r in first.results] == [r.track_id for r in second.results]
    assert [r.score for r in first.results] == [r.score for r in second.results]


def test_a_shipped_model_is_exported_on_first_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """First use: torch, and the export is written into the cache (atomically); the next open runs on it."""
    monkeypatch.setenv("MUSICSEARCH_CACHE", str(tmp_path))
    monkeypatch.delenv("MUSICSEARCH_TEXT_INT8", raising=False)
    first = open_embedder("procedural", onnx=True)
    assert not isinstance(first, OnnxEmbedder)
    _, sha = weights_of("procedural")  # type: ignore[misc]
    made = [export_dir_for(sha).name] + ([export_dir_for(sha, int8=True).name] if TEXT_INT8_DEFAULT else [])
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == sorted(made)
    second = open_embedder("procedural", onnx=True, text_int8=False)
    assert isinstance(second, OnnxEmbedder) and second.checksum == first.checksum == sha
    texts = ["calm piano", "fast drums"]
    assert np.abs(second.embed_texts(texts) - first.embed_texts(texts)).max() <= 1e-4
    third = open_embedder("procedural", onnx=True)  # the default text tower
    assert isinstance(third, OnnxEmbedder) and third.text_int8 == TEXT_INT8_DEFAULT
    assert ((third.embed_texts(texts) * first.embed_texts(texts)).sum(axis=1) > 0.9).all()  # unit rows


def test_the_server_keeps_a_bounded_text_cache(exported_store: tuple[Path, Path, Path]) -> None:
    """``serve --text-cache N`` reaches the server's searcher; repeated queries are answered from it."""
    from fastapi.testclient import TestClient

    from musicsearch.cli.main import build_parser
    from musicsearch.search.service import create_app

    store, _, _ = exported_store
    args = build_parser("serve").parse_args(["serve", "--store", str(store), "--text-cache", "2"])
    assert args.text_cache == 2
    app = create_app(store, text_cache_size=args.text_cache, allowed_hosts=["*"])
    try:
        client = TestClient(app)
        for q in ("calm", "loud", "calm", "noisy", "calm"):
            assert client.get("/api/search", params={"q": q, "k": 2}).status_code == 200
        cache = app.state.searcher.text_cache
        assert cache.size == 2 and len(cache) == 2 and cache.hits == 2 and cache.misses == 3
    finally:
        app.state.searcher.close()


def test_int8_text_tower_is_used_only_when_asked_and_intact(
    exported_store: tuple[Path, Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``text_int8``: texts from the int8 export's text tower (audio stays float32); no int8 export, or a damaged
    one (with a warning): the float32 text tower, never a wrong answer."""
    import shutil

    store, ckpt, cache = exported_store
    own = tmp_path / "cache"
    shutil.copytree(cache, own)
    monkeypatch.setenv("MUSICSEARCH_CACHE", str(own))
    f32 = open_embedder(ckpt, onnx=True, text_int8=False)
    assert isinstance(f32, OnnxEmbedder) and not f32.text_int8
    assert not open_embedder(ckpt, onnx=True, text_int8=True).text_int8  # type: ignore[attr-defined]  # none yet
    assert main(["export", "--onnx", "--int8", "--model", str(ckpt)]) == 0
    i8 = open_embedder(ckpt, onnx=True, text_int8=True)
    assert isinstance(i8, OnnxEmbedder) and i8.text_int8
    assert i8.exported.folder == f32.exported.folder  # the audio tower: the float32 export
    windows = np.random.default_rng(0).uniform(-0.5, 0.5, (2, i8.window_samples)).astype(np.float32)
    np.testing.assert_array_equal(i8.embed_windows(windows), f32.embed_windows(windows))
    texts = ["calm", "loud square wave", "noisy treble"]
    a, b = f32.embed_texts(texts), i8.embed_texts(texts)
    assert not np.array_equal(a, b)  # another graph ...
    assert ((a * b).sum(axis=1) > 0.9).all()  # ... close to float32 (unit rows: the cosine)
    pool = i8.use_text_sessions(2)
    np.testing.assert_allclose(pool.encode(texts), i8.text_export.encode_text(texts), rtol=0, atol=1e-5)
    monkeypatch.setenv("MUSICSEARCH_TEXT_INT8", "1")
    assert open_embedder(ckpt, onnx=True).text_int8  # type: ignore[attr-defined]
    monkeypatch.setenv("MUSICSEARCH_TEXT_INT8", "0")
    assert not open_embedder(ckpt, onnx=True).text_int8  # type: ignore[attr-defined]
    _, sha = weights_of(ckpt)  # type: ignore[misc]
    text8 = export_dir_for(sha, int8=True, root=own / "onnx") / TEXT_FILE
    data = bytearray(text8.read_bytes())
    data[len(data) // 2] ^= 0x01
    text8.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="musicsearch.search.textenc"):
        damaged = open_embedder(ckpt, onnx=True, text_int8=True)
    assert isinstance(damaged, OnnxEmbedder) and not damaged.text_int8
    assert "text.onnx does not match its checksum" in caplog.text and "float32 text tower" in caplog.text
    np.testing.assert_array_equal(damaged.embed_texts(texts), a)
    with Searcher.open(store) as searcher:  # the store accepts it: the same weights
        assert searcher.search(QUERY, k=3).results
