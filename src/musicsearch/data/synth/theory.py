"""Music theory for the procedural corpus: pitch classes, modes, chords written as Roman numerals, voicings.

Pitches are MIDI note numbers (60 = middle C); pitch classes are integers 0-11 (0 = C). A chord symbol is a Roman
numeral relative to the key's tonic, measured on the *major* scale: ``I`` = 0, ``II`` = 2, ``III`` = 4, ``IV`` = 5,
``V`` = 7, ``VI`` = 9, ``VII`` = 11 semitones, lowered by a ``b`` prefix or raised by ``#``. Upper case is a major
triad, lower case a minor triad; a suffix picks another quality (``7``, ``maj7``, ``o``, ``o7``, ``m7b5``, ``sus2``,
``sus4``, ``6``, ``9``, ``5``, ``+``). So in A minor, ``i bVI bIII bVII`` is Am F C G.
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass

from musicsearch.errors import ConfigError

PITCH_CLASS_NAMES: tuple[str, ...] = ("c", "c#", "d", "eb", "e", "f", "f#", "g", "ab", "a", "bb", "b")
"""Name of each pitch class as used in key tags ("eb major", "f# minor")."""

MODES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),  # natural minor (aeolian)
    "harmonic minor": (0, 2, 3, 5, 7, 8, 11),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "major pentatonic": (0, 2, 4, 7, 9),
    "minor pentatonic": (0, 3, 5, 7, 10),
    "blues": (0, 3, 5, 6, 7, 10),
}
"""Scales as semitone offsets from the tonic."""

MODE_QUALITY: dict[str, str] = {
    "major": "major",
    "mixolydian": "major",
    "major pentatonic": "major",
    "minor": "minor",
    "harmonic minor": "minor",
    "dorian": "minor",
    "phrygian": "minor",
    "minor pentatonic": "minor",
    "blues": "minor",
}
"""Whether a mode has a major or a minor third above the tonic (the ``major`` / ``minor`` tag)."""

CHORD_QUALITIES: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "dim": (0, 3, 6),
    "aug": (0, 4, 8),
    "sus2": (0, 2, 7),
    "sus4": (0, 5, 7),
    "5": (0, 7),
    "6": (0, 4, 7, 9),
    "m6": (0, 3, 7, 9),
    "7": (0, 4, 7, 10),
    "maj7": (0, 4, 7, 11),
    "m7": (0, 3, 7, 10),
    "m7b5": (0, 3, 6, 10),
    "dim7": (0, 3, 6, 9),
    "9": (0, 4, 7, 10, 14),
    "maj9": (0, 4, 7, 11, 14),
    "m9": (0, 3, 7, 10, 14),
    "madd9": (0, 3, 7, 14),
    "add9": (0, 4, 7, 14),
}
"""Chord qualities as semitone offsets from the chord root."""

_NUMERALS = {"i": 0, "ii": 2, "iii": 4, "iv": 5, "v": 7, "vi": 9, "vii": 11}
_ROMAN_RE = re.compile(r"^(?P<acc>[b#]?)(?P<num>VII|VI|V|IV|III|II|I|vii|vi|v|iv|iii|ii|i)(?P<suf>.*)$")


@dataclass(frozen=True)
class Chord:
    """A chord: root as semitones above the key's tonic and its intervals above the root.

    Attributes:
        root: 0-11, semitones above the tonic.
        intervals: semitone offsets of the chord tones above the root (first is 0).
        symbol: the Roman numeral it was parsed from.
    """

    root: int
    intervals: tuple[int, ...]
    symbol: str

    def pitch_classes(self, tonic: int) -> tuple[int, ...]:
        """Pitch classes (0-11) of the chord in a key whose tonic is ``tonic``."""
        return tuple((tonic + self.root + i) % 12 for i in self.intervals)


def parse_roman(symbol: str) -> Chord:
    """Parse a Roman-numeral chord symbol such as ``"bVII"``, ``"ii7"``, ``"V7"``, ``"Imaj7"``, ``"viio"``.

    Args:
        symbol: numeral (case gives major / minor), optional ``b``/``#`` prefix, optional quality suffix.

    Returns:
        The :class:`Chord`.

    Raises:
        ConfigError: if the symbol cannot be parsed.
    """
    m = _ROMAN_RE.match(symbol)
    if m is None:
        raise ConfigError(f"chord symbol {symbol!r} is not a Roman numeral such as 'I', 'bVII', 'ii7' or 'V7'")
    num, suf = m.group("num"), m.group("suf")
    root = _NUMERALS[num.lower()] + {"": 0, "b": -1, "#": 1}[m.group("acc")]
    upper = num.isupper()
    quality = {
        "": "maj" if upper else "min",
        "7": "7" if upper else "m7",
        "maj7": "maj7",
        "9": "9" if upper else "m9",
        "maj9": "maj9",
        "6": "6" if upper else "m6",
        "o": "dim",
        "o7": "dim7",
        "m7b5": "m7b5",
        "+": "aug",
        "sus2": "sus2",
        "sus4": "sus4",
        "5": "5",
        "add9": "add9" if upper else "madd9",
    }.get(suf)
    if quality is None:
        raise ConfigError(f"chord symbol {symbol!r} has an unknown suffix {suf!r}")
    return Chord(root=root % 12, intervals=CHORD_QUALITIES[quality], symbol=symbol)


def scale_pitches(tonic: int, mode: str, low: int, high: int) -> list[int]:
    """All MIDI pitches of a scale within ``[low, high]`` (inclusive), ascending.

    Args:
        tonic: pitch class of the tonic, 0-11.
        mode: a key of :data:`MODES`.
        low: lowest MIDI note.
        high: highest MIDI note.

    Raises:
        ConfigError: if the mode is unknown.
    """
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; choose one of {sorted(MODES)}")
    pcs = {(tonic + s) % 12 for s in MODES[mode]}
    return [p for p in range(low, high + 1) if p % 12 in pcs]


def chord_pitches(chord: Chord, tonic: int, low: int, high: int) -> list[int]:
    """All MIDI pitches of the chord's pitch classes within ``[low, high]``, ascending."""
    pcs = set(chord.pitch_classes(tonic))
    return [p for p in range(low, high + 1) if p % 12 in pcs]


def nearest_pitch(pc: int, target: int) -> int:
    """The MIDI pitch of pitch class ``pc`` closest to ``target`` (ties go down)."""
    base = target - ((target - pc) % 12)
    return base if target - base <= base + 12 - target else base + 12


def voice_chord(chord: Chord, tonic: int, center: int, n_voices: int, previous: list[int] | None = None) -> list[int]:
    """A close-position voicing of ``chord`` around ``center``, moving smoothly from ``previous``.

    The chord tones (cycled until ``n_voices`` notes; the fifth is left out first when there are more tones than
    voices) are assigned to the notes of the previous voicing (or to a spread around ``center`` for the first
    chord) so that the total movement is the smallest over all assignments: minimal-motion voice leading.

    Args:
        chord: the chord to voice.
        tonic: key tonic pitch class.
        center: MIDI pitch around which the voicing sits.
        n_voices: number of notes (>= 1).
        previous: the previous voicing (same length), or ``None``.

    Returns:
        Sorted, distinct MIDI pitches (length ``n_voices``).
    """
    prev = tuple(sorted(previous)) if previous and len(previous) == n_voices else None
    return list(_voice_chord(chord, tonic, center, n_voices, prev))


@functools.lru_cache(maxsize=65536)
def _voice_chord(chord: Chord, tonic: int, center: int, n_voices: int, prev: tuple[int, ...] | None) -> tuple[int, ...]:
    pcs = list(chord.pitch_classes(tonic))
    if len(pcs) > n_voices and len(pcs) >= 4:
        pcs = [pcs[0], pcs[1], *pcs[3:], pcs[2]]
    tones = [pcs[i % len(pcs)] for i in range(n_voices)]
    targets = prev if prev is not None else tuple(round(center + 4 * (i - (n_voices - 1) / 2)) for i in range(n_voices))
    best: tuple[int, tuple[int, ...]] | None = None
    for perm in set(itertools.permutations(tones)):
        pitches = [nearest_pitch(pc, t) for pc, t in zip(perm, targets)]
        if len(set(pitches)) < n_voices:
            continue
        cost = sum(abs(p - t) for p, t in zip(pitches, targets))
        key = (cost, tuple(sorted(pitches)))
        if best is None or key < best:
            best = key
    if best is None:  # every assignment collides (fewer distinct tones than voices): stack octaves
        out: list[int] = []
        for pc, t in zip(tones, targets):
            p = nearest_pitch(pc, t)
            while p in out:
                p += 12
            out.append(p)
        return tuple(sorted(out))
    return best[1]


KRUMHANSL_MAJOR: tuple[float, ...] = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
KRUMHANSL_MINOR: tuple[float, ...] = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)
"""Krumhansl-Kessler key profiles (probe-tone ratings), tonic first."""


def estimate_key(pc_weights: list[float] | tuple[float, ...]) -> tuple[int, str]:
    """Krumhansl-Schmuckler key finding: the key whose profile best correlates with a pitch-class histogram.

    Args:
        pc_weights: 12 weights (e.g. total note duration per pitch class, C first).

    Returns:
        ``(tonic pitch class, "major" | "minor")``.
    """
    import numpy as np

    w = np.asarray(pc_weights, dtype=np.float64)
    best: tuple[float, int, str] = (-2.0, 0, "major")
    for quality, prof in (("major", KRUMHANSL_MAJOR), ("minor", KRUMHANSL_MINOR)):
        p = np.asarray(prof)
        for tonic in range(12):
            r = float(np.corrcoef(w, np.roll(p, tonic))[0, 1]) if w.std() > 0 else 0.0
            if r > best[0]:
                best = (r, tonic, quality)
    return best[1], best[2]
