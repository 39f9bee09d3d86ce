"""Procedural composition: every style composes, the MIDI says what the tags say (programs, tempo, mode, grid)."""

from __future__ import annotations

import io

import mido
import numpy as np
import pytest

from musicsearch.data.synth.compose import TPQ, clip_rng, compose, compose_clip, plan_clip
from musicsearch.data.synth.corpus import describe
from musicsearch.data.synth.instruments import DRUM_CHANNEL, DRUM_KITS, INSTRUMENTS
from musicsearch.data.synth.styles import METERS, STYLES, steps_per_bar
from musicsearch.data.synth.tags import tempo_class
from musicsearch.data.synth.theory import MODES, estimate_key, parse_roman
from musicsearch.errors import ConfigError

PROGRAM_TO_INSTRUMENT = {i.program: i.name for i in INSTRUMENTS.values()}
KIT_BY_PROGRAM = {k.program: k for k in DRUM_KITS.values()}


def midi_bytes(mid: mido.MidiFile) -> bytes:
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def sounding_programs(mid: mido.MidiFile) -> dict[int, int]:
    """Channel -> program of every channel with a note-on, read back from the MIDI messages."""
    program: dict[int, int] = {}
    sounding: set[int] = set()
    for track in mid.tracks:
        for msg in track:
            if msg.type == "program_change":
                program[msg.channel] = msg.program
            elif msg.type == "note_on" and msg.velocity > 0:
                sounding.add(msg.channel)
    return {c: program.get(c, 0) for c in sounding}


def note_events(mid: mido.MidiFile) -> list[tuple[float, float, int, int]]:
    """(onset s, duration s, channel, pitch) of every note, via mido's own tempo handling."""
    now, started, out = 0.0, {}, []
    for msg in mid:
        now += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            started[(msg.channel, msg.note)] = now
        elif msg.type in ("note_on", "note_off") and (msg.channel, msg.note) in started:
            t0 = started.pop((msg.channel, msg.note))
            out.append((t0, now - t0, msg.channel, msg.note))
    return out


def test_style_catalogue_is_rich_and_well_formed() -> None:
    assert len(STYLES) >= 12
    assert len({s.name for s in STYLES}) == len(STYLES)
    used = {n for s in STYLES for p in s.parts for n in p.instruments if not n.startswith("=")}
    assert len(used) >= 25, "at least 25 General MIDI instruments"
    for s in STYLES:
        steps = steps_per_bar(s.meter)
        assert s.meter in METERS
        assert s.bpm[0] <= s.bpm[1]
        for mode, _ in s.modes:
            assert mode in MODES
        for progs in s.progressions.values():
            for prog in progs:
                for bar in prog:
                    for sym in bar.split():
                        parse_roman(sym)
        for part in s.parts:
            if part.role in ("chords", "arp", "bass"):
                for pat in part.patterns:
                    assert pat == "W" or (len(pat) % steps == 0 and pat), (s.name, pat)
        for g in s.grooves:
            assert g.kit in DRUM_KITS
            for pat in g.patterns.values():
                assert len(pat) % steps == 0, (s.name, pat)


@pytest.mark.parametrize("style", [s.name for s in STYLES])
def test_every_style_composes_a_labelled_clip(style: str) -> None:
    comp = compose_clip(3, 11, seconds=8.0, style=style)
    assert comp.plan.style == style
    assert len(comp.notes) >= 8
    tags, _captions, meta = describe(comp, 3, 11)
    assert style in tags
    assert 6 <= len(tags) <= 15
    # instrument tags are exactly the programs that sound in the MIDI file
    programs = sounding_programs(comp.midi)
    named = {PROGRAM_TO_INSTRUMENT[p] for c, p in programs.items() if c != DRUM_CHANNEL}
    assert named == set(meta["instruments"])
    inst_tags = {t for t in meta["all_tags"] if meta_category(t) == "instrument"}
    expected = set(named)
    if DRUM_CHANNEL in programs:
        kit = KIT_BY_PROGRAM[programs[DRUM_CHANNEL]]
        if set(meta["drums"]) - {"percussion"} - set(meta["percussion"]):
            expected |= set(kit.tags)
        if meta["percussion"]:
            expected.add("percussion")
    assert inst_tags == expected
    # the tempo tag and the MIDI tempo agree
    qpb = METERS[comp.plan.meter][2]
    tempo = next(m.tempo for m in comp.midi.tracks[0] if m.type == "set_tempo")
    assert mido.tempo2bpm(tempo) / qpb == pytest.approx(meta["bpm"], abs=0.01)
    assert tempo_class(meta["bpm"], meta["meter"]) in tags


def meta_category(tag: str) -> str:
    from musicsearch.data.synth.tags import VOCABULARY

    return VOCABULARY[tag]


def test_composition_is_deterministic() -> None:
    a = compose_clip(7, 42)
    b = compose_clip(7, 42)
    c = compose_clip(8, 42)
    assert midi_bytes(a.midi) == midi_bytes(b.midi)
    assert midi_bytes(a.midi) != midi_bytes(c.midi)


def test_mode_tag_matches_the_third_of_the_tonic_chord() -> None:
    """Over the bars where the tonic chord sounds, the major third dominates in major clips, the minor in minor."""
    checked = 0
    for i in range(150):
        comp = compose_clip(5, i, seconds=8.0)
        plan = comp.plan
        spb = plan.beat_seconds
        beats = METERS[plan.meter][0]
        tonic_spans = []
        for bar in range(plan.bars):
            symbols = plan.progression[bar % len(plan.progression)].split()
            for k, sym in enumerate(symbols):
                if parse_roman(sym).root == 0:
                    w = beats / len(symbols)
                    tonic_spans.append(((bar * beats + k * w) * spb, (bar * beats + (k + 1) * w) * spb))
        weight = np.zeros(12)
        for t0, dur, ch, pitch in note_events(comp.midi):
            if ch == DRUM_CHANNEL:
                continue
            overlap = sum(max(0.0, min(t0 + dur, b) - max(t0, a)) for a, b in tonic_spans)
            weight[(pitch - plan.tonic) % 12] += overlap
        if weight[3] + weight[4] == 0:
            continue
        checked += 1
        tags = describe(comp, 5, i)[2]["all_tags"]
        if weight[4] > weight[3]:
            assert "major" in tags and "minor" not in tags, (plan.style, plan.mode, weight[3], weight[4])
        else:
            assert "minor" in tags and "major" not in tags, (plan.style, plan.mode, weight[3], weight[4])
    assert checked >= 140


def test_key_tag_agrees_with_key_finding_on_the_midi() -> None:
    """Krumhansl-Schmuckler key finding on the MIDI recovers the tagged key for most plain major/minor clips."""
    hits = total = 0
    for i in range(200):
        comp = compose_clip(9, i, seconds=10.0)
        if comp.plan.mode not in ("major", "minor", "harmonic minor"):
            continue
        w = np.zeros(12)
        for _, dur, ch, pitch in note_events(comp.midi):
            if ch != DRUM_CHANNEL:
                w[pitch % 12] += dur
        total += 1
        hits += estimate_key(list(w)) == (comp.plan.tonic, comp.plan.quality)
    assert total >= 100
    assert hits / total >= 0.7


@pytest.mark.parametrize("style", ["rock", "house", "techno", "metal", "disco", "march", "funk", "salsa"])
def test_drum_onsets_lie_on_the_grid_of_the_tagged_tempo(style: str) -> None:
    """Every drum hit sits on the sixteenth-note grid of the tagged bpm (within the style's timing jitter)."""
    for index in range(50):  # the first straight (unswung) draw with drums
        comp = compose_clip(2, index, seconds=8.0, style=style)
        meta = describe(comp, 2, index)[2]
        if comp.plan.swing == 0 and meta["drum_kit"] is not None:
            break
    else:
        raise AssertionError(f"no straight {style} clip with drums in 50 draws")
    step = 60.0 / meta["bpm"] / METERS[meta["meter"]][1]
    onsets = np.asarray([t for t, _, ch, _ in note_events(comp.midi) if ch == DRUM_CHANNEL])
    assert len(onsets) >= 8
    off_grid = np.abs(onsets / step - np.round(onsets / step)) * step
    assert off_grid.max() < 0.03
    # and the onset rate is what that tempo implies: at least one hit a beat on average
    assert len(onsets) / 8.0 >= meta["bpm"] / 60.0


def test_plan_rejects_bad_input() -> None:
    rng = clip_rng(0, 0)
    with pytest.raises(ConfigError, match="unknown style"):
        plan_clip(rng, style="polka")
    with pytest.raises(ConfigError, match="positive"):
        plan_clip(rng, seconds=0)


def test_notes_fit_instrument_ranges_and_midi_is_valid() -> None:
    for i in range(40):
        rng = clip_rng(11, i)
        plan = plan_clip(rng, seconds=6.0)
        notes = compose(plan, rng)
        by_channel = {p.channel: INSTRUMENTS[p.instrument] for p in plan.parts}
        for n in notes:
            assert 1 <= n.velocity <= 127
            if n.channel in by_channel:
                inst = by_channel[n.channel]
                assert inst.low - 12 <= n.pitch <= inst.high + 12, (plan.style, inst.name, n.pitch)
        mid = compose_clip(11, i, seconds=6.0).midi
        assert mid.ticks_per_beat == TPQ
        mido.MidiFile(file=io.BytesIO(midi_bytes(mid)))  # re-parses
