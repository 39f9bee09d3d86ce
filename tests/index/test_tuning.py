"""The texts an index is tuned on (index/tuning.py), and their way from an indexing run into the saved index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from musicsearch.data.synth.tags import build_vocabulary
from musicsearch.index.embedder import Embedder
from musicsearch.index.indexer import index_collection
from musicsearch.index.store import Store
from musicsearch.index.tuning import CAPTION_QUERIES, MAX_TUNING_TEXTS, tuning_queries, tuning_texts
from musicsearch.models.registry import build_model, model_config

pytest.importorskip("faiss")


def debug_embedder(objective: str = "contrastive", tags: tuple[str, ...] = ()) -> Embedder:
    torch.manual_seed(0)
    cfg = model_config("debug", objective=objective, text_encoder="tiny-bert", tags=tags)
    return Embedder.from_model(build_model(cfg, pretrained_text=False))


def test_texts_are_the_model_tags_then_corpus_tags_then_captions() -> None:
    embedder = debug_embedder(tags=("zither", "calm piano", "rock"))
    texts = tuning_texts(embedder)
    assert texts[:3] == ["zither", "calm piano", "rock"]
    assert len(texts) == len(set(texts)) <= MAX_TUNING_TEXTS
    assert set(build_vocabulary()) <= set(texts) and set(CAPTION_QUERIES) <= set(texts)
    assert texts.count("calm piano") == 1  # a caption that is also a model tag comes once


def test_a_classifier_is_tuned_on_its_tags_only() -> None:
    embedder = debug_embedder("classification", tags=("rock", "jazz", "piano"))
    assert tuning_texts(embedder) == ["rock", "jazz", "piano"]


def test_provider_embeds_once(monkeypatch: pytest.MonkeyPatch) -> None:
    embedder = debug_embedder()
    calls: list[int] = []
    real = embedder.embed_texts

    def counting(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return real(texts)

    monkeypatch.setattr(embedder, "embed_texts", counting)
    provide = tuning_queries(embedder)
    assert calls == []  # nothing embedded until an index trains
    first = provide()
    assert provide() is first and calls == [len(tuning_texts(embedder))]
    assert first.shape == (calls[0], embedder.dim) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)


def test_an_indexing_run_tunes_on_the_model_texts(tmp_path: Path) -> None:
    src = tmp_path / "music"
    src.mkdir()
    t = np.arange(24000) / 16000
    for i, freq in enumerate((220, 330, 440, 550, 660, 770)):
        sf.write(src / f"t{i}.wav", (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000)
    embedder = debug_embedder()
    store = tmp_path / "store"
    index_collection(src, store, model=embedder, workers=0, backend_options={"exact_threshold": 4})
    with Store.open(store) as st:
        tuning = st.tracks.tuning  # type: ignore[attr-defined]
        assert st.tracks.mode == "ivf" and tuning is not None  # type: ignore[attr-defined]
        assert tuning.queries == {"text": len(tuning_texts(embedder)), "example": 6}
        assert tuning.min_recall >= tuning.target
