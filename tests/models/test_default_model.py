"""The shipped default model: loads offline against its recorded checksum and reproduces its recorded embeddings.

Tolerance: float16 weights are computed in float32 here as when they were recorded, so the same machine gives
bit-equal results; across CPUs (other BLAS kernels, summation order) we allow 1e-3 absolute on embeddings whose
entries are of order 1.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicsearch.assets import librosa_music_dir
from musicsearch.audio.chunking import pad_to
from musicsearch.audio.io import load_audio
from musicsearch.models.loading import DEFAULT_MODEL, resolve_model, shipped_models

ATOL = 1e-3


def test_default_model_is_shipped() -> None:
    assert DEFAULT_MODEL in shipped_models()
    assert set(shipped_models()) >= {"default", "procedural"}


@pytest.mark.parametrize("name", sorted(shipped_models()))
def test_shipped_model_reproduces_its_recorded_embeddings(name: str) -> None:
    entry = shipped_models()[name]
    assert entry["bytes"] < 25 * 2**20  # small enough to live in the repository
    res = resolve_model(name)
    assert res.source == "shipped" and res.sha256 == entry["sha256"]
    model = res.model
    assert not model.training
    ref = entry["reference"]
    wave = load_audio(librosa_music_dir() / ref["clip"])
    win = model.config.audio.window_samples
    with torch.inference_mode():
        audio = model.encode_audio(torch.from_numpy(pad_to(wave[:win], win))[None]).numpy()
        text = model.encode_text(ref["texts"]).numpy()
    np.testing.assert_allclose(audio, np.asarray(ref["audio"]), atol=ATOL, rtol=0)
    np.testing.assert_allclose(text, np.asarray(ref["text"]), atol=ATOL, rtol=0)
    for key in ("command", "manifest_sha256", "train_config", "metrics"):
        assert entry[key], key
