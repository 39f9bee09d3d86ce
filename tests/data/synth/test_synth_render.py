"""Rendering with libfluidsynth: determinism, levels, audible instruments, tempo heard in the audio."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from musicsearch.data.synth.compose import compose_clip
from musicsearch.data.synth.corpus import make_clip
from musicsearch.data.synth.render import (
    PEAK_CEILING,
    SAMPLE_RATE,
    TARGET_RMS_DB,
    FluidSynth,
    find_soundfont,
    master,
    reverb_ir,
)
from musicsearch.errors import MusicSearchError


def _synth() -> FluidSynth:
    try:
        return FluidSynth(find_soundfont())
    except MusicSearchError as exc:  # no libfluidsynth or no soundfont on this machine
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def synth() -> FluidSynth:
    return _synth()


def test_same_seed_same_bytes_regardless_of_history(synth: FluidSynth) -> None:
    a = make_clip(4, 2, synth, seconds=3.0)
    make_clip(4, 9, synth, seconds=3.0)  # render something else in between
    b = make_clip(4, 2, _synth(), seconds=3.0)  # and on a fresh synthesizer
    assert a.flac == b.flac
    assert a.track.to_json() == b.track.to_json()
    c = make_clip(5, 2, synth, seconds=3.0)
    assert c.flac != a.flac


def test_audio_is_16khz_mono_not_silent_not_clipped(synth: FluidSynth) -> None:
    for index in range(4):
        clip = make_clip(6, index, synth, seconds=4.0)
        audio, sr = sf.read(io.BytesIO(clip.flac), dtype="float32")
        assert sr == SAMPLE_RATE
        assert audio.ndim == 1 and len(audio) == 4 * SAMPLE_RATE
        peak = float(np.max(np.abs(audio)))
        assert peak <= PEAK_CEILING + 1e-3
        rms_db = 20 * np.log10(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
        assert rms_db > -40
        assert rms_db <= TARGET_RMS_DB[clip.composition.plan.dynamics] + 0.5
        assert np.mean(np.abs(audio) > 0.99) == 0  # no clipped run
        # sound throughout, not only at the start
        quarters = np.array_split(audio, 4)
        assert min(np.sqrt(np.mean(q**2)) for q in quarters) > 10 ** (-50 / 20)


def test_every_tagged_instrument_is_audible(synth: FluidSynth) -> None:
    """Each sounding channel, rendered alone, is within 25 dB of the whole mix."""
    for style in ("orchestral", "disco", "ambient", "celtic", "jazz"):
        comp = compose_clip(8, 1, seconds=5.0, style=style)
        mix = synth.render(comp.midi, 5.0).mean(axis=0)
        mix_rms = float(np.sqrt(np.mean(mix.astype(np.float64) ** 2)))
        for channel in comp.channel_programs():
            stem = synth.render(comp.midi, 5.0, channels=[channel]).mean(axis=0)
            rms = float(np.sqrt(np.mean(stem.astype(np.float64) ** 2)))
            assert 20 * np.log10(rms / mix_rms) > -25, (style, channel)


def estimate_tempo(audio: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """Tempo in bpm from the autocorrelation of a spectral-flux onset envelope (100 frames a second)."""
    hop, n_fft = sr // 100, 1024
    frames = np.lib.stride_tricks.sliding_window_view(audio, n_fft)[::hop] * np.hanning(n_fft)
    mag = np.log1p(100 * np.abs(np.fft.rfft(frames, axis=1)))
    flux = np.maximum(0.0, np.diff(mag, axis=0)).sum(axis=1)
    flux = flux - flux.mean()
    ac = np.correlate(flux, flux, mode="full")[len(flux) - 1 :]
    lags = np.arange(len(ac))
    valid = (lags >= 100 * 60 / 220) & (lags <= 100 * 60 / 50)
    best = lags[valid][np.argmax(ac[valid])]
    return 100 * 60 / best


@pytest.mark.parametrize("style", ["house", "rock", "disco", "techno"])
def test_tempo_heard_in_the_audio_matches_the_bpm_tag(synth: FluidSynth, style: str) -> None:
    clip = make_clip(12, 3, synth, seconds=8.0, style=style)
    bpm = clip.track.metadata["bpm"]
    assert f"{bpm // 10 * 10}-{bpm // 10 * 10 + 9} bpm" in clip.track.metadata["all_tags"]
    est = estimate_tempo(clip.audio)
    ratios = [est / (bpm * f) for f in (0.5, 1.0, 2.0)]
    assert min(abs(r - 1) for r in ratios) < 0.04, (style, bpm, est)


def test_master_normalises_to_the_dynamic_target_without_clipping() -> None:
    rng = np.random.default_rng(0)
    stereo = (0.3 * rng.standard_normal((2, 32000))).astype(np.float32)
    soft = master(stereo, in_rate=32000, reverb=0.0, dynamics="soft")
    assert len(soft) == 16000
    assert 20 * np.log10(np.sqrt(np.mean(soft.astype(np.float64) ** 2))) == pytest.approx(
        TARGET_RMS_DB["soft"], abs=0.3
    )
    spiky = np.zeros((2, 32000), dtype=np.float32)
    spiky[:, ::4000] = 1.0
    loud = master(spiky, in_rate=32000, reverb=0.3, dynamics="loud")
    assert np.max(np.abs(loud)) <= PEAK_CEILING + 1e-6
    with pytest.raises(MusicSearchError, match="silent"):
        master(np.zeros((2, 3200), dtype=np.float32), in_rate=32000)


def test_reverb_ir_is_deterministic_and_decays() -> None:
    a, b = reverb_ir(1.5), reverb_ir(1.5)
    assert np.array_equal(a, b)
    assert np.sum(a**2) == pytest.approx(1.0)
    n = len(a) // 4
    assert np.sum(a[:n] ** 2) > 10 * np.sum(a[-n:] ** 2)


def test_find_soundfont_errors_say_what_to_do(tmp_path) -> None:
    with pytest.raises(MusicSearchError, match="--soundfont"):
        find_soundfont(tmp_path / "missing.sf2")
