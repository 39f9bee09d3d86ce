"""Windows, crops and silence checks, against slow obvious versions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from musicsearch.audio.chunking import (
    SAMPLE_RATE,
    SILENCE_DB,
    WINDOW_SAMPLES,
    WINDOW_SECONDS,
    check_audible,
    evenly_spaced_starts,
    evenly_spaced_windows,
    is_silent,
    n_windows_for,
    pad_to,
    random_crop,
    rms_db,
)
from musicsearch.errors import AudioError


def test_constants() -> None:
    assert SAMPLE_RATE == 16000 and WINDOW_SAMPLES == 158_560
    assert WINDOW_SECONDS == pytest.approx(9.91)


def test_pad_to() -> None:
    x = np.arange(5, dtype=np.float32)
    y = pad_to(x, 8)
    assert y.shape == (8,) and y.dtype == np.float32
    assert y.tolist() == [0, 1, 2, 3, 4, 0, 0, 0]
    assert pad_to(x, 5) is x  # long enough: returned as is
    assert pad_to(x, 3).shape == (5,)  # never truncated
    assert pad_to(np.zeros(0, dtype=np.float32), 4).tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="1-D"):
        pad_to(np.zeros((2, 2)), 4)


def test_random_crop_is_a_slice_and_uses_every_start() -> None:
    x = np.arange(10, dtype=np.float32)
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(400):
        c = random_crop(x, 4, rng)
        assert c.shape == (4,) and c.dtype == np.float32
        start = int(c[0])
        np.testing.assert_array_equal(c, x[start : start + 4])
        starts.add(start)
    assert starts == set(range(7))  # 10 - 4 + 1 equally likely starts


def test_random_crop_is_reproducible_and_pads_short_clips() -> None:
    x = np.random.default_rng(1).normal(size=1000).astype(np.float32)
    a = random_crop(x, 100, np.random.default_rng(5))
    b = random_crop(x, 100, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    short = random_crop(x[:30], 100, np.random.default_rng(5))
    assert short.shape == (100,)
    np.testing.assert_array_equal(short[:30], x[:30])
    assert not short[30:].any()


def test_random_crop_of_a_memmap_returns_an_owned_copy(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.arange(50, dtype=np.float32))
    mm = np.load(path, mmap_mode="r")
    c = random_crop(mm, 10, np.random.default_rng(0))
    assert not isinstance(c, np.memmap) and c.flags.owndata


@pytest.mark.parametrize(("n_samples", "length", "n"), [(100, 10, 1), (100, 10, 2), (100, 10, 3), (101, 10, 7)])
def test_evenly_spaced_starts_matches_formula(n_samples: int, length: int, n: int) -> None:
    starts = evenly_spaced_starts(n_samples, length, n)
    if n == 1:
        expected = [0]
    else:
        expected = [round(i * (n_samples - length) / (n - 1)) for i in range(n)]
    assert starts.tolist() == expected
    assert starts.dtype == np.int64
    if n > 1:
        assert starts[0] == 0 and starts[-1] + length == n_samples


def test_evenly_spaced_starts_short_clip_gives_one_window() -> None:
    assert evenly_spaced_starts(5, 10, 3).tolist() == [0]
    assert evenly_spaced_starts(10, 10, 3).tolist() == [0]
    with pytest.raises(ValueError):
        evenly_spaced_starts(100, 10, 0)


def test_evenly_spaced_windows_against_a_loop() -> None:
    rng = np.random.default_rng(2)
    wave = rng.normal(size=3 * SAMPLE_RATE).astype(np.float32)
    length = SAMPLE_RATE
    windows, starts_s = evenly_spaced_windows(wave, 4, length)
    assert windows.shape == (4, length) and windows.dtype == np.float32
    for i in range(4):
        s = round(i * (wave.shape[0] - length) / 3)
        np.testing.assert_array_equal(windows[i], wave[s : s + length])
        assert starts_s[i] == pytest.approx(s / SAMPLE_RATE)
    assert starts_s[0] == 0.0 and starts_s[-1] == pytest.approx(2.0)


def test_evenly_spaced_windows_default_length_on_30s() -> None:
    wave = np.ones(30 * SAMPLE_RATE, dtype=np.float32)
    windows, starts = evenly_spaced_windows(wave, 3)
    assert windows.shape == (3, WINDOW_SAMPLES)
    assert starts[-1] == pytest.approx(30.0 - WINDOW_SECONDS, abs=1e-4)


def test_n_windows_for_covers_the_track() -> None:
    w = WINDOW_SECONDS
    assert n_windows_for(0.1) == 1
    assert n_windows_for(w) == 1
    assert n_windows_for(w + 0.01) == 2
    assert n_windows_for(2 * w) == 2  # exact tiling needs no extra window
    assert n_windows_for(30.0) == 4
    assert n_windows_for(600.0) == 16  # capped
    assert n_windows_for(600.0, max_windows=100) == 1 + math.ceil((600.0 - w) / w)
    assert n_windows_for(30.0, hop_seconds=5.0) == 1 + math.ceil((30.0 - w) / 5.0)
    assert n_windows_for(float("nan")) == 1
    for duration in np.linspace(0.5, 200.0, 97):
        n = n_windows_for(float(duration), max_windows=1000)
        if duration > w:  # the windows of evenly_spaced_starts then leave no gap
            assert (n - 1) * w >= duration - w - 1e-6


def test_rms_db_against_formula_and_never_nan() -> None:
    x = np.full(100, 0.5, dtype=np.float32)
    assert rms_db(x) == pytest.approx(20 * math.log10(0.5))
    sine = np.sin(2 * np.pi * np.arange(16000) / 160).astype(np.float32)
    assert rms_db(sine) == pytest.approx(-3.0103, abs=1e-3)
    assert rms_db(np.zeros(10)) == SILENCE_DB
    assert rms_db(np.zeros(0)) == SILENCE_DB
    assert not math.isnan(rms_db(np.full(10, 1e-30)))
    assert rms_db(np.full(10, 30000, dtype=np.int16)) > 80  # int input accumulates in float64, no overflow


def test_is_silent_and_check_audible() -> None:
    assert is_silent(np.zeros(100))
    assert is_silent(np.zeros(0))
    assert is_silent(np.full(100, 1e-4))  # -80 dB
    assert not is_silent(np.full(100, 1e-2))  # -40 dB
    assert is_silent(np.full(100, 1e-2), threshold_db=-30.0)
    check_audible(np.full(100, 0.1), "ok.wav")
    with pytest.raises(AudioError, match=r"quiet\.wav is silent"):
        check_audible(np.full(100, 1e-5), "quiet.wav")
    with pytest.raises(AudioError, match=r"none\.wav holds no samples"):
        check_audible(np.zeros(0), "none.wav")
