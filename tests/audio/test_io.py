"""Decoding real files of every supported format, the error paths, and the shipped recordings."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from musicsearch.audio import io as audio_io
from musicsearch.audio.chunking import WINDOW_SAMPLES, check_audible, evenly_spaced_windows, is_silent, pad_to
from musicsearch.audio.io import AUDIO_EXTENSIONS, AudioInfo, audio_info, load_audio, resample
from musicsearch.errors import AudioError

SR = 16000


def stereo_sine(freq: float, sr: int, seconds: float, amps: tuple[float, float] = (0.5, 0.3)) -> np.ndarray:
    """(T, 2) float32 sine with a different amplitude per channel."""
    t = np.arange(round(sr * seconds)) / sr
    s = np.sin(2 * np.pi * freq * t)
    return np.stack([amps[0] * s, amps[1] * s], axis=1).astype(np.float32)


def peak_hz(wave: np.ndarray, sr: int) -> float:
    """Frequency of the largest FFT bin of a Hann-windowed wave."""
    spec = np.abs(np.fft.rfft(wave * np.hanning(wave.shape[0])))
    return float(np.argmax(spec) * sr / wave.shape[0])


# (file name, soundfile format, subtype, sample rate)
FORMATS = [
    ("tone.wav", "WAV", "PCM_16", 44100),
    ("tone.flac", "FLAC", "PCM_24", 44100),
    ("tone.ogg", "OGG", "VORBIS", 44100),
    ("tone.opus", "OGG", "OPUS", 48000),  # Opus only allows 8/12/16/24/48 kHz
    ("tone.mp3", "MP3", "MPEG_LAYER_III", 44100),
]


@pytest.mark.parametrize(("name", "fmt", "subtype", "sr"), FORMATS)
def test_every_format_decodes_to_16k_mono_and_keeps_pitch(
    tmp_path: Path, name: str, fmt: str, subtype: str, sr: int
) -> None:
    path = tmp_path / name
    sf.write(path, stereo_sine(440.0, sr, 1.5), sr, format=fmt, subtype=subtype)
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert np.isfinite(wave).all()
    # lossy codecs add encoder delay / padding of a few ms
    assert abs(wave.shape[0] - 1.5 * SR) < 0.1 * SR
    assert abs(peak_hz(wave[2000:-2000], SR) - 440.0) < 3.0
    # mono is the channel average: amplitude (0.5 + 0.3) / 2
    assert 0.33 < np.max(np.abs(wave[2000:-2000])) < 0.47
    info = audio_info(path)
    assert info.sample_rate == sr and info.channels == 2
    assert abs(info.duration - 1.5) < 0.1
    assert path.suffix in AUDIO_EXTENSIONS


def test_mono_is_exact_channel_average(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    stereo = rng.uniform(-0.5, 0.5, size=(4000, 2)).astype(np.float32)
    path = tmp_path / "noise.wav"
    sf.write(path, stereo, SR, subtype="FLOAT")  # 16 kHz: no resampling, exact values
    np.testing.assert_array_equal(load_audio(path), stereo.mean(axis=1, dtype=np.float32))


def test_resampling_matches_analytic_sine_and_scipy() -> None:
    sr_in, f = 44100, 1000.0
    t_in = np.arange(sr_in * 2) / sr_in
    x = (0.5 * np.sin(2 * np.pi * f * t_in)).astype(np.float32)
    y = resample(x, sr_in, SR)
    assert y.dtype == np.float32 and abs(y.shape[0] - 2 * SR) <= 1
    interior = slice(800, -800)  # away from the edge transients
    t_out = np.arange(y.shape[0]) / SR
    analytic = 0.5 * np.sin(2 * np.pi * f * t_out)
    assert np.max(np.abs(y[interior] - analytic[interior])) < 2e-3
    independent = resample_poly(x.astype(np.float64), 160, 441)  # 16000 / 44100 = 160 / 441
    n = min(independent.shape[0], y.shape[0])
    assert np.max(np.abs(y[:n][interior] - independent[:n][interior])) < 2e-3


def test_resampling_removes_content_above_new_nyquist() -> None:
    sr_in = 44100
    t = np.arange(sr_in) / sr_in
    x = np.sin(2 * np.pi * 12000.0 * t).astype(np.float32)  # above 8 kHz: must not alias into the output
    y = resample(x, sr_in, SR)
    assert np.sqrt(np.mean(y[800:-800] ** 2)) < 1e-3


def test_offset_and_duration_read_exact_samples(tmp_path: Path) -> None:
    ramp = (np.arange(3 * SR, dtype=np.float32) / (3 * SR)) - 0.5
    path = tmp_path / "ramp.wav"
    sf.write(path, ramp, SR, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path, offset=1.0, duration=0.5), ramp[SR : SR + SR // 2])
    np.testing.assert_array_equal(load_audio(path, offset=2.5), ramp[int(2.5 * SR) :])
    np.testing.assert_array_equal(load_audio(path, duration=0.25), ramp[: SR // 4])
    # asking past the end returns what is there
    assert load_audio(path, offset=2.9, duration=5.0).shape[0] == round(0.1 * SR)
    with pytest.raises(AudioError, match="past the end"):
        load_audio(path, offset=3.5)


def test_offset_with_resampling(tmp_path: Path) -> None:
    path = tmp_path / "tone44k.flac"
    sf.write(path, stereo_sine(330.0, 44100, 4.0), 44100)
    part = load_audio(path, offset=1.0, duration=2.0)
    assert abs(part.shape[0] - 2 * SR) <= 1
    assert abs(peak_hz(part[500:-500], SR) - 330.0) < 3.0
    full = load_audio(path)
    # the middle of the excerpt equals the same stretch of the full decode (edges differ by filter transients)
    np.testing.assert_allclose(part[1000:-1000], full[SR + 1000 : 3 * SR - 1000], atol=2e-3)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match=r"nothere\.flac does not exist"):
        load_audio(tmp_path / "nothere.flac")
    with pytest.raises(AudioError, match="does not exist"):
        audio_info(tmp_path / "nothere.flac")


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="not a file"):
        load_audio(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.touch()
    with pytest.raises(AudioError, match=r"empty\.wav is empty \(0 bytes\)"):
        load_audio(path)
    with pytest.raises(AudioError, match="empty"):
        audio_info(path)


def test_header_only_file_has_no_samples(tmp_path: Path) -> None:
    path = tmp_path / "noframes.wav"
    sf.write(path, np.zeros((0,), dtype=np.float32), SR)
    assert path.stat().st_size > 0
    with pytest.raises(AudioError, match="no samples"):
        load_audio(path)
    with pytest.raises(AudioError, match="no samples"):
        audio_info(path)


def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.flac"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(AudioError, match=r"corrupt\.flac.*FLAC or WAV"):
        load_audio(path)
    with pytest.raises(AudioError, match=r"corrupt\.flac"):
        audio_info(path)


def test_corrupt_file_without_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audio_io.shutil, "which", lambda name: None)
    path = tmp_path / "corrupt.mp3"
    path.write_bytes(b"\x00" * 100 + np.random.default_rng(1).bytes(3000))
    with pytest.raises(AudioError, match=r"corrupt\.mp3.*install ffmpeg"):
        load_audio(path)


def test_m4a_without_ffmpeg_says_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audio_io.shutil, "which", lambda name: None)
    path = tmp_path / "song.m4a"
    path.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(200))
    with pytest.raises(AudioError, match=r"song\.m4a.*need ffmpeg.*install ffmpeg"):
        load_audio(path)


@pytest.mark.skipif(not audio_io.ffmpeg_available(), reason="ffmpeg is not installed")
def test_m4a_decodes_through_ffmpeg(tmp_path: Path) -> None:
    wav = tmp_path / "src.wav"
    sf.write(wav, stereo_sine(440.0, 44100, 3.0), 44100)
    m4a = tmp_path / "song.m4a"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(wav), "-c:a", "aac", "-b:a", "128k", str(m4a)],
        check=True,
    )
    info = audio_info(m4a)
    assert info.channels == 2 and info.sample_rate == 44100 and abs(info.duration - 3.0) < 0.1
    wave = load_audio(m4a)
    assert abs(wave.shape[0] - 3 * SR) < 0.1 * SR
    assert abs(peak_hz(wave[2000:-2000], SR) - 440.0) < 3.0
    part = load_audio(m4a, offset=1.0, duration=1.0)
    assert abs(part.shape[0] - SR) < 0.05 * SR


def test_silent_file_loads_and_is_flagged(tmp_path: Path) -> None:
    path = tmp_path / "silence.flac"
    sf.write(path, np.zeros(SR, dtype=np.float32), SR)
    wave = load_audio(path)
    assert wave.shape == (SR,) and not wave.any()
    assert is_silent(wave)
    with pytest.raises(AudioError, match=r"silence\.flac is silent"):
        check_audible(wave, path)


def test_short_file_is_padded_to_one_window(tmp_path: Path) -> None:
    path = tmp_path / "blip.wav"
    sf.write(path, stereo_sine(440.0, 44100, 0.1), 44100)
    wave = load_audio(path)
    assert abs(wave.shape[0] - 1600) <= 1
    padded = pad_to(wave, WINDOW_SAMPLES)
    assert padded.shape == (WINDOW_SAMPLES,)
    np.testing.assert_array_equal(padded[: wave.shape[0]], wave)
    assert not padded[wave.shape[0] :].any()
    windows, starts = evenly_spaced_windows(wave, 3)
    assert windows.shape == (1, WINDOW_SAMPLES) and starts.tolist() == [0.0]


def test_damaged_float_files_are_refused_naming_the_file(tmp_path: Path) -> None:
    x = np.full(1000, 0.25, dtype=np.float32)
    x[[10, 20]] = np.nan
    x[30] = np.inf
    path = tmp_path / "nan.wav"
    sf.write(path, x, SR, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav holds 3 NaN/inf samples"):
        load_audio(path)
    huge = tmp_path / "huge.wav"  # garbage read as float: finite, but the model's output would be NaN
    sf.write(huge, np.where(np.arange(1000) % 7 == 0, 1e30, 0.1).astype(np.float32), SR, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"huge\.wav holds samples of magnitude 1e\+30, far outside -1\.\.1"):
        load_audio(huge)
    loud = tmp_path / "loud.wav"  # a float file a little over full scale is fine
    sf.write(loud, np.full(1000, 3.0, dtype=np.float32), SR, subtype="FLOAT")
    assert float(np.abs(load_audio(loud)).max()) == pytest.approx(3.0, rel=1e-6)


def test_bad_request_values(tmp_path: Path) -> None:
    path = tmp_path / "ok.wav"
    sf.write(path, np.zeros(SR, dtype=np.float32), SR)
    with pytest.raises(AudioError, match="offset"):
        load_audio(path, offset=-1.0)
    with pytest.raises(AudioError, match="duration"):
        load_audio(path, duration=0.0)
    with pytest.raises(AudioError, match="sample_rate"):
        load_audio(path, sample_rate=0)


def test_npy_waveforms(tmp_path: Path) -> None:
    x = np.random.default_rng(0).uniform(-1, 1, 3 * SR).astype(np.float32)
    path = tmp_path / "TRAAAAK128F9318786.npy"
    np.save(path, x)
    np.testing.assert_array_equal(load_audio(path), x)
    np.testing.assert_array_equal(load_audio(path, offset=1.0, duration=1.0), x[SR : 2 * SR])
    assert audio_info(path) == AudioInfo(3.0, SR, 1, "NPY", 3 * SR)
    assert abs(load_audio(path, sample_rate=8000).shape[0] - 3 * 8000) <= 1
    # channel-first 2-D arrays are averaged; float64 is accepted
    two = np.stack([x, -0.5 * x]).astype(np.float64)
    np.save(tmp_path / "two.npy", two)
    np.testing.assert_allclose(load_audio(tmp_path / "two.npy"), 0.25 * x, atol=1e-7)


def test_npy_errors(tmp_path: Path) -> None:
    np.save(tmp_path / "ints.npy", np.arange(100, dtype=np.int16))
    with pytest.raises(AudioError, match=r"ints\.npy holds a int16 array"):
        load_audio(tmp_path / "ints.npy")
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4), dtype=np.float32))
    with pytest.raises(AudioError, match=r"cube\.npy.*shape"):
        load_audio(tmp_path / "cube.npy")
    (tmp_path / "junk.npy").write_bytes(b"not a numpy file at all")
    with pytest.raises(AudioError, match=r"junk\.npy.*NumPy"):
        audio_info(tmp_path / "junk.npy")


def noisy_chirp(sr: int, seconds: float, seed: int) -> np.ndarray:
    """(T, 2) float32: a rising tone plus noise, so every window differs."""
    t = np.arange(round(sr * seconds)) / sr
    x = 0.3 * np.sin(2 * np.pi * (220 + 5 * t) * t) + 0.05 * np.random.default_rng(seed).standard_normal(t.size)
    return np.stack([x, 0.7 * x], axis=1).astype(np.float32)


def whole_then_cut(path: Path, starts: np.ndarray, length: int, **kw: float | None) -> np.ndarray:
    """The oracle: decode everything, then cut the windows (zero-padded past the end)."""
    wave = load_audio(path, **kw)
    return np.stack([np.pad(wave[s : s + length], (0, max(0, s + length - wave.size))) for s in starts])


#: A window cut from a separately resampled chunk matches the whole resampled file to a few float32 ulps of the
#: signal's peak (the filter sees the same 50 ms neighbourhood; measured 2e-7 for every format here).
WINDOW_ATOL = 64 * float(np.finfo(np.float32).eps)  # 7.6e-6


@pytest.mark.parametrize(("name", "fmt", "subtype", "sr"), [*FORMATS, ("plain.wav", "WAV", "PCM_16", SR)])
@pytest.mark.parametrize(("offset", "duration"), [(None, None), (3.3, 20.0)])
def test_windows_read_alone_equal_the_whole_decode(
    tmp_path: Path, name: str, fmt: str, subtype: str, sr: int, offset: float | None, duration: float | None
) -> None:
    path = tmp_path / name
    sf.write(path, noisy_chirp(sr, 30.0, seed=sr), sr, format=fmt, subtype=subtype)
    kw = {"offset": offset, "duration": duration}
    total = audio_io.segment_samples(path, **kw)
    assert total == load_audio(path, **kw).shape[0]  # the header predicts the decoded length exactly
    starts = np.array([0, 1234, 5 * SR + 7, total - SR // 2])  # the last one runs past the end: padded
    got = audio_io.load_audio_windows(path, starts, SR, **kw)
    want = whole_then_cut(path, starts, SR, **kw)
    np.testing.assert_allclose(got, want, rtol=0, atol=0 if sr == SR else WINDOW_ATOL)
    assert not got[-1, SR // 2 :].any()


def test_windows_of_unseekable_and_ffmpeg_files_stream_in_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.flac"
    sf.write(path, noisy_chirp(44100, 12.0, seed=1), 44100)
    starts = np.array([0, 3 * SR + 5, 10 * SR])
    want = whole_then_cut(path, starts, SR)
    monkeypatch.setattr(audio_io, "STREAM_BLOCK_FRAMES", 10_000)  # many blocks, windows across their edges
    monkeypatch.setattr(sf.SoundFile, "seekable", lambda self: False)  # a stream libsndfile cannot seek
    np.testing.assert_allclose(audio_io.load_audio_windows(path, starts, SR), want, rtol=0, atol=WINDOW_ATOL)
    if audio_io.ffmpeg_available():  # the ffmpeg fallback decodes once from the start, keeping the windows only
        m4a = tmp_path / "a.m4a"
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), str(m4a)], check=True)
        got = audio_io.load_audio_windows(m4a, starts, SR)
        ref = whole_then_cut(m4a, starts, SR)
        np.testing.assert_allclose(got, ref, rtol=0, atol=WINDOW_ATOL)


def test_file_name_that_is_not_utf8_decodes(tmp_path: Path) -> None:
    """A name with undecodable bytes (surrogate-escaped by Python) opens; libsndfile gets the raw bytes."""
    import os

    folder = os.fsencode(tmp_path)
    raw = os.path.join(folder, b"caf\xe9 \xff.wav")
    sr = 16000
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr)).astype(np.float32)
    with open(raw, "wb") as fh:
        sf.write(fh, tone, sr, format="WAV", subtype="FLOAT")
    path = Path(os.fsdecode(raw))
    assert audio_info(path).sample_rate == sr
    audio = load_audio(path)
    np.testing.assert_allclose(audio, tone, atol=1e-6)
