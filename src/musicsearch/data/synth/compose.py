"""Procedural composition: plan a clip (style, key, tempo, instruments), write its parts, and make a MIDI file.

Time inside the composer is in *beats* (felt beats: quarter notes in x/4, dotted quarters in 6/8); the MIDI file
has one quarter note = :data:`TPQ` ticks and a tempo of ``bpm * quarters_per_beat`` quarter notes per minute.
Everything random is drawn from the one ``numpy.random.Generator`` passed in, so a clip is a pure function of its
seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import mido
import numpy as np

from musicsearch.data.synth.instruments import DRUM_CHANNEL, DRUM_KITS, DRUM_NOTES, INSTRUMENTS, instrument
from musicsearch.data.synth.styles import METERS, STYLES, Groove, Part, Style, get_style, progressions_for
from musicsearch.data.synth.theory import (
    MODE_QUALITY,
    MODES,
    PITCH_CLASS_NAMES,
    Chord,
    nearest_pitch,
    parse_roman,
    scale_pitches,
    voice_chord,
)
from musicsearch.errors import ConfigError

TPQ = 480
"""MIDI ticks per quarter note."""

DYNAMIC_VELOCITY = {"soft": 50, "medium": 76, "loud": 102}
"""Base MIDI velocity of each dynamic level."""

MELODY_CELLS: dict[tuple[str, str], tuple[str, ...]] = {
    ("4/4", "sparse"): (
        "x---------------",
        "x-------x-------",
        "x-----------x---",
        "x-----x-x-------",
        "x-------x---x---",
    ),
    ("4/4", "medium"): (
        "x---x---x-x-x---",
        "x---x-x-x---x---",
        "x-x-x---x-------",
        "x---x---x---x---",
        "x-----x-x---x---",
        "x-x-x-x-x-------",
        "..x-x---x-x-x---",
        "x---x-x---x-x---",
    ),
    ("4/4", "busy"): (
        "x-x-x-x-x-x-x-x-",
        "xxxxx-x-x-x-x---",
        "x-xxx-x-xxx-x---",
        "x-x-xxxxx---x-x-",
        "xxx-x-x-xxx-x-x-",
        "x-x-x-x-xxxxx---",
    ),
    ("4/4", "hymn"): ("x---x---x---x---", "x---x---x-------", "x-------x---x---"),
    ("3/4", "sparse"): ("x-----------", "x-------x---", "x-----x-----"),
    ("3/4", "medium"): ("x---x---x---", "x-----x-x---", "x---x-x-x-x-", "x-x-x---x---"),
    ("3/4", "busy"): ("x-x-x-x-x-x-", "x-xxx-x-x-x-", "xxx-x-x-x-x-"),
    ("2/4", "sparse"): ("x-------", "x---x---"),
    ("2/4", "medium"): ("x---x-x-", "x-x-x---", "x-xxx-x-", "x---x---"),
    ("2/4", "busy"): ("x-x-x-x-", "xxx-x-x-", "x-x-xxx-"),
    ("6/8", "sparse"): ("x-----x-----", "x-----------", "x---x-x-----"),
    ("6/8", "medium"): ("x---x-x---x-", "x-x-x-x-----", "x---x-x-x-x-"),
    ("6/8", "busy"): ("x-x-x-x-x-x-", "x-xxx-x-x-x-", "x-x-x-x---x-"),
}
"""Melody rhythm cells (one bar, sixteenth grid) by (meter, density)."""

ENDING_CELLS: dict[str, tuple[str, ...]] = {
    "4/4": ("x-----------....", "x-------........", "x---x-------...."),
    "3/4": ("x-------....", "x---x---...."),
    "2/4": ("x-----..", "x-x-x-.."),
    "6/8": ("x---------..", "x-x-x-----.."),
}
"""Phrase-ending cells: a long note and a breath."""


@dataclass(frozen=True)
class Note:
    """One note.

    Attributes:
        channel: MIDI channel 0-15 (9 = drums).
        pitch: MIDI note number.
        start: onset in beats (after swing).
        dur: duration in beats.
        velocity: 1-127.
        offset: extra onset shift in seconds (strum, human timing).
    """

    channel: int
    pitch: int
    start: float
    dur: float
    velocity: int
    offset: float = 0.0


@dataclass(frozen=True)
class PartPlan:
    """A part of one clip: the style's :class:`~musicsearch.data.synth.styles.Part` with its draws made."""

    role: str
    instrument: str
    program: int
    channel: int
    pattern: str
    center: int
    spec: Part


@dataclass(frozen=True)
class ClipPlan:
    """Every high-level decision of a clip.

    Attributes:
        style: style name.
        meter: time signature.
        bpm: tempo in felt beats per minute.
        tonic: key tonic pitch class 0-11.
        mode: mode name (see :data:`~musicsearch.data.synth.theory.MODES`).
        dynamics: ``soft``, ``medium`` or ``loud``.
        swing: swing amount 0..1.
        progression: chord symbols, one string per bar.
        bars: number of bars written.
        parts: the pitched parts.
        groove: index into the style's grooves, or ``None`` for no drums.
        seconds: clip length in seconds.
    """

    style: str
    meter: str
    bpm: int
    tonic: int
    mode: str
    dynamics: str
    swing: float
    progression: tuple[str, ...]
    bars: int
    parts: tuple[PartPlan, ...]
    groove: int | None
    seconds: float

    @property
    def quality(self) -> str:
        """``major`` or ``minor`` (the third above the tonic)."""
        return MODE_QUALITY[self.mode]

    @property
    def key_name(self) -> str:
        """Key tag such as ``"d minor"``."""
        return f"{PITCH_CLASS_NAMES[self.tonic]} {self.quality}"

    @property
    def beat_seconds(self) -> float:
        """Seconds per felt beat."""
        return 60.0 / self.bpm

    @property
    def groove_spec(self) -> Groove | None:
        """The drum groove, if any."""
        return None if self.groove is None else get_style(self.style).grooves[self.groove]


@dataclass
class Composition:
    """A composed clip: the plan, its notes and the MIDI file made from them."""

    plan: ClipPlan
    notes: list[Note]
    midi: mido.MidiFile
    features: dict[str, object] = field(default_factory=dict)

    def channel_programs(self) -> dict[int, int]:
        """Channel -> GM program of every channel that sounds a note (drum channel: kit preset)."""
        out: dict[int, int] = {}
        for part in self.plan.parts:
            out[part.channel] = part.program
        groove = self.plan.groove_spec
        if groove is not None:
            out[DRUM_CHANNEL] = DRUM_KITS[groove.kit].program
        sounding = {n.channel for n in self.notes}
        return {c: p for c, p in out.items() if c in sounding}


# ----------------------------------------------------------------------------------------------------------- plan


def _choose(rng: np.random.Generator, options: Sequence[tuple[str, float]]) -> str:
    names = [o[0] for o in options]
    w = np.asarray([o[1] for o in options], dtype=np.float64)
    return names[int(rng.choice(len(names), p=w / w.sum()))]


def _pick(rng: np.random.Generator, items: Sequence[str]) -> str:
    return items[int(rng.integers(len(items)))]


def plan_clip(rng: np.random.Generator, *, seconds: float = 10.0, style: str | None = None) -> ClipPlan:
    """Draw the high-level decisions of one clip.

    Args:
        rng: the clip's random generator.
        seconds: clip length in seconds (> 0).
        style: force a style by name; ``None`` draws one by the styles' weights.

    Returns:
        The :class:`ClipPlan`.

    Raises:
        ConfigError: on an unknown style or a non-positive length.
    """
    if not seconds > 0:
        raise ConfigError(f"clip length must be positive seconds, got {seconds}")
    if style is None:
        weights = np.asarray([s.weight for s in STYLES])
        st = STYLES[int(rng.choice(len(STYLES), p=weights / weights.sum()))]
    else:
        st = get_style(style)
    beats_per_bar = METERS[st.meter][0]
    bpm = int(rng.integers(st.bpm[0], st.bpm[1] + 1))
    tonic = int(rng.integers(12))
    mode = _choose(rng, st.modes)
    dynamics = _choose(rng, st.dynamics)
    swing = float(rng.uniform(*st.swing)) if st.swing[1] > 0 else 0.0
    progs = progressions_for(st, mode)
    progression = progs[int(rng.integers(len(progs)))]
    bar_seconds = beats_per_bar * 60.0 / bpm
    bars = math.ceil(seconds / bar_seconds) + 1

    # Alternative parts (same group): draw exactly one of each group up front.
    group_pick: dict[str, int] = {}
    for g in sorted({p.group for p in st.parts if p.group}):
        members = [i for i, p in enumerate(st.parts) if p.group == g]
        w = np.asarray([st.parts[i].prob for i in members])
        group_pick[g] = members[int(rng.choice(len(members), p=w / w.sum()))]
    parts: list[PartPlan] = []
    chosen: dict[str, str] = {}
    channel = 0
    for i, spec in enumerate(st.parts):
        if spec.group:
            if group_pick[spec.group] != i:
                continue
        elif spec.prob < 1.0 and rng.random() >= spec.prob:
            continue
        name = _pick(rng, spec.instruments)
        needs_chords = spec.role in ("chords", "pad")
        if name.startswith("="):
            name = chosen.get(name[1:], "")
            if not name or (needs_chords and not INSTRUMENTS[name].polyphonic):
                # The referenced role is absent or cannot play chords: draw among the plain candidates.
                plain = [n for n in spec.instruments if not n.startswith("=")]
                if not plain:
                    continue
                name = _pick(rng, plain)
        inst = instrument(name)
        if needs_chords and not inst.polyphonic:
            raise ConfigError(f"style {st.name!r}: {name!r} cannot play a {spec.role} part (one note at a time)")
        pattern = _pick(rng, spec.patterns) if spec.patterns else ""
        center = min(max(spec.center, inst.low + 5), inst.high - 5)
        parts.append(PartPlan(spec.role, name, inst.program, channel, pattern, center, spec))
        chosen.setdefault(spec.role, name)
        channel += 1
        if channel == DRUM_CHANNEL:
            channel += 1
    groove: int | None = None
    if st.grooves and (st.drum_prob >= 1.0 or rng.random() < st.drum_prob):
        groove = int(rng.integers(len(st.grooves)))
    return ClipPlan(
        style=st.name,
        meter=st.meter,
        bpm=bpm,
        tonic=tonic,
        mode=mode,
        dynamics=dynamics,
        swing=swing,
        progression=tuple(progression),
        bars=bars,
        parts=tuple(parts),
        groove=groove,
        seconds=float(seconds),
    )


# ----------------------------------------------------------------------------------------------------- harmony


@dataclass(frozen=True)
class ChordSpan:
    """A chord sounding from ``start`` to ``end`` (beats)."""

    start: float
    end: float
    chord: Chord


def chord_timeline(plan: ClipPlan) -> list[ChordSpan]:
    """The chords of the clip's bars, the progression looped (two symbols in a bar split it in halves)."""
    beats = METERS[plan.meter][0]
    spans: list[ChordSpan] = []
    for bar in range(plan.bars):
        symbols = plan.progression[bar % len(plan.progression)].split()
        width = beats / len(symbols)
        for k, sym in enumerate(symbols):
            spans.append(ChordSpan(bar * beats + k * width, bar * beats + (k + 1) * width, parse_roman(sym)))
    return spans


def _span_at(spans: list[ChordSpan], beat: float) -> int:
    for i, s in enumerate(spans):
        if s.start <= beat + 1e-9 < s.end:
            return i
    return len(spans) - 1


# ------------------------------------------------------------------------------------------------------- parts


def _bar_pattern(pattern: str, bar: int, steps: int) -> str:
    n = max(1, len(pattern) // steps)
    k = bar % n
    return pattern[k * steps : (k + 1) * steps]


def _onsets(bar_pattern: str) -> list[tuple[int, str, int]]:
    """(step, symbol, length in steps) of every onset of a one-bar pattern; ``-`` extends the previous onset."""
    out: list[tuple[int, str, int]] = []
    for i, c in enumerate(bar_pattern):
        if c in ".-":
            continue
        length = 1
        while i + length < len(bar_pattern) and bar_pattern[i + length] == "-":
            length += 1
        out.append((i, c, length))
    return out


def _fit(p: int, lo: int, hi: int) -> int:
    while p < lo:
        p += 12
    while p > hi:
        p -= 12
    return p


class _Writer:
    """Collects notes of one clip with the clip's dynamics, swing and timing humanisation."""

    def __init__(self, plan: ClipPlan, style: Style, rng: np.random.Generator) -> None:
        self.plan = plan
        self.style = style
        self.rng = rng
        self.notes: list[Note] = []
        self.beats_per_bar, self.steps_per_beat, self.qpb = METERS[plan.meter]
        self.step = 1.0 / self.steps_per_beat
        self.base_velocity = DYNAMIC_VELOCITY[plan.dynamics]

    def swing(self, beat: float) -> float:
        """Map a straight position in beats to its swung position."""
        s = self.plan.swing
        if s <= 0 or self.plan.meter == "6/8":
            return beat
        period = 1.0 if self.style.swing_unit == 8 else 0.5
        d = s / 6.0 * period
        k = math.floor(beat / period + 1e-9)
        f = beat - k * period
        half = period / 2
        g = f * (half + d) / half if f < half else half + d + (f - half) * (half - d) / half
        return k * period + g

    def jitter(self) -> float:
        h = self.style.humanize
        return float(np.clip(self.rng.normal(0.0, h), -2.5 * h, 2.5 * h)) if h > 0 else 0.0

    def velocity(self, beat: float, level: int, accent: int = 0) -> int:
        in_bar = beat % self.beats_per_bar
        strength = 8 if in_bar < 1e-6 else (4 if abs(in_bar - round(in_bar)) < 1e-6 else 0)
        bar = int(beat // self.beats_per_bar)
        phrase = (2, 0, 4, 1)[bar % 4]  # gentle swell inside each four-bar phrase
        v = self.base_velocity + level + accent + strength + phrase + int(self.rng.integers(-4, 5))
        return int(min(127, max(12, v)))

    def add(self, channel: int, pitch: int, start: float, dur: float, vel: int, offset: float = 0.0) -> None:
        s = self.swing(start)
        e = self.swing(start + dur)
        if e - s <= 1e-4 or not 0 <= pitch <= 127:
            return
        self.notes.append(Note(channel, int(pitch), s, e - s, int(vel), offset))


_ACCENT = {"X": 14, "x": 0, "o": -22, "u": -10}


def _write_chords(w: _Writer, part: PartPlan, spans: list[ChordSpan]) -> None:
    spec = part.spec
    inst = INSTRUMENTS[part.instrument]
    steps = w.beats_per_bar * w.steps_per_beat
    prev: list[int] | None = None
    for bar in range(w.plan.bars):
        for step, sym, length in _onsets(_bar_pattern(part.pattern, bar, steps)):
            beat = bar * w.beats_per_bar + step * w.step
            chord = spans[_span_at(spans, beat)].chord
            voicing = _voicing(chord, w.plan.tonic, part.center, spec.voices, spec.voicing, prev, inst.low, inst.high)
            prev = voicing
            dur = length * w.step * spec.gate
            vel = w.velocity(beat, spec.level, _ACCENT.get(sym, 0))
            notes = sorted(voicing)
            if sym == "u":
                notes = notes[::-1][:3]
            base = w.jitter()
            for i, p in enumerate(notes):
                w.add(part.channel, p, beat, dur, vel - (2 * i if sym == "u" else 0), base + i * spec.strum)


def _voicing(
    chord: Chord, tonic: int, center: int, voices: int, kind: str, prev: list[int] | None, lo: int, hi: int
) -> list[int]:
    if kind == "power":
        root = _fit(nearest_pitch((tonic + chord.root) % 12, center - 3), lo, hi - 12)
        return [root, root + 7, root + 12]
    if prev is not None and abs(float(np.mean(prev)) - center) > 5:
        prev = None
    if kind == "open":
        upper = voice_chord(chord, tonic, center + 4, max(1, voices - 1), prev[1:] if prev else None)
        root = _fit(nearest_pitch((tonic + chord.root) % 12, center - 10), lo, hi)
        return sorted({root, *(_fit(p, lo, hi) for p in upper)})
    return sorted({_fit(p, lo, hi) for p in voice_chord(chord, tonic, center, voices, prev)})


def _write_arp(w: _Writer, part: PartPlan, spans: list[ChordSpan]) -> None:
    spec = part.spec
    inst = INSTRUMENTS[part.instrument]
    steps = w.beats_per_bar * w.steps_per_beat
    prev: list[int] | None = None
    last_span = -1
    voicing: list[int] = []
    for bar in range(w.plan.bars):
        for step, sym, length in _onsets(_bar_pattern(part.pattern, bar, steps)):
            beat = bar * w.beats_per_bar + step * w.step
            si = _span_at(spans, beat)
            if si != last_span:
                voicing = _voicing(
                    spans[si].chord, w.plan.tonic, part.center, spec.voices, "close", prev, inst.low, inst.high
                )
                prev, last_span = voicing, si
            k = int(sym)
            pitch = voicing[k] if k < len(voicing) else voicing[k - len(voicing)] + 12
            # Arpeggios ring: each note lasts until the next onset or a beat, whichever is longer.
            dur = max(length * w.step, 1.0) * spec.gate
            w.add(part.channel, _fit(pitch, inst.low, inst.high), beat, dur, w.velocity(beat, spec.level), w.jitter())


def _chord_tone(chord: Chord, index: int, fallback: int) -> int:
    """Interval of the chord's 3rd (index 1), 5th (2) or 7th (3) above its root, or ``fallback``."""
    wanted = {1: (3, 4), 2: (6, 7, 8), 3: (9, 10, 11)}[index]
    for i in chord.intervals:
        if i % 12 in wanted:
            return i % 12
    return fallback


def _scale_step(tonic: int, mode: str, root_pc: int, steps_up: int) -> int:
    """Semitones above ``root_pc`` of the scale tone ``steps_up`` scale steps above it (root snapped into the scale)."""
    pcs = sorted({(tonic + s) % 12 for s in MODES[mode]})
    rel = sorted((pc - root_pc) % 12 for pc in pcs)
    if 0 not in rel:
        rel = sorted({0, *rel})
    idx = steps_up % len(rel)
    return rel[idx] + 12 * (steps_up // len(rel))


def _bass_pitch(sym: str, chord: Chord, next_chord: Chord, plan: ClipPlan, root: int) -> int:
    if sym == "1" or sym == "x":
        return root
    if sym == "8":
        return root + 12
    if sym == "3":
        return root + _chord_tone(chord, 1, _scale_step(plan.tonic, plan.mode, (plan.tonic + chord.root) % 12, 2))
    if sym == "5":
        return root + _chord_tone(chord, 2, 7)
    if sym == "7":
        return root + _chord_tone(chord, 3, _scale_step(plan.tonic, plan.mode, (plan.tonic + chord.root) % 12, 6))
    if sym in "246":
        return root + _scale_step(plan.tonic, plan.mode, (plan.tonic + chord.root) % 12, int(sym) - 1)
    if sym == "a":
        target = nearest_pitch((plan.tonic + next_chord.root) % 12, root)
        return target - 1
    raise ConfigError(f"unknown bass pattern symbol {sym!r}")


def _write_bass(w: _Writer, part: PartPlan, spans: list[ChordSpan]) -> None:
    spec = part.spec
    inst = INSTRUMENTS[part.instrument]
    lo, hi = inst.low, inst.high
    if part.pattern == "W":
        _write_walking(w, part, spans, lo, hi)
        return
    steps = w.beats_per_bar * w.steps_per_beat
    for bar in range(w.plan.bars):
        for step, sym, length in _onsets(_bar_pattern(part.pattern, bar, steps)):
            beat = bar * w.beats_per_bar + step * w.step
            si = _span_at(spans, beat)
            chord = spans[si].chord
            nxt = spans[min(si + 1, len(spans) - 1)].chord
            root = _fit(nearest_pitch((w.plan.tonic + chord.root) % 12, part.center), lo, hi)
            pitch = _fit(_bass_pitch(sym, chord, nxt, w.plan, root), lo, hi)
            if sym == "x":
                dur, vel = 0.5 * w.step, w.velocity(beat, spec.level, -30)
            else:
                dur, vel = length * w.step * spec.gate, w.velocity(beat, spec.level, 4 if step == 0 else 0)
            w.add(part.channel, pitch, beat, dur, vel, w.jitter())


def _write_walking(w: _Writer, part: PartPlan, spans: list[ChordSpan], lo: int, hi: int) -> None:
    """A walking bass: root on each chord's first beat, chord / scale tones toward the next root, chromatic approach."""
    plan = w.plan
    scale = scale_pitches(plan.tonic, plan.mode, lo, hi)
    total_beats = plan.bars * w.beats_per_bar
    prev = _fit(nearest_pitch((plan.tonic + spans[0].chord.root) % 12, part.center), lo, hi)
    beat = 0
    while beat < total_beats:
        si = _span_at(spans, beat)
        span = spans[si]
        nxt = spans[min(si + 1, len(spans) - 1)]
        n_beats = max(1, round(span.end - beat))
        root = _fit(nearest_pitch((plan.tonic + span.chord.root) % 12, prev), lo + 2, hi - 7)
        target = _fit(nearest_pitch((plan.tonic + nxt.chord.root) % 12, root), lo + 1, hi - 1)
        line = [root]
        tones = [root + i for i in span.chord.intervals]
        for k in range(1, n_beats):
            if k == n_beats - 1:
                line.append(target + (1 if w.rng.random() < 0.5 else -1))  # chromatic approach
                continue
            toward = 1 if target >= line[-1] else -1
            options = [p for p in (*tones, *scale) if 0 < (p - line[-1]) * toward <= 5]
            line.append(_pick_int(w.rng, options) if options else line[-1] + 2 * toward)
        for k, p in enumerate(line):
            b = beat + k
            w.add(part.channel, _fit(p, lo, hi), b, 0.9, w.velocity(b, part.spec.level, 6 if k == 0 else 0), w.jitter())
        prev = line[-1]
        beat += n_beats


def _pick_int(rng: np.random.Generator, items: Sequence[int]) -> int:
    return int(items[int(rng.integers(len(items)))])


def _write_pad(w: _Writer, part: PartPlan, spans: list[ChordSpan]) -> None:
    spec = part.spec
    inst = INSTRUMENTS[part.instrument]
    prev: list[int] | None = None
    i = 0
    while i < len(spans):
        j = i
        while j + 1 < len(spans) and spans[j + 1].chord == spans[i].chord:
            j += 1
        voicing = _voicing(spans[i].chord, w.plan.tonic, part.center, spec.voices, "close", prev, inst.low, inst.high)
        prev = voicing
        start, end = spans[i].start, spans[j].end
        vel = w.velocity(start, spec.level)
        for p in voicing:
            w.add(part.channel, p, start, (end - start) * 0.98, vel)
        i = j + 1


def _melody_range(part: PartPlan) -> tuple[int, int]:
    inst = INSTRUMENTS[part.instrument]
    return max(inst.low, part.center - 9), min(inst.high, part.center + 12)


def _write_melody(w: _Writer, part: PartPlan, spans: list[ChordSpan]) -> list[Note]:
    """A phrased melody: four-bar phrases (motif, answer, motif in sequence, cadence), chord tones on the beats."""
    plan = w.plan
    lo, hi = _melody_range(part)
    scale = scale_pitches(plan.tonic, plan.mode, lo, hi)
    cells = MELODY_CELLS[(plan.meter, part.pattern)]
    endings = ENDING_CELLS[plan.meter]
    rng = w.rng
    start_count = len(w.notes)
    prev = min(scale, key=lambda p: abs(p - (part.center - 2)))
    phrase_rhythm: list[str] = []
    motif: list[tuple[float, int]] = []  # (offset in beats within the bar, semitones above the bar's chord root)
    for bar in range(plan.bars):
        pos = bar % 4
        if pos == 0:
            if not phrase_rhythm or rng.random() < 0.5:
                a, b = _pick(rng, cells), _pick(rng, cells)
                phrase_rhythm = [a, b, a, _pick(rng, endings)]
            peak = int(rng.integers(4, 10))
            base = part.center - int(rng.integers(2, 6))
        cell = phrase_rhythm[pos]
        bar_start = bar * w.beats_per_bar
        bar_root = (plan.tonic + spans[_span_at(spans, bar_start)].chord.root) % 12
        onsets = _onsets(cell)
        for k, (step, _sym, length) in enumerate(onsets):
            beat = bar_start + step * w.step
            chord = spans[_span_at(spans, beat)].chord
            tones = [p for p in range(lo, hi + 1) if p % 12 in chord.pitch_classes(plan.tonic)]
            strong = abs(beat - round(beat)) < 1e-6 or length * w.step >= 1.0
            phase = (pos * w.beats_per_bar + step * w.step) / (4 * w.beats_per_bar)
            target = base + peak * math.sin(math.pi * min(1.0, phase * 1.15))
            if pos == 2 and motif and k < len(motif) and abs(motif[k][0] - step * w.step) < 1e-6:
                # Sequence: the motif's shape over the new chord root, snapped to the scale / chord.
                want = nearest_pitch((bar_root + motif[k][1]) % 12, prev)
                pool = tones if strong else scale
                pitch = min(pool, key=lambda p: abs(p - want)) if pool else prev
            elif pos == 3 and k == len(onsets) - 1:
                pcs = chord.pitch_classes(plan.tonic)
                final = [p for p in tones if p % 12 in (pcs[0], pcs[1 % len(pcs)])]
                pitch = min(final or tones or [prev], key=lambda p: abs(p - prev) + 0.3 * abs(p - target))
            else:
                pool = tones if strong else scale
                pool = [p for p in pool if abs(p - prev) <= 9] or pool
                cost = np.asarray([abs(p - prev) + 0.6 * abs(p - target) + (3.0 if p == prev else 0.0) for p in pool])
                cost = cost + rng.gumbel(0.0, 1.2, size=len(pool))
                pitch = pool[int(np.argmin(cost))] if pool else prev
            if pos == 0:
                if k == 0:
                    motif = []
                motif.append((step * w.step, (pitch - bar_root) % 12))
            dur = length * w.step * (0.95 if length > 1 else 0.85)
            accent = 6 if strong else 0
            w.add(
                part.channel,
                pitch,
                beat,
                dur,
                w.velocity(beat, part.spec.level + (pitch - part.center) // 3, accent),
                w.jitter(),
            )
            prev = pitch
    return w.notes[start_count:]


def _write_harmony(w: _Writer, part: PartPlan, melody: list[Note]) -> None:
    """Double the melody a diatonic third or sixth below, inside the instrument's range."""
    inst = INSTRUMENTS[part.instrument]
    full = scale_pitches(w.plan.tonic, w.plan.mode, 0, 127)
    down = 2 if part.pattern == "3" else 5
    for n in melody:
        idx = int(np.searchsorted(full, n.pitch))
        if idx < len(full) and full[idx] == n.pitch:
            p = full[max(0, idx - down)]
        else:
            p = n.pitch - (4 if down == 2 else 9)
        p = _fit(p, inst.low, inst.high)
        w.notes.append(Note(part.channel, p, n.start, n.dur, max(12, n.velocity - 8), n.offset))


def _write_drums(w: _Writer, groove: Groove) -> None:
    steps = w.beats_per_bar * w.steps_per_beat
    vel = {"X": 112, "x": 92, "o": 52}
    shift = {"soft": -24, "medium": 0, "loud": 12}[w.plan.dynamics]
    for bar in range(w.plan.bars):
        hits: list[tuple[int, str, str]] = []
        for name, pattern in groove.patterns.items():
            for step, sym, _ in _onsets(_bar_pattern(pattern, bar, steps)):
                hits.append((step, name, sym))
        if groove.fills and bar % 4 == 3:
            fill_from = steps - w.steps_per_beat
            hits = [h for h in hits if h[0] < fill_from or h[1] == "kick"]
            toms = ("snare", "tom_hi", "tom_mid", "tom_low", "tom_floor", "tom_floor")
            for i, step in enumerate(range(fill_from, steps)):
                hits.append((step, toms[min(len(toms) - 1, i * len(toms) // w.steps_per_beat)], "x"))
        if groove.fills and bar % 4 == 0:
            hits.append((0, "crash", "x"))
        for step, name, sym in sorted(hits):
            beat = bar * w.beats_per_bar + step * w.step
            v = int(min(127, max(10, vel[sym] + shift + int(w.rng.integers(-5, 6)))))
            w.add(DRUM_CHANNEL, DRUM_NOTES[name], beat, w.step * 0.9, v, w.jitter())


def compose(plan: ClipPlan, rng: np.random.Generator) -> list[Note]:
    """Write every part of a planned clip.

    Args:
        plan: the clip plan.
        rng: the clip's random generator (continues the stream used by :func:`plan_clip`).

    Returns:
        All notes (pitched parts and drums), sorted by onset then channel then pitch.
    """
    style = get_style(plan.style)
    w = _Writer(plan, style, rng)
    spans = chord_timeline(plan)
    melody: list[Note] = []
    for part in plan.parts:
        if part.role == "melody":
            melody = _write_melody(w, part, spans)
        elif part.role == "harmony":
            _write_harmony(w, part, melody)
        elif part.role == "chords":
            _write_chords(w, part, spans)
        elif part.role == "arp":
            _write_arp(w, part, spans)
        elif part.role == "bass":
            _write_bass(w, part, spans)
        elif part.role == "pad":
            _write_pad(w, part, spans)
        else:
            raise ConfigError(f"style {plan.style!r}: unknown part role {part.role!r}")
    groove = plan.groove_spec
    if groove is not None:
        _write_drums(w, groove)
    return sorted(w.notes, key=lambda n: (n.start, n.channel, n.pitch))


# ----------------------------------------------------------------------------------------------------------- MIDI

_MIDO_KEYS_MAJOR = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_MIDO_KEYS_MINOR = ("Cm", "C#m", "Dm", "Ebm", "Em", "Fm", "F#m", "Gm", "G#m", "Am", "Bbm", "Bm")


def to_midi(plan: ClipPlan, notes: Sequence[Note]) -> mido.MidiFile:
    """A type-1 MIDI file of the notes: a conductor track (tempo, meter, key) and one track per channel.

    Notes are cut at the clip's end; overlapping notes of the same pitch on one channel are shortened so every
    note-on has its own note-off.
    """
    beats_per_bar, _, qpb = METERS[plan.meter]
    quarter_bpm = plan.bpm * qpb
    ticks_per_beat = TPQ * qpb
    ticks_per_second = quarter_bpm / 60.0 * TPQ
    end_tick = round(plan.seconds * ticks_per_second)
    mid = mido.MidiFile(type=1, ticks_per_beat=TPQ)
    conductor = mido.MidiTrack()
    num, den = (6, 8) if plan.meter == "6/8" else (beats_per_bar, 4)
    key = (_MIDO_KEYS_MAJOR if plan.quality == "major" else _MIDO_KEYS_MINOR)[plan.tonic]
    conductor.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(quarter_bpm), time=0))
    conductor.append(mido.MetaMessage("time_signature", numerator=num, denominator=den, time=0))
    conductor.append(mido.MetaMessage("key_signature", key=key, time=0))
    conductor.append(mido.MetaMessage("end_of_track", time=end_tick))
    mid.tracks.append(conductor)

    setups: list[tuple[int, str, int, int, int]] = [
        (p.channel, p.instrument, p.program, p.spec.volume, p.spec.pan) for p in plan.parts
    ]
    groove = plan.groove_spec
    if groove is not None:
        setups.append((DRUM_CHANNEL, f"drums ({groove.kit})", DRUM_KITS[groove.kit].program, 100, 64))
    for channel, name, program, volume, pan in setups:
        events: list[tuple[int, int, int, int]] = []  # (tick, order, pitch, velocity); order 0 = off first
        by_pitch: dict[int, list[tuple[int, int, int]]] = {}
        for n in notes:
            if n.channel != channel:
                continue
            on = max(0, round(n.start * ticks_per_beat + n.offset * ticks_per_second))
            off = max(on + 1, round((n.start + n.dur) * ticks_per_beat + n.offset * ticks_per_second))
            if on >= end_tick:
                continue
            by_pitch.setdefault(n.pitch, []).append((on, min(off, end_tick), n.velocity))
        for pitch, items in by_pitch.items():
            items.sort()
            for i, (on, off, vel) in enumerate(items):
                if i + 1 < len(items):
                    off = min(off, items[i + 1][0])
                if off <= on:
                    continue
                events.append((on, 1, pitch, vel))
                events.append((off, 0, pitch, 0))
        track = mido.MidiTrack()
        track.append(mido.MetaMessage("track_name", name=name, time=0))
        track.append(mido.Message("program_change", channel=channel, program=program, time=0))
        track.append(mido.Message("control_change", channel=channel, control=7, value=volume, time=0))
        track.append(mido.Message("control_change", channel=channel, control=10, value=pan, time=0))
        now = 0
        for tick, order, pitch, vel in sorted(events):
            kind = "note_on" if order == 1 else "note_off"
            track.append(mido.Message(kind, channel=channel, note=pitch, velocity=vel, time=tick - now))
            now = tick
        track.append(mido.MetaMessage("end_of_track", time=max(0, end_tick - now)))
        mid.tracks.append(track)
    return mid


def clip_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of clip ``index`` of a corpus with ``seed`` (independent of worker count)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def compose_clip(seed: int, index: int, *, seconds: float = 10.0, style: str | None = None) -> Composition:
    """Plan, compose and write the MIDI of clip ``index`` of a corpus with ``seed``.

    Args:
        seed: corpus seed.
        index: clip number (0-based).
        seconds: clip length in seconds.
        style: force a style by name (``None``: drawn).

    Returns:
        The :class:`Composition`.
    """
    rng = clip_rng(seed, index)
    plan = plan_clip(rng, seconds=seconds, style=style)
    notes = compose(plan, rng)
    notes = [n for n in notes if n.start * plan.beat_seconds + n.offset < plan.seconds]
    midi = to_midi(plan, notes)
    pitched = [n.pitch for n in notes if n.channel != DRUM_CHANNEL]
    melodic = [n.pitch for n in notes if n.channel in {p.channel for p in plan.parts if p.role == "melody"}]
    drum_keys = {n.pitch for n in notes if n.channel == DRUM_CHANNEL}
    features: dict[str, object] = {
        "register": float(np.mean(melodic or pitched or [60])),
        "drums": sorted(name for name, key in DRUM_NOTES.items() if key in drum_keys),
    }
    return Composition(plan=plan, notes=notes, midi=midi, features=features)
