"""Package data: the eight shipped recordings are where ``musicsearch.assets`` says, each with its licence, and
decode to what their README states."""

from __future__ import annotations

import numpy as np

from musicsearch.assets import librosa_music_dir, librosa_music_files
from musicsearch.audio.chunking import is_silent
from musicsearch.audio.io import audio_info, load_audio

SR = 16000

# duration in seconds of each shipped recording, from its README
REAL_DURATIONS = {
    "admiralbob77-choice-drum-bass": 25.0,
    "brahms-hungarian-dance-5-string-orchestra": 45.8,
    "karissa-hobbs-lets-go-fishin": 133.0,
    "kevin-macleod-sugar-plum-fairy": 119.9,
    "kevin-macleod-vibe-ace": 61.5,
    "lena-orsa-pistachio-ice-cream-ragtime": 70.8,
    "setuniman-sweet-waltz": 49.2,
    "sorohanro-solo-trumpet": 5.3,
}


def test_shipped_recordings_decode() -> None:
    files = librosa_music_files()
    assert [f.stem for f in files] == sorted(REAL_DURATIONS)
    assert (librosa_music_dir() / "README.md").is_file()
    for f in files:
        assert f.with_suffix(".txt").is_file(), f"licence file missing for {f.name}"
        info = audio_info(f)
        assert info.sample_rate == 22050 and info.channels == 1 and info.format == "OGG"
        assert abs(info.duration - REAL_DURATIONS[f.stem]) < 0.1
        wave = load_audio(f, duration=30.0)
        assert wave.dtype == np.float32 and np.isfinite(wave).all()
        assert abs(wave.shape[0] - min(30.0, info.duration) * SR) <= 1
        assert not is_silent(wave)
        assert np.max(np.abs(wave)) <= 1.01
