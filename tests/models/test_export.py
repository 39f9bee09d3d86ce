"""Export: a published model written in our format reloads to the same embeddings; the ``export`` CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from test_pretrained import TEXTS, release_fixture, short_wave  # noqa: F401 - the checkpoints (`release`)

from musicsearch.cli.main import main
from musicsearch.models.checkpoint import load_model_file
from musicsearch.models.export import export_model
from musicsearch.models.pretrained import load_pretrained


def test_export_round_trip_is_exact(release: dict[str, Any], tmp_path: Path) -> None:
    name = "ttmr/contrastive-bert-stochastic"
    model = load_pretrained(name, weights=str(release["unpacked"]), text_encoder_path=release["bert"])
    out = tmp_path / "cbs.safetensors"
    result = export_model(model, out, source=name)
    assert result.max_abs_diff == 0.0
    back = load_model_file(out, sha256=result.sha256)
    meta = back.checkpoint_meta  # type: ignore[attr-defined]
    assert meta["published"] == name and meta["exported"]["from"] == name
    assert meta["source"]["best_pth_sha256"] == model.checkpoint_meta["source"]["best_pth_sha256"]  # type: ignore[attr-defined]
    assert meta["conversion"]["dropped"] == ["text_encoder.embeddings.position_ids"]
    assert meta["preprocessing"]["retrieval_windows"] == 3
    assert back.config == model.config
    wave = short_wave(4)
    with torch.inference_mode():
        assert torch.equal(back.encode_audio(wave), model.encode_audio(wave))
        assert torch.equal(back.encode_text(TEXTS), model.encode_text(TEXTS))


def test_export_cli(release: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tgt.safetensors"
    args = [
        "export",
        "--model",
        "ttmr/triplet-glove-tag",
        "--weights",
        str(release["unpacked"]),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--text-encoder-path",
        release["glove"],
        "--out",
        str(out),
        "--half",
    ]
    assert main(args) == 0
    assert "sha256" in capsys.readouterr().out
    back = load_model_file(out)
    assert back.checkpoint_meta["exported"]["half"] is True  # type: ignore[attr-defined]
    assert main(["export", "--model", str(out), "--out", str(tmp_path / "again.safetensors")]) == 0
    assert main(["export", "--model", "ttmr/nope", "--out", str(tmp_path / "x.safetensors")]) == 2
