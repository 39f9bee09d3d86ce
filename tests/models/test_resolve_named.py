"""resolve_model dispatches names: shipped models (checked against their checksum) and published checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from musicsearch.errors import MusicSearchError
from musicsearch.models import loading
from musicsearch.models.checkpoint import save_model
from musicsearch.models.registry import build_model, model_config


def test_shipped_model_by_name_is_checksummed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_model(model_config("debug")).eval()
    digest = save_model(model, tmp_path / "m.safetensors")
    (tmp_path / "models.json").write_text(
        json.dumps({"models": {"mine": {"file": "m.safetensors", "sha256": digest}}}), encoding="utf-8"
    )
    monkeypatch.setattr(loading, "SHIPPED_DIR", tmp_path)
    res = loading.resolve_model("mine")
    assert res.source == "shipped" and res.sha256 == digest
    wave = torch.randn(1, 16000)
    with torch.no_grad():
        assert torch.equal(res.model.encode_audio(wave), model.encode_audio(wave))
    (tmp_path / "models.json").write_text(
        json.dumps({"models": {"mine": {"file": "m.safetensors", "sha256": "0" * 64}}}), encoding="utf-8"
    )
    with pytest.raises(MusicSearchError, match="SHA-256"):
        loading.resolve_model("mine")


def test_unknown_name_lists_what_is_accepted() -> None:
    with pytest.raises(MusicSearchError, match="published"):
        loading.resolve_model("no-such-model")


def test_published_name_without_weights_says_where_to_get_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MUSICSEARCH_CACHE", str(tmp_path))
    monkeypatch.delenv("MUSICSEARCH_TTMR_WEIGHTS", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MusicSearchError, match=r"zenodo|mtr\.tar\.gz"):
        loading.resolve_model("ttmr/classification-binary-tag")
