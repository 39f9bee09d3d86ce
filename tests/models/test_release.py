"""The release's inference-time preprocessing: window placement, track pooling and tag scores, checked against the
release's formulas written out by hand on models loaded from release-shaped checkpoints (test_pretrained's fixture)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_pretrained import release_fixture  # noqa: F401 - the release-shaped checkpoints (`release`)

from musicsearch.models.pretrained import load_pretrained
from musicsearch.models.release import (
    release_tag_scores,
    release_track_embedding,
    release_window_starts,
    release_windows,
)


def test_release_window_starts_follow_the_release_formula() -> None:
    L = 158_560
    for t in (L + 1, 30 * 16000, 29 * 16000 + 7, 2 * L):
        for n in (1, 3, 8):
            hop = (t - L) // n  # the release: audio[i * hop : i * hop + L] for i in range(n)
            assert release_window_starts(t, n, L).tolist() == [i * hop for i in range(n)]
    assert release_window_starts(L, 3, L).tolist() == [0]
    assert release_window_starts(1000, 3, L).tolist() == [0]
    wave = np.arange(30 * 16000, dtype=np.float32)
    w = release_windows(wave, 3, L)
    assert w.shape == (3, L) and w[1, 0] == (30 * 16000 - L) // 3
    assert release_windows(np.ones(100, np.float32), 3, L).shape == (1, L)


def test_track_embedding_pools_as_the_release(release: dict[str, Any], tmp_path: Path) -> None:
    L = 4000
    wave = 0.1 * np.random.default_rng(5).standard_normal(3 * L).astype(np.float32)
    for name, text in (("ttmr/triplet-glove-tag", release["glove"]), ("ttmr/classification-binary-tag", None)):
        model = load_pretrained(name, weights=str(release["unpacked"]), text_encoder_path=text, cache_dir=tmp_path)
        model.config = model.config.replace(audio={"window_samples": L})  # short windows keep the test fast
        emb = release_track_embedding(model, wave, n_windows=2)
        with torch.inference_mode():
            per = model.encode_audio(torch.from_numpy(np.stack([wave[0:L], wave[L : 2 * L]])))
        if name.startswith("ttmr/classification"):
            per = torch.nn.functional.normalize(per, dim=-1)
            scores = release_tag_scores(model, wave, n_windows=2)
            with torch.inference_mode():
                want = torch.sigmoid(
                    model.head.logits(
                        model.encode_audio(  # type: ignore[operator]
                            torch.from_numpy(np.stack([wave[0:L], wave[L : 2 * L]]))
                        )
                    )
                ).mean(0)
            assert torch.allclose(scores, want) and scores.shape == (1054,)
        assert torch.allclose(emb, per.mean(0), atol=1e-6)
        model.train()
        with pytest.raises(Exception, match="training mode"):
            release_track_embedding(model, wave)
