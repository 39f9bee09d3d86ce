"""Text encoders: offline MiniLM (CLS / mean pooling) and GloVe word vectors with counted unknown words."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from musicsearch.errors import ConfigError, MusicSearchError
from musicsearch.text.encoders import TransformerTextEncoder, WordVectorTextEncoder, words_of
from musicsearch.text.vectors import read_glove_text


def test_minilm_offline_mean_pooling_is_semantic() -> None:
    enc = TransformerTextEncoder("minilm", pooling="mean", trainable=False).eval()
    with torch.no_grad():
        e = torch.nn.functional.normalize(
            enc(["sad piano ballad", "melancholic piano song", "fast heavy metal"]), dim=-1
        )
    assert e.shape == (3, 384)
    assert float(e[0] @ e[1]) > float(e[0] @ e[2])
    frozen = [p.requires_grad for p in enc.parameters()]
    assert not any(frozen)


def test_cls_pooling_differs_from_mean() -> None:
    enc = TransformerTextEncoder("minilm", pooling="cls").eval()
    enc2 = TransformerTextEncoder("minilm", pooling="mean").eval()
    with torch.no_grad():
        assert not torch.allclose(enc(["jazz"]), enc2(["jazz"]))


def test_unknown_model_without_network_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="minilm"):
        TransformerTextEncoder("no-such-org/no-such-model")


def test_glove_builtin_and_oov_counted_never_zero() -> None:
    enc = WordVectorTextEncoder("glove-6b-50d")
    out = enc(["piano", "zzqxv piano"])
    assert out.shape == (2, 50)
    assert enc.oov_counts["zzqxv"] == 1
    assert 0 < enc.coverage() < 1
    oov_only = enc(["zzqxv"])
    assert float(oov_only.norm()) > 0
    assert torch.equal(oov_only, enc(["zzqxv"]))  # deterministic
    with pytest.raises(MusicSearchError, match="no words"):
        enc(["!!!"])


def test_glove_text_file(tmp_path: Path) -> None:
    f = tmp_path / "v.txt"
    f.write_text("rock 1 0 0\njazz 0 1 0\n", encoding="utf-8")
    wv = read_glove_text(f)
    assert wv.dim == 3 and wv.index["jazz"] == 1
    enc = WordVectorTextEncoder(str(f))
    np.testing.assert_allclose(enc(["rock jazz"]).numpy()[0], [0.5, 0.5, 0.0])
    bad = tmp_path / "bad.txt"
    bad.write_text("rock 1 0 0\njazz 0 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="expected 3 values"):
        read_glove_text(bad)


def test_words_of() -> None:
    assert words_of("Rock'n'Roll, 80s & hip-hop!") == ["rock'n", "roll", "80s", "hip", "hop"]
