"""Music theory helpers of the synthetic corpus: Roman numerals, scales, voicings, key finding."""

from __future__ import annotations

import numpy as np
import pytest

from musicsearch.data.synth.theory import (
    KRUMHANSL_MAJOR,
    MODE_QUALITY,
    MODES,
    estimate_key,
    nearest_pitch,
    parse_roman,
    scale_pitches,
    voice_chord,
)
from musicsearch.errors import ConfigError


@pytest.mark.parametrize(
    ("symbol", "root", "intervals"),
    [
        ("I", 0, (0, 4, 7)),
        ("vi", 9, (0, 3, 7)),
        ("bVII", 10, (0, 4, 7)),
        ("V7", 7, (0, 4, 7, 10)),
        ("ii7", 2, (0, 3, 7, 10)),
        ("Imaj7", 0, (0, 4, 7, 11)),
        ("viio", 11, (0, 3, 6)),
        ("iim7b5", 2, (0, 3, 6, 10)),
        ("#IV", 6, (0, 4, 7)),
        ("IVadd9", 5, (0, 4, 7, 14)),
    ],
)
def test_parse_roman(symbol: str, root: int, intervals: tuple[int, ...]) -> None:
    chord = parse_roman(symbol)
    assert chord.root == root
    assert chord.intervals == intervals


def test_parse_roman_rejects_garbage() -> None:
    with pytest.raises(ConfigError, match="Roman numeral"):
        parse_roman("X7")
    with pytest.raises(ConfigError, match="suffix"):
        parse_roman("Iblah")


def test_bVI_in_a_minor_is_f_major() -> None:
    # A minor: tonic pitch class 9; bVI = F A C
    assert set(parse_roman("bVI").pitch_classes(9)) == {5, 9, 0}


def test_scale_pitches_match_mode_intervals() -> None:
    for mode, steps in MODES.items():
        pitches = scale_pitches(2, mode, 62, 73)  # D up to one octave
        assert [p - 62 for p in pitches] == list(steps), mode
    with pytest.raises(ConfigError):
        scale_pitches(0, "lydian flat nine", 60, 72)


def test_mode_quality_is_the_third_above_the_tonic() -> None:
    for mode, steps in MODES.items():
        assert (3 in steps) != (4 in steps) or mode == "blues"
        third = 4 if 4 in steps else 3
        assert MODE_QUALITY[mode] == ("major" if third == 4 else "minor"), mode


def test_nearest_pitch() -> None:
    assert nearest_pitch(0, 61) == 60
    assert nearest_pitch(0, 67) == 72
    assert nearest_pitch(7, 60) == 55


def test_voice_leading_moves_little() -> None:
    """Consecutive voicings of a I-vi-IV-V loop move by small steps (the point of voice leading)."""
    prev = None
    for sym in ["I", "vi", "IV", "V", "I"] * 3:
        chord = parse_roman(sym)
        v = voice_chord(chord, 0, 62, 3, prev)
        assert {p % 12 for p in v} == set(chord.pitch_classes(0))
        if prev is not None:
            assert sum(abs(a - b) for a, b in zip(sorted(v), sorted(prev))) <= 7
        prev = v


def test_estimate_key_recovers_transposed_profiles() -> None:
    rng = np.random.default_rng(0)
    for tonic in range(12):
        w = np.roll(np.asarray(KRUMHANSL_MAJOR), tonic) + rng.uniform(0, 0.3, 12)
        assert estimate_key(list(w)) == (tonic, "major")
