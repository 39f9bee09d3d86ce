"""The General MIDI instruments and drum sounds the procedural corpus uses, with their tag names.

Each melodic instrument is one GM program (0-based, as sent in a MIDI program change), named by the words people use
for it ("acoustic guitar", "string ensemble", "electric piano"); that name is its instrument tag. Drum kits are GM
percussion presets (bank 128) on MIDI channel 10 (index 9).
"""

from __future__ import annotations

from dataclasses import dataclass

from musicsearch.errors import ConfigError


@dataclass(frozen=True)
class Instrument:
    """One General MIDI melodic instrument.

    Attributes:
        name: tag name, e.g. ``"acoustic guitar"``.
        program: GM program number, 0-127.
        low: lowest MIDI note it is written for.
        high: highest MIDI note it is written for.
        family: family tag (``"guitar"``, ``"strings"``, ...) or ``None``.
        electronic: a synthesizer sound (gives the ``electronic`` sound tag).
        acoustic: an acoustic instrument (every instrument acoustic gives the ``acoustic`` sound tag).
        polyphonic: can play chords (only these take chord and pad parts).
    """

    name: str
    program: int
    low: int
    high: int
    family: str | None = None
    electronic: bool = False
    acoustic: bool = True
    polyphonic: bool = False


MONOPHONIC = frozenset(
    {
        "harmonica", "tubular bells", "upright bass", "electric bass", "fretless bass", "slap bass", "synth bass",
        "violin", "viola", "cello", "timpani", "trumpet", "trombone", "tuba", "muted trumpet", "french horn",
        "soprano saxophone", "alto saxophone", "tenor saxophone", "baritone saxophone", "oboe", "bassoon",
        "clarinet", "piccolo", "flute", "recorder", "pan flute", "square lead", "synth lead", "bagpipe",
    }
)  # fmt: skip
"""Instruments that play one note at a time (never given chord or pad parts)."""


def _i(
    name: str, program: int, low: int, high: int, family: str | None = None, *, kind: str = "acoustic"
) -> Instrument:
    return Instrument(
        name,
        program,
        low,
        high,
        family,
        electronic=kind == "synth",
        acoustic=kind == "acoustic",
        polyphonic=name not in MONOPHONIC,
    )


INSTRUMENTS: dict[str, Instrument] = {
    i.name: i
    for i in (
        _i("piano", 0, 21, 108),
        _i("electric piano", 4, 28, 103, kind="electric"),
        _i("harpsichord", 6, 29, 89),
        _i("celesta", 8, 60, 108),
        _i("music box", 10, 60, 96),
        _i("vibraphone", 11, 53, 89),
        _i("marimba", 12, 45, 96),
        _i("xylophone", 13, 65, 108),
        _i("tubular bells", 14, 60, 77),
        _i("organ", 16, 36, 96, kind="electric"),
        _i("rock organ", 18, 36, 96, kind="electric"),
        _i("church organ", 19, 24, 96),
        _i("accordion", 21, 41, 89),
        _i("harmonica", 22, 60, 96),
        _i("classical guitar", 24, 40, 83, "guitar"),
        _i("acoustic guitar", 25, 40, 83, "guitar"),
        _i("jazz guitar", 26, 40, 86, "guitar", kind="electric"),
        _i("electric guitar", 27, 40, 88, "guitar", kind="electric"),
        _i("muted guitar", 28, 40, 76, "guitar", kind="electric"),
        _i("overdriven guitar", 29, 40, 88, "guitar", kind="electric"),
        _i("distorted guitar", 30, 40, 88, "guitar", kind="electric"),
        _i("upright bass", 32, 28, 60),
        _i("electric bass", 33, 28, 67, kind="electric"),
        _i("fretless bass", 35, 28, 67, kind="electric"),
        _i("slap bass", 36, 28, 67, kind="electric"),
        _i("synth bass", 38, 24, 60, "synthesizer", kind="synth"),
        _i("violin", 40, 55, 100, "strings"),
        _i("viola", 41, 48, 88, "strings"),
        _i("cello", 42, 36, 76, "strings"),
        _i("tremolo strings", 44, 40, 96, "strings"),
        _i("pizzicato strings", 45, 36, 96, "strings"),
        _i("harp", 46, 24, 103),
        _i("timpani", 47, 40, 55),
        _i("string ensemble", 48, 36, 96, "strings"),
        _i("synth strings", 50, 36, 96, "synthesizer", kind="synth"),
        _i("choir", 52, 48, 81),
        _i("trumpet", 56, 55, 84, "brass"),
        _i("trombone", 57, 40, 72, "brass"),
        _i("tuba", 58, 28, 58, "brass"),
        _i("muted trumpet", 59, 55, 82, "brass"),
        _i("french horn", 60, 41, 77, "brass"),
        _i("brass section", 61, 41, 84, "brass"),
        _i("synth brass", 62, 36, 96, "synthesizer", kind="synth"),
        _i("soprano saxophone", 64, 56, 87, "saxophone"),
        _i("alto saxophone", 65, 49, 80, "saxophone"),
        _i("tenor saxophone", 66, 44, 75, "saxophone"),
        _i("baritone saxophone", 67, 36, 68, "saxophone"),
        _i("oboe", 68, 58, 91, "woodwinds"),
        _i("bassoon", 70, 34, 72, "woodwinds"),
        _i("clarinet", 71, 50, 91, "woodwinds"),
        _i("piccolo", 72, 74, 108, "woodwinds"),
        _i("flute", 73, 60, 96, "woodwinds"),
        _i("recorder", 74, 60, 91, "woodwinds"),
        _i("pan flute", 75, 60, 96, "woodwinds"),
        _i("square lead", 80, 48, 96, "synthesizer", kind="synth"),
        _i("synth lead", 81, 48, 96, "synthesizer", kind="synth"),
        _i("synth pad", 89, 36, 96, "synthesizer", kind="synth"),
        _i("sweep pad", 95, 36, 96, "synthesizer", kind="synth"),
        _i("sitar", 104, 48, 84),
        _i("banjo", 105, 48, 84),
        _i("kalimba", 108, 60, 84),
        _i("bagpipe", 109, 57, 79),
        _i("steel drums", 114, 52, 88),
    )
}
"""Melodic instruments by tag name."""

DRUM_CHANNEL = 9
"""MIDI channel (0-based) of the GM percussion kit."""

DRUM_NOTES: dict[str, int] = {
    "kick": 36,
    "kick2": 35,
    "rim": 37,
    "snare": 38,
    "clap": 39,
    "esnare": 40,
    "tom_floor": 41,
    "hat": 42,
    "tom_low": 43,
    "pedal_hat": 44,
    "tom_mid": 47,
    "open_hat": 46,
    "tom_hi": 50,
    "crash": 49,
    "ride": 51,
    "ride_bell": 53,
    "tambourine": 54,
    "cowbell": 56,
    "bongo_hi": 60,
    "bongo_lo": 61,
    "conga_mute": 62,
    "conga_hi": 63,
    "conga_lo": 64,
    "timbale_hi": 65,
    "timbale_lo": 66,
    "cabasa": 69,
    "shaker": 70,
    "claves": 75,
    "woodblock": 76,
    "triangle": 81,
}
"""GM percussion key numbers by short name."""

HAND_PERCUSSION = frozenset(
    {
        "tambourine",
        "cowbell",
        "bongo_hi",
        "bongo_lo",
        "conga_mute",
        "conga_hi",
        "conga_lo",
        "timbale_hi",
        "timbale_lo",
        "cabasa",
        "shaker",
        "claves",
        "woodblock",
        "triangle",
    }
)
"""Drum names that are hand / auxiliary percussion (the ``percussion`` tag)."""

KIT_NOTES = frozenset({"kick", "kick2", "snare", "esnare", "rim", "clap", "hat", "pedal_hat", "open_hat", "ride"})
"""Drum names that make a drum kit groove (the ``drums`` / ``drum machine`` tags)."""


@dataclass(frozen=True)
class DrumKit:
    """A GM percussion preset (bank 128).

    Attributes:
        name: short name.
        program: preset number within bank 128.
        tags: instrument tags a groove on this kit earns (besides ``percussion``).
        electronic: a drum machine (gives the ``electronic`` sound tag).
    """

    name: str
    program: int
    tags: tuple[str, ...]
    electronic: bool = False


DRUM_KITS: dict[str, DrumKit] = {
    k.name: k
    for k in (
        DrumKit("standard", 0, ("drums",)),
        DrumKit("room", 8, ("drums",)),
        DrumKit("power", 16, ("drums",)),
        DrumKit("electronic", 24, ("drum machine",), electronic=True),
        DrumKit("tr808", 25, ("drum machine", "808"), electronic=True),
        DrumKit("jazz", 32, ("drums",)),
        DrumKit("brush", 40, ("drums", "brushes")),
        DrumKit("orchestra", 48, ("drums",)),
    )
}
"""Drum kits by short name."""


def instrument(name: str) -> Instrument:
    """Look up an instrument by tag name.

    Raises:
        ConfigError: if the name is unknown.
    """
    try:
        return INSTRUMENTS[name]
    except KeyError:
        raise ConfigError(f"unknown instrument {name!r}; known: {sorted(INSTRUMENTS)}") from None
