"""MusicnnTagger on real recordings: sensible tags, shapes, patching options and input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicsearch.assets import librosa_music_dir
from musicsearch.audio.io import load_audio
from musicsearch.errors import AudioError, ConfigError
from musicsearch.teachers.musicnn import MSD_LABELS, MTT_LABELS, log_mel, patches
from musicsearch.teachers.tagger import MusicnnTagger, TaggerOutput

pytest.importorskip("musicnn.configuration", reason="needs `pip install --no-deps musicnn` (checkpoint files)")

BRAHMS = librosa_music_dir() / "brahms-hungarian-dance-5-string-orchestra.ogg"
RAGTIME = librosa_music_dir() / "lena-orsa-pistachio-ice-cream-ragtime.ogg"


@pytest.fixture(scope="module")
def mtt() -> MusicnnTagger:
    return MusicnnTagger.load("MTT_musicnn")


def test_string_orchestra_gets_classical_string_tags(mtt: MusicnnTagger) -> None:
    top = mtt.top_tags(BRAHMS, k=5)
    names = [t for t, _ in top]
    assert {"classical", "strings", "violin"} <= set(names), top
    scores = [s for _, s in top]
    assert scores == sorted(scores, reverse=True) and 0.0 < scores[-1] <= scores[0] <= 1.0


def test_ragtime_piano_gets_piano(mtt: MusicnnTagger) -> None:
    wave = load_audio(RAGTIME, sample_rate=16000, duration=30.0)
    top = mtt.top_tags(wave, k=5)
    assert top[0][0] == "piano", top
    assert "violin" not in [t for t, _ in top]


def test_tag_and_embed_shapes(mtt: MusicnnTagger) -> None:
    wave = load_audio(RAGTIME, sample_rate=16000, duration=10.0)  # 626 frames -> 3 patches
    tags, probs = mtt.tag(wave)
    assert tags == list(MTT_LABELS)
    assert probs.shape == (3, 50) and probs.dtype == np.float32
    assert ((probs > 0) & (probs < 1)).all()
    emb = mtt.embed(wave)
    assert emb.shape == (3, mtt.embedding_dim) == (3, 200)
    # The tagger is the network on the port's patches, nothing more.
    with torch.inference_mode():
        direct = mtt.model(patches(log_mel(wave)))
    np.testing.assert_allclose(probs, direct.probs.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(emb, direct.penultimate.numpy(), rtol=0, atol=1e-5)
    overlapped = mtt.analyze(wave, hop_frames=62)
    assert overlapped.probs.shape == (8, 50)  # (626 - 187) // 62 + 1
    np.testing.assert_allclose(overlapped.starts[:3], [0.0, 62 * 256 / 16000, 124 * 256 / 16000])
    np.testing.assert_allclose(overlapped.probs[0], probs[0], rtol=0, atol=1e-6)
    short = mtt.tag(wave[:8000])[1]  # 0.5 s, repeated to one patch
    assert short.shape == (1, 50)


def test_top_ordering_and_ties() -> None:
    probs = np.array([[0.1, 0.5, 0.5, 0.2]], dtype=np.float32)
    out = TaggerOutput(["a", "b", "c", "d"], probs, np.zeros((1, 2), np.float32), np.zeros(1))
    assert out.top(3) == [("b", 0.5), ("c", 0.5), ("d", pytest.approx(0.2))]
    assert out.top(0) == []


def test_msd_tagger_vocabulary_and_vgg_embedding() -> None:
    wave = load_audio(BRAHMS, sample_rate=16000, duration=4.0)
    msd = MusicnnTagger.load("MSD_musicnn")
    assert msd.tags == list(MSD_LABELS)
    vgg = MusicnnTagger.load("MTT_vgg")
    assert vgg.embed(wave).shape == (1, vgg.embedding_dim) == (1, 256)


def test_bad_input(mtt: MusicnnTagger, tmp_path: object) -> None:
    with pytest.raises(AudioError, match="empty"):
        mtt.tag(np.zeros(0, dtype=np.float32))
    with pytest.raises(AudioError, match="mono"):
        mtt.tag(np.zeros((2, 16000), dtype=np.float32))
    with pytest.raises(AudioError, match="NaN"):
        mtt.tag(np.full(16000, np.nan, dtype=np.float32))
    with pytest.raises(AudioError, match="hop_frames"):
        mtt.tag(np.zeros(16000, dtype=np.float32), hop_frames=0)
    with pytest.raises(AudioError):
        mtt.top_tags(librosa_music_dir() / "no-such-file.ogg")
    with pytest.raises(ConfigError, match="unknown musicnn model"):
        MusicnnTagger.load("MTT_resnet")
