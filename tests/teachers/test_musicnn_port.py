"""The PyTorch musicnn port against the recorded TensorFlow / librosa outputs (``make_reference.py``).

Tolerances (measured differences in brackets, TF 2.21 oneDNN vs torch 2.13 CPU):
- network alone, identical synthetic input: probabilities 1e-5 [7e-7], penultimate 1e-4 [1e-5];
- end to end on real recordings (our decoder + STFT + mel vs librosa's): probabilities 1e-4 [1.4e-5],
  penultimate features 5e-4 [8.4e-5].
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from musicsearch.assets import librosa_music_dir
from musicsearch.audio.io import load_audio
from musicsearch.errors import CheckpointError, ConfigError
from musicsearch.teachers import musicnn as mn
from musicsearch.teachers.tfbundle import read_bundle

pytest.importorskip("musicnn.configuration", reason="needs `pip install --no-deps musicnn` (checkpoint files)")

REFERENCE = Path(__file__).resolve().parent / "data" / "reference"
PROB_TOL = 1e-4
FEATURE_TOL = 5e-4
N_PATCHES = 3  # patches per recording compared in the default run


@pytest.fixture(scope="module")
def tf_outputs() -> dict:
    return json.loads((REFERENCE / "musicnn_tf_outputs.json").read_text())


@pytest.fixture(scope="module")
def librosa_mel() -> dict:
    return json.loads((REFERENCE / "librosa_mel.json").read_text())


@pytest.fixture(scope="module")
def models() -> dict[str, mn.Musicnn | mn.MusicnnVGG]:
    return {name: mn.load_pretrained(name) for name in mn.MODEL_NAMES}


def _slow_slaney_filterbank(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Loop-per-filter oracle, written from the definition."""

    def hz2mel(f: float) -> float:
        return f / (200.0 / 3.0) if f < 1000.0 else 15.0 + np.log(f / 1000.0) / (np.log(6.4) / 27.0)

    def mel2hz(m: float) -> float:
        return m * (200.0 / 3.0) if m < 15.0 else 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))

    top = hz2mel(sr / 2.0)
    edges = [mel2hz(top * i / (n_mels + 1)) for i in range(n_mels + 2)]
    fb = np.zeros((n_fft // 2 + 1, n_mels))
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        for b in range(n_fft // 2 + 1):
            f = b * sr / n_fft
            if lo < f < hi:
                fb[b, m] = ((f - lo) / (mid - lo) if f <= mid else (hi - f) / (hi - mid)) * 2.0 / (hi - lo)
    return fb


def test_slaney_filterbank_matches_librosa_and_oracle(librosa_mel: dict) -> None:
    fb = mn.slaney_mel_filterbank(sample_rate=16000, n_fft=512, n_mels=96)
    assert fb.shape == (257, 96) and fb.dtype == np.float32
    ref = np.zeros(tuple(librosa_mel["filterbank_shape"]))  # (96, 257)
    for m, b, w in librosa_mel["filterbank_nonzero"]:
        ref[m, b] = w
    np.testing.assert_allclose(fb.T, ref, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(fb, _slow_slaney_filterbank(16000, 512, 96), rtol=1e-5, atol=1e-9)
    mels = np.array([0.0, 500.0, 999.0, 1000.0, 4000.0, 8000.0])
    np.testing.assert_allclose(mn.mel_to_hz_slaney(mn.hz_to_mel_slaney(mels)), mels, rtol=1e-12)


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_log_mel_matches_librosa(librosa_mel: dict, pad_mode: str) -> None:
    wave = load_audio(librosa_music_dir() / "brahms-hungarian-dance-5-string-orchestra.ogg", sample_rate=16000)
    seg = wave[: librosa_mel["n_samples"]]
    ours = mn.log_mel(seg, mn.FrontEndConfig(pad_mode=pad_mode, float16=False)).numpy()  # type: ignore[arg-type]
    ref = np.array(librosa_mel["logmel"][pad_mode])
    assert ours.shape == ref.shape == (24, 96)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-5)
    other = "constant" if pad_mode == "reflect" else "reflect"
    # The recording starts in near-silence, so the padding shows in the last frame (centred on the last sample).
    assert np.abs(ours[-1] - np.array(librosa_mel["logmel"][other])[-1]).max() > 1e-2


def test_patches_layout_and_repeat_pad() -> None:
    rep = torch.arange(500 * 3, dtype=torch.float32).reshape(500, 3)
    p = mn.patches(rep)
    assert p.shape == (2, 187, 3)
    torch.testing.assert_close(p[1], rep[187:374])
    assert mn.patches(rep, hop=62).shape == (6, 187, 3)
    short = mn.patches(rep[:50])
    assert short.shape == (1, 187, 3)
    torch.testing.assert_close(short[0, 100], rep[0])  # 100 = 2 * 50: the third repetition starts
    assert mn.log_mel(np.zeros(48000, dtype=np.float32)).shape == (188, 96)


@pytest.mark.parametrize("name", mn.MODEL_NAMES)
def test_network_equals_tensorflow_on_synthetic_input(tf_outputs: dict, models: dict, name: str) -> None:
    k = np.arange(2 * 187 * 96, dtype=np.float32)
    x = torch.from_numpy((3.0 + 2.0 * np.sin(np.float32(0.01) * k)).astype(np.float32).reshape(2, 187, 96))
    ref = tf_outputs["synthetic"][name]
    with torch.inference_mode():
        out = models[name](x)
    np.testing.assert_allclose(out.probs.numpy(), ref["taggram"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(out.penultimate.numpy(), ref["penultimate"], rtol=0, atol=1e-4)
    if "mean_pool" in ref:
        assert out.mean_pool is not None and out.max_pool is not None
        np.testing.assert_allclose(out.mean_pool.numpy()[:1], ref["mean_pool"], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(out.max_pool.numpy()[:1], ref["max_pool"], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "clip",
    [
        "brahms-hungarian-dance-5-string-orchestra.ogg",
        "lena-orsa-pistachio-ice-cream-ragtime.ogg",
        "sorohanro-solo-trumpet.ogg",
    ],
)
def test_port_equals_tensorflow_on_real_recordings(tf_outputs: dict, models: dict, clip: str) -> None:
    """The first patches of each recording (all of them run in the slow TensorFlow test)."""
    entry = tf_outputs["clips"][clip]
    wave = load_audio(librosa_music_dir() / clip, sample_rate=16000)
    assert abs(wave.shape[0] - entry["n_samples"]) <= 1  # librosa rounds the resampled length up
    n = min(N_PATCHES, len(entry["models"]["MTT_musicnn"]["taggram"]))
    # Frame f needs samples up to (f + 1) * 256, so this prefix gives the first n patches exactly.
    x = mn.patches(mn.log_mel(wave[: n * mn.N_FRAMES * 256 + 1024]))[:n]
    for name, model in models.items():
        ref = entry["models"][name]
        assert tuple(ref["labels"]) == mn.labels_for(name)
        taggram = np.array(ref["taggram"])[:n]
        with torch.inference_mode():
            out = model(x)
        np.testing.assert_allclose(out.probs.numpy(), taggram, rtol=0, atol=PROB_TOL, err_msg=name)
        feats = np.array(ref["penultimate"])[:n]
        np.testing.assert_allclose(out.penultimate.numpy()[: len(feats)], feats, rtol=0, atol=FEATURE_TOL)


def test_weight_loading_is_strict() -> None:
    prefix = mn.checkpoint_prefix("MTT_musicnn")
    tensors = read_bundle(prefix)
    model = mn.Musicnn()
    mn.load_tf_weights(model, tensors)  # the full file, optimizer state included, loads
    missing = {k: v for k, v in tensors.items() if k != "dense_1/bias"}
    with pytest.raises(CheckpointError, match=r"missing variables \['dense_1/bias'\]"):
        mn.load_tf_weights(mn.Musicnn(), missing)
    extra = dict(tensors, **{"conv2d_8/kernel": np.zeros((1,), np.float32)})
    with pytest.raises(CheckpointError, match=r"unused variables \['conv2d_8/kernel'\]"):
        mn.load_tf_weights(mn.Musicnn(), extra)
    wrong = dict(tensors, **{"dense/kernel": np.zeros((1506, 100), np.float32)})
    with pytest.raises(CheckpointError, match="dense/kernel"):
        mn.load_tf_weights(mn.Musicnn(), wrong)
    with pytest.raises(CheckpointError, match="unused variables"):
        mn.load_tf_weights(mn.MusicnnVGG(), tensors)  # a musicnn file into the VGG architecture
    # Loading really copies: a conv kernel lands transposed into the torch layout.
    k = tensors["conv2d/kernel"]  # (7, 38, 1, 204)
    torch.testing.assert_close(model.timbral_74.conv.weight[5, 0, 3, 7], torch.tensor(k[3, 7, 0, 5]))
    mid = tensors["conv2d_5/kernel"]  # (7, 561, 1, 64)
    torch.testing.assert_close(model.mid1.conv.weight[9, 300, 2], torch.tensor(mid[2, 300, 0, 9]))


def test_unknown_model_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="MTT_musicnn"):
        mn.labels_for("MTT_resnet")
    with pytest.raises(CheckpointError, match="no musicnn checkpoint"):
        mn.checkpoint_prefix("MTT_musicnn", root=tmp_path)
