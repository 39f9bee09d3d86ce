"""Musical styles as data: meter, tempo range, modes, chord progressions, parts with their patterns, drum grooves.

Patterns are strings on a sixteenth-note grid, one bar long (16 steps in 4/4, 12 in 3/4 and 6/8, 8 in 2/4) or a
whole number of bars long (cycled bar by bar). Shared symbols: ``.`` rest, ``-`` hold the previous note.

- chords (``role="chords"``): ``x`` chord, ``X`` accented chord, ``o`` soft chord, ``u`` up-strum (top notes,
  high to low, softer).
- arpeggio (``role="arp"``): a digit ``k`` plays the k-th note (low to high) of the current chord voicing; a digit
  past the last note plays the note ``k - n`` an octave higher.
- bass (``role="bass"``, also timpani and other bass-like parts): ``1`` root, ``3`` / ``5`` / ``7`` chord third /
  fifth / seventh (scale tone when the chord has none), ``2`` / ``4`` / ``6`` scale steps above the root, ``8`` root
  an octave up, ``a`` chromatic approach to the next chord's root, ``x`` muted ghost note; the single letter ``W``
  is a walking bass line (quarter notes toward the next chord).
- melody (``role="melody"``): the pattern names a rhythmic density (``sparse``, ``medium``, ``busy``, ``hymn``).
- harmony (``role="harmony"``): doubles the melody a diatonic third (``3``) or sixth (``6``) below.
- pad (``role="pad"``): one sustained voicing per chord; patterns unused.
- drums: one pattern per drum name (:data:`~musicsearch.data.synth.instruments.DRUM_NOTES`) with ``X`` accent,
  ``x`` hit, ``o`` ghost.

An instrument entry ``"=melody"`` (or ``"=chords"``, ``"=arp"``) reuses the instrument of that earlier role, so one
piano can play both melody and accompaniment (a solo piece).
"""

from __future__ import annotations

from dataclasses import dataclass

from musicsearch.errors import ConfigError

METERS: dict[str, tuple[int, int, float]] = {
    "4/4": (4, 4, 1.0),
    "3/4": (3, 4, 1.0),
    "2/4": (2, 4, 1.0),
    "6/8": (2, 6, 1.5),
}
"""Meter -> (felt beats per bar, grid steps per beat, quarter notes per felt beat). In 6/8 the beat is the dotted
quarter, so a 6/8 tempo counts dotted quarters per minute."""


def steps_per_bar(meter: str) -> int:
    """Grid steps (sixteenth notes) in one bar of ``meter``."""
    beats, spb, _ = METERS[meter]
    return beats * spb


@dataclass(frozen=True)
class Part:
    """One voice of an arrangement (see the module docstring for the pattern language).

    Attributes:
        role: ``melody``, ``harmony``, ``chords``, ``arp``, ``bass`` or ``pad``.
        instruments: candidate instrument tag names (repeat a name to weight it), or ``"=role"``.
        patterns: candidate patterns (one is drawn per clip).
        center: register centre, MIDI note.
        voices: notes per chord voicing.
        voicing: ``close``, ``power`` (root, fifth, octave) or ``open`` (root below a close voicing).
        prob: probability that the part plays at all.
        gate: sounding fraction of each note's grid length (below 1 = detached).
        strum: seconds between successive strings of a strummed chord.
        level: velocity offset against the clip's dynamic level.
        volume: MIDI channel volume (CC 7).
        pan: MIDI pan (CC 10), 0 left .. 127 right.
        group: parts sharing a non-empty group are alternatives: exactly one of them plays, drawn with
            probabilities proportional to their ``prob``.
    """

    role: str
    instruments: tuple[str, ...]
    patterns: tuple[str, ...] = ()
    center: int = 60
    voices: int = 3
    voicing: str = "close"
    prob: float = 1.0
    gate: float = 0.9
    strum: float = 0.0
    level: int = 0
    volume: int = 100
    pan: int = 64
    group: str = ""


@dataclass(frozen=True)
class Groove:
    """A drum groove on one GM kit: a pattern per drum name."""

    kit: str
    patterns: dict[str, str]
    fills: bool = True


@dataclass(frozen=True)
class Style:
    """A musical style.

    Attributes:
        name: style tag.
        genres: genre tags every clip of the style gets (the first is ``name``).
        meter: time signature, a key of :data:`METERS`.
        bpm: inclusive tempo range in felt beats per minute.
        modes: (mode, weight) choices; see :data:`~musicsearch.data.synth.theory.MODES`.
        progressions: mode name (or ``"major"`` / ``"minor"`` quality) -> progressions, each a tuple of bars, each
            bar one chord or two chords separated by a space (Roman numerals).
        parts: the arrangement.
        grooves: drum grooves to choose from (empty: no drums).
        drum_prob: probability that drums play.
        swing: (low, high) swing amount drawn per clip; 0 straight, 1 triplet feel.
        swing_unit: 8 (swung eighths) or 16 (swung sixteenths).
        dynamics: (``soft`` / ``medium`` / ``loud``, weight) choices.
        reverb: wet level of the room.
        rt60: reverberation time in seconds.
        humanize: standard deviation of timing jitter in seconds (0 for machine-tight styles).
        moods: moods typical of the style (kept only when the clip's features allow them).
        syncopated: the style's patterns accent off-beats (the ``syncopated`` tag).
        orchestral: four or more instruments make an ``orchestra`` rather than an ``ensemble``.
        weight: relative frequency of the style in a corpus.
    """

    name: str
    genres: tuple[str, ...]
    meter: str
    bpm: tuple[int, int]
    modes: tuple[tuple[str, float], ...]
    progressions: dict[str, tuple[tuple[str, ...], ...]]
    parts: tuple[Part, ...]
    grooves: tuple[Groove, ...] = ()
    drum_prob: float = 1.0
    swing: tuple[float, float] = (0.0, 0.0)
    swing_unit: int = 8
    dynamics: tuple[tuple[str, float], ...] = (("medium", 1.0),)
    reverb: float = 0.2
    rt60: float = 1.2
    humanize: float = 0.008
    moods: tuple[str, ...] = ()
    syncopated: bool = False
    orchestral: bool = False
    weight: float = 1.0


def _p(*bars: str) -> tuple[str, ...]:
    return bars


ROCK_MAJOR = (_p("I", "V", "vi", "IV"), _p("I", "IV", "V", "IV"), _p("vi", "IV", "I", "V"), _p("I", "IV", "vi", "V"))
ROCK_MINOR = (_p("i", "bVI", "bIII", "bVII"), _p("i", "bVII", "bVI", "bVII"), _p("i", "iv", "bVII", "bIII"))
BACKBEAT = {"kick": "x.......x.x.....", "snare": "....x.......x...", "hat": "x.x.x.x.x.x.x.x."}

STYLES: tuple[Style, ...] = (
    Style(
        name="rock",
        genres=("rock",),
        meter="4/4",
        bpm=(100, 150),
        modes=(("major", 0.5), ("mixolydian", 0.2), ("minor", 0.3)),
        progressions={
            "major": ROCK_MAJOR,
            "mixolydian": (_p("I", "bVII", "IV", "I"), _p("I", "I", "bVII", "IV")),
            "minor": ROCK_MINOR,
        },
        parts=(
            Part(
                "melody",
                ("overdriven guitar", "electric guitar", "piano", "rock organ", "synth lead", "sitar"),
                ("medium",),
                67,
            ),
            Part(
                "chords",
                ("overdriven guitar", "distorted guitar", "electric guitar"),
                ("x-x-x-x-x-x-x-x-", "X-x-x-x-X-x-x-x-", "x-----x-----x---", "x---x---x---x---"),
                50,
                voicing="power",
                strum=0.005,
                gate=0.8,
                pan=40,
            ),
            Part(
                "chords",
                ("piano", "rock organ", "electric piano"),
                ("x-------x-------", "x---x---x---x---"),
                64,
                3,
                prob=0.35,
                level=-10,
                pan=90,
                volume=85,
            ),
            Part("bass", ("electric bass",), ("1-1-1-1-1-1-1-1-", "1---1---1-1-5---", "1-1-1-1-5-5-8-5-"), 40),
        ),
        grooves=(
            Groove("standard", BACKBEAT),
            Groove("room", {"kick": "x......xx.x.....", "snare": "....x.......x...", "hat": "x.x.x.x.x.x.x.x."}),
            Groove("power", {"kick": "x.......x.x.....", "snare": "....X.......X...", "ride": "x.x.x.x.x.x.x.x."}),
        ),
        dynamics=(("medium", 0.5), ("loud", 0.5)),
        reverb=0.15,
        moods=("energetic", "uplifting"),
        weight=1.6,
    ),
    Style(
        name="metal",
        genres=("metal", "heavy metal"),
        meter="4/4",
        bpm=(130, 190),
        modes=(("minor", 0.5), ("phrygian", 0.25), ("harmonic minor", 0.25)),
        progressions={
            "minor": (_p("i", "bVI", "bVII", "i"), _p("i", "i", "bVI", "bVII"), _p("i bIII", "bVII bVI", "i", "bVII")),
            "phrygian": (_p("i", "bII", "i", "bVII"), _p("i", "i", "bII", "bII")),
            "harmonic minor": (_p("i", "i", "bVI", "V"), _p("i", "iv", "bVI", "V")),
        },
        parts=(
            Part("melody", ("distorted guitar", "overdriven guitar", "synth lead"), ("busy",), 69, pan=90),
            Part(
                "chords",
                ("distorted guitar",),
                ("x.x.x.x.x.x.x.x.", "xxxxxxxxxxxxxxxx", "X.x.x.X.x.x.x.x.", "x.xxx.xxx.xxx.xx"),
                45,
                voicing="power",
                gate=0.6,
                strum=0.003,
                pan=35,
            ),
            Part("bass", ("electric bass",), ("1-1-1-1-1-1-1-1-", "1111111111111111"), 36),
        ),
        grooves=(
            Groove("power", {"kick": "x.x.x.x.x.x.x.x.", "snare": "....x.......x...", "ride": "x...x...x...x..."}),
            Groove("standard", {"kick": "xxxxxxxxxxxxxxxx", "snare": "....x.......x...", "hat": "x.x.x.x.x.x.x.x."}),
            Groove("power", {"kick": "x.x...x.x.x...x.", "snare": "..x...x...x...x.", "crash": "x...x...x...x..."}),
        ),
        dynamics=(("loud", 1.0),),
        reverb=0.1,
        humanize=0.004,
        moods=("aggressive", "dark", "epic", "tense"),
        weight=0.9,
    ),
    Style(
        name="punk",
        genres=("punk", "rock"),
        meter="4/4",
        bpm=(160, 200),
        modes=(("major", 0.7), ("mixolydian", 0.3)),
        progressions={
            "major": (_p("I", "IV", "V", "IV"), _p("I", "V", "vi", "IV"), _p("I", "I", "IV", "V")),
            "mixolydian": (_p("I", "bVII", "IV", "I"),),
        },
        parts=(
            Part("melody", ("overdriven guitar", "distorted guitar"), ("medium",), 67, pan=90),
            Part(
                "chords",
                ("distorted guitar", "overdriven guitar"),
                ("x-x-x-x-x-x-x-x-", "xxxxxxxxxxxxxxxx"),
                50,
                voicing="power",
                gate=0.8,
                strum=0.004,
                pan=40,
            ),
            Part("bass", ("electric bass",), ("1-1-1-1-1-1-1-1-",), 40),
        ),
        grooves=(
            Groove("standard", {"kick": "x.x...x.x.x...x.", "snare": "....x.......x...", "hat": "x.x.x.x.x.x.x.x."}),
            Groove("room", {"kick": "x.......x.......", "snare": "....x.......x...", "crash": "x.x.x.x.x.x.x.x."}),
        ),
        dynamics=(("loud", 1.0),),
        reverb=0.1,
        moods=("energetic", "aggressive"),
        weight=0.5,
    ),
    Style(
        name="blues",
        genres=("blues",),
        meter="4/4",
        bpm=(70, 120),
        modes=(("mixolydian", 0.7), ("minor", 0.3)),
        progressions={
            "mixolydian": (_p("I7", "IV7", "I7", "I7", "IV7", "IV7", "I7", "I7", "V7", "IV7", "I7", "V7"),),
            "minor": (_p("i7", "iv7", "i7", "i7", "iv7", "iv7", "i7", "i7", "bVI7", "V7", "i7", "V7"),),
        },
        parts=(
            Part(
                "melody",
                ("harmonica", "electric guitar", "tenor saxophone", "overdriven guitar", "piano"),
                ("medium",),
                67,
            ),
            Part(
                "chords",
                ("piano", "organ", "electric guitar"),
                ("x---x---x---x---", "x-x-x-x-x-x-x-x-", "..x...x...x...x."),
                60,
                3,
                gate=0.6,
                level=-8,
                pan=45,
            ),
            Part(
                "bass",
                ("electric bass", "upright bass"),
                ("1-3-5-6-8-6-5-3-", "1---3---5---6---", "1---1---5---6---"),
                40,
            ),
        ),
        grooves=(
            Groove("standard", {"kick": "x.......x.......", "snare": "....x.......x...", "hat": "x.x.x.x.x.x.x.x."}),
            Groove("room", {"kick": "x.......x.......", "snare": "....x.......x...", "ride": "x.x.x.x.x.x.x.x."}),
        ),
        swing=(0.8, 1.0),
        dynamics=(("soft", 0.2), ("medium", 0.6), ("loud", 0.2)),
        moods=("melancholic", "relaxed", "sad", "groovy"),
        weight=1.0,
    ),
    Style(
        name="jazz",
        genres=("jazz",),
        meter="4/4",
        bpm=(110, 200),
        modes=(("major", 0.65), ("minor", 0.35)),
        progressions={
            "major": (
                _p("ii7", "V7", "Imaj7", "Imaj7"),
                _p("Imaj7", "vi7", "ii7", "V7"),
                _p("Imaj7", "IV7", "iii7 VI7", "ii7 V7"),
                _p("iii7", "VI7", "ii7", "V7"),
            ),
            "minor": (_p("iim7b5", "V7", "i7", "i7"), _p("i7", "iv7", "iim7b5 V7", "i7")),
        },
        parts=(
            Part(
                "melody",
                (
                    "tenor saxophone",
                    "alto saxophone",
                    "trumpet",
                    "vibraphone",
                    "jazz guitar",
                    "muted trumpet",
                    "clarinet",
                    "piano",
                    "soprano saxophone",
                ),
                ("busy", "medium"),
                68,
            ),
            Part(
                "chords",
                ("piano", "jazz guitar", "electric piano"),
                ("x-----x.........", "..x.......x.....", "x.........x-....", "......x.......x."),
                62,
                4,
                gate=0.6,
                level=-10,
                pan=45,
            ),
            Part("bass", ("upright bass",), ("W",), 40),
        ),
        grooves=(
            Groove(
                "jazz",
                {
                    "ride": "x...x.x.x...x.x.",
                    "pedal_hat": "....x.......x...",
                    "kick": "o...o...o...o...",
                    "snare": "......o.......o.",
                },
            ),
            Groove("brush", {"ride": "x...x.x.x...x.x.", "pedal_hat": "....x.......x...", "snare": "x.x.x.x.x.x.x.x."}),
        ),
        swing=(0.6, 0.9),
        dynamics=(("soft", 0.35), ("medium", 0.65)),
        reverb=0.25,
        moods=("relaxed", "playful", "melancholic", "romantic"),
        weight=1.3,
    ),
    Style(
        name="bossa nova",
        genres=("bossa nova", "latin", "brazilian"),
        meter="4/4",
        bpm=(120, 145),
        modes=(("major", 0.7), ("minor", 0.3)),
        progressions={
            "major": (
                _p("Imaj7", "Imaj7", "II7", "II7", "ii7", "V7", "Imaj7", "Imaj7"),
                _p("Imaj7", "vi7", "ii7", "V7"),
                _p("Imaj7", "IVmaj7", "iii7", "VI7"),
            ),
            "minor": (_p("i7", "i7", "iv7", "iv7", "iim7b5", "V7", "i7", "i7"), _p("i7", "iv7", "bVIImaj7", "V7")),
        },
        parts=(
            Part(
                "melody",
                ("flute", "alto saxophone", "tenor saxophone", "vibraphone", "clarinet"),
                ("medium", "sparse"),
                70,
            ),
            Part(
                "chords",
                ("classical guitar",),
                ("x..x..x...x..x..", "x..x..x..x..x...", "x.x..x.x..x..x.."),
                57,
                4,
                gate=0.7,
                strum=0.008,
                level=-6,
            ),
            Part("bass", ("upright bass", "electric bass"), ("1-----5-1-----5-", "1-----5-5-----1-"), 40),
            Part("pad", ("string ensemble",), (), 62, 3, prob=0.3, level=-18, volume=80),
        ),
        grooves=(
            Groove(
                "standard",
                {"rim": "x..x..x...x..x..", "shaker": "oxoxoxoxoxoxoxox", "kick": "x.....x.x.....x."},
                fills=False,
            ),
            Groove(
                "room", {"rim": "x..x...x..x..x..", "hat": "x.x.x.x.x.x.x.x.", "kick": "x.....x.x.....x."}, fills=False
            ),
        ),
        dynamics=(("soft", 0.6), ("medium", 0.4)),
        reverb=0.25,
        moods=("romantic", "relaxed", "calm"),
        syncopated=True,
        weight=0.8,
    ),
    Style(
        name="reggae",
        genres=("reggae",),
        meter="4/4",
        bpm=(64, 90),
        modes=(("major", 0.5), ("minor", 0.35), ("dorian", 0.15)),
        progressions={
            "major": (_p("I", "IV", "V", "IV"), _p("I", "vi", "IV", "V"), _p("I", "I", "IV", "IV")),
            "minor": (_p("i", "iv", "i", "v"), _p("i", "bVII", "bVI", "bVII")),
            "dorian": (_p("i", "IV", "i", "IV"),),
        },
        parts=(
            Part(
                "chords",
                ("electric guitar", "muted guitar", "organ"),
                ("..x...x...x...x.", "....x.......x..."),
                62,
                3,
                gate=0.3,
                pan=40,
            ),
            Part("chords", ("organ",), ("..x-..x-..x-..x-",), 58, 3, prob=0.4, gate=0.5, level=-12, pan=90, volume=80),
            Part(
                "melody",
                ("organ", "electric guitar", "trumpet", "alto saxophone", "tenor saxophone", "steel drums"),
                ("medium", "sparse"),
                67,
                prob=0.8,
            ),
            Part("bass", ("electric bass",), ("..1-1-..5-1-3-..", "1-..1-5-..3-1-..", "1---..1-5-..8-5-"), 38),
        ),
        grooves=(
            Groove("standard", {"kick": "........x.......", "rim": "........x.......", "hat": "x.x.x.x.x.x.x.x."}),
            Groove("room", {"kick": "x...x...x...x...", "snare": "........x.......", "hat": "..x...x...x...x."}),
        ),
        swing=(0.0, 0.35),
        dynamics=(("soft", 0.3), ("medium", 0.7)),
        moods=("relaxed", "happy", "groovy"),
        syncopated=True,
        weight=0.7,
    ),
    Style(
        name="waltz",
        genres=("waltz",),
        meter="3/4",
        bpm=(90, 180),
        modes=(("major", 0.6), ("harmonic minor", 0.4)),
        progressions={
            "major": (
                _p("I", "I", "V7", "V7", "V7", "V7", "I", "I"),
                _p("I", "IV", "V7", "I"),
                _p("I", "vi", "ii", "V7"),
            ),
            "minor": (_p("i", "iv", "V7", "i"), _p("i", "i", "V7", "V7", "V7", "V7", "i", "i")),
        },
        parts=(
            Part("melody", ("violin", "accordion", "flute", "piano", "clarinet", "string ensemble"), ("medium",), 72),
            Part(
                "chords",
                ("piano", "string ensemble", "accordion", "pizzicato strings", "=melody"),
                ("....x-..x-..",),
                62,
                3,
                gate=0.7,
                level=-10,
            ),
            Part(
                "bass", ("=chords", "cello", "upright bass", "tuba"), ("1-..........5-..........", "1-.........."), 43
            ),
        ),
        grooves=(Groove("brush", {"kick": "x...........", "snare": "....o...o..."}, fills=False),),
        drum_prob=0.3,
        dynamics=(("soft", 0.4), ("medium", 0.6)),
        reverb=0.3,
        rt60=1.6,
        moods=("romantic", "nostalgic", "melancholic"),
        weight=0.8,
    ),
    Style(
        name="march",
        genres=("march",),
        meter="2/4",
        bpm=(100, 128),
        modes=(("major", 0.85), ("harmonic minor", 0.15)),
        progressions={
            "major": (
                _p("I", "V7", "V7", "I"),
                _p("I", "IV", "V7", "I"),
                _p("I", "I", "IV", "I", "V7", "V7", "I", "I"),
            ),
            "minor": (_p("i", "V7", "V7", "i"), _p("i", "iv", "V7", "i")),
        },
        parts=(
            Part("melody", ("trumpet", "piccolo", "clarinet", "brass section", "flute", "xylophone"), ("medium",), 72),
            Part(
                "harmony", ("french horn", "trombone", "clarinet", "alto saxophone"), ("3", "6"), 64, prob=0.5, level=-8
            ),
            Part("chords", ("brass section",), ("..x-..x-",), 60, 3, gate=0.5, level=-10),
            Part("bass", ("tuba",), ("1-..5-..",), 38),
        ),
        grooves=(
            Groove("orchestra", {"snare": "Xoxox.xo", "kick": "x...x...", "crash": "x......."}, fills=False),
            Groove("standard", {"snare": "x.xxx.x.", "kick": "x...x..."}, fills=False),
        ),
        dynamics=(("medium", 0.4), ("loud", 0.6)),
        reverb=0.25,
        moods=("triumphant", "energetic", "happy"),
        weight=0.5,
    ),
    Style(
        name="baroque",
        genres=("baroque", "classical"),
        meter="4/4",
        bpm=(70, 120),
        modes=(("major", 0.6), ("harmonic minor", 0.4)),
        progressions={
            "major": (
                _p("I", "IV", "viio", "iii", "vi", "ii", "V", "I"),
                _p("I", "V", "vi", "iii", "IV", "I", "IV", "V"),
            ),
            "minor": (
                _p("i", "iv", "bVII", "bIII", "bVI", "iio", "V", "i"),
                _p("i", "V", "i", "iv", "bVI", "iio", "V", "i"),
            ),
        },
        parts=(
            Part(
                "melody", ("harpsichord", "violin", "flute", "oboe", "recorder", "church organ", "viola"), ("busy",), 74
            ),
            Part(
                "arp",
                ("harpsichord", "=melody", "string ensemble"),
                ("0-2-1-2-0-2-1-2-", "0-1-2-1-0-1-2-1-", "0121012101210121"),
                60,
                3,
                level=-8,
            ),
            Part(
                "bass",
                ("cello", "bassoon", "=arp", "harpsichord"),
                ("1-------5-------", "1---3---5---8---", "1---1---5---5---"),
                45,
            ),
        ),
        dynamics=(("soft", 0.3), ("medium", 0.7)),
        reverb=0.3,
        rt60=1.6,
        humanize=0.006,
        moods=("playful", "uplifting", "melancholic", "dark"),
        weight=0.8,
    ),
    Style(
        name="chorale",
        genres=("chorale", "hymn"),
        meter="4/4",
        bpm=(56, 80),
        modes=(("major", 0.65), ("harmonic minor", 0.35)),
        progressions={
            "major": (
                _p("I IV", "V vi", "IV V", "I"),
                _p("I vi", "ii V", "I IV", "V I"),
                _p("I V", "vi iii", "IV I", "IV V"),
            ),
            "minor": (_p("i iv", "V i", "bVI iv", "V i"), _p("i V", "i iv", "iio V", "i")),
        },
        parts=(
            Part("melody", ("choir", "church organ", "trumpet", "string ensemble", "french horn"), ("hymn",), 70),
            Part(
                "chords",
                ("=melody", "=melody", "church organ", "string ensemble", "choir", "brass section"),
                ("x---x---x---x---",),
                60,
                3,
                gate=0.95,
                level=-6,
            ),
            Part("bass", ("=chords", "tuba", "cello", "bassoon"), ("1---1---5---1---", "1---3---5---1---"), 45),
        ),
        dynamics=(("soft", 0.5), ("medium", 0.5)),
        reverb=0.4,
        rt60=2.5,
        humanize=0.005,
        moods=("peaceful", "solemn", "calm", "sad"),
        orchestral=True,
        weight=0.5,
    ),
    Style(
        name="ambient",
        genres=("ambient",),
        meter="4/4",
        bpm=(56, 80),
        modes=(("major", 0.5), ("dorian", 0.2), ("minor", 0.3)),
        progressions={
            "major": (
                _p("Imaj7", "Imaj7", "IVmaj7", "IVmaj7"),
                _p("Iadd9", "vi7", "IVmaj7", "Iadd9"),
                _p("Iadd9", "Iadd9", "IVadd9", "IVsus2"),
            ),
            "minor": (_p("i7", "i7", "bVImaj7", "bVImaj7"), _p("iadd9", "bVIIadd9", "bVImaj7", "iadd9")),
            "dorian": (_p("i7", "i7", "IV7", "IV7"),),
        },
        parts=(
            Part(
                "pad",
                ("synth pad", "sweep pad", "string ensemble", "choir", "synth strings"),
                (),
                60,
                4,
                level=-4,
                volume=95,
            ),
            Part(
                "melody",
                (
                    "celesta",
                    "harp",
                    "vibraphone",
                    "kalimba",
                    "music box",
                    "piano",
                    "flute",
                    "marimba",
                    "tubular bells",
                    "sitar",
                ),
                ("sparse",),
                76,
                prob=0.85,
            ),
            Part("pad", ("sweep pad", "synth strings", "choir"), (), 67, 3, prob=0.5, level=-12, volume=80),
            Part("bass", ("synth bass",), ("1---------------",), 36, prob=0.5, level=-2, volume=95),
        ),
        dynamics=(("soft", 0.8), ("medium", 0.2)),
        reverb=0.5,
        rt60=3.0,
        humanize=0.01,
        moods=("dreamy", "calm", "peaceful", "mysterious"),
        weight=0.7,
    ),
    Style(
        name="house",
        genres=("house", "dance"),
        meter="4/4",
        bpm=(118, 128),
        modes=(("minor", 0.4), ("dorian", 0.3), ("major", 0.3)),
        progressions={
            "minor": (_p("i7", "i7", "bVImaj7", "bVII"), _p("i7", "iv7", "i7", "iv7")),
            "dorian": (_p("i7", "IV7", "i7", "IV7"),),
            "major": (_p("vi7", "IVmaj7", "Imaj7", "V"), _p("Imaj7", "vi7", "ii7", "V7")),
        },
        parts=(
            Part(
                "chords",
                ("piano", "electric piano", "synth brass", "organ", "synth strings"),
                ("..x...x...x...x.", "x..x..x...x..x.."),
                62,
                4,
                gate=0.4,
            ),
            Part("bass", ("synth bass", "electric bass"), ("..1...1...1...1.", "..1.8.1...1.8.1."), 38),
            Part(
                "melody", ("synth lead", "square lead", "piano", "electric piano"), ("medium",), 72, prob=0.6, level=-4
            ),
            Part("pad", ("synth pad", "synth strings"), (), 64, 3, prob=0.4, level=-16, volume=80),
        ),
        grooves=(
            Groove(
                "electronic",
                {"kick": "x...x...x...x...", "clap": "....x.......x...", "open_hat": "..x...x...x...x."},
                fills=False,
            ),
            Groove(
                "tr808",
                {
                    "kick": "x...x...x...x...",
                    "clap": "....x.......x...",
                    "hat": "xoxoxoxoxoxoxoxo",
                    "open_hat": "..x...x...x...x.",
                },
                fills=False,
            ),
        ),
        dynamics=(("medium", 0.6), ("loud", 0.4)),
        reverb=0.2,
        humanize=0.0,
        moods=("energetic", "groovy", "uplifting"),
        syncopated=True,
        weight=0.9,
    ),
    Style(
        name="techno",
        genres=("techno", "dance"),
        meter="4/4",
        bpm=(125, 140),
        modes=(("minor", 0.6), ("phrygian", 0.4)),
        progressions={
            "minor": (_p("i", "i", "i", "i"), _p("i", "bVII", "i", "bVI")),
            "phrygian": (_p("i", "bII", "i", "i"),),
        },
        parts=(
            Part("bass", ("synth bass",), ("..1...1...1...1.", "1.11..11..1.11..", "..1.1.1...1.1.8."), 36),
            Part(
                "arp",
                ("synth lead", "square lead"),
                ("0.1.2.1.0.2.1.2.", "0102010201020102", "0-2-1-2-0-2-3-2-"),
                60,
                3,
                gate=0.5,
                level=-6,
            ),
            Part(
                "chords",
                ("synth strings", "synth brass", "synth pad"),
                ("...x.....x....x.", "x-----x-----x---"),
                62,
                3,
                prob=0.5,
                gate=0.5,
                level=-8,
            ),
            Part("pad", ("sweep pad", "synth pad"), (), 60, 3, prob=0.4, level=-16, volume=80),
        ),
        grooves=(
            Groove(
                "electronic",
                {"kick": "x...x...x...x...", "hat": "..x...x...x...x.", "clap": "....x.......x..."},
                fills=False,
            ),
            Groove(
                "tr808",
                {"kick": "x...x...x...x...", "hat": "xxxxxxxxxxxxxxxx", "esnare": "....x.......x..."},
                fills=False,
            ),
        ),
        dynamics=(("medium", 0.5), ("loud", 0.5)),
        reverb=0.2,
        humanize=0.0,
        moods=("dark", "energetic", "tense", "mysterious"),
        weight=0.7,
    ),
    Style(
        name="hip hop",
        genres=("hip hop",),
        meter="4/4",
        bpm=(80, 98),
        modes=(("minor", 0.5), ("dorian", 0.3), ("major", 0.2)),
        progressions={
            "minor": (_p("i7", "iv7", "i7", "iv7"), _p("i7", "bVImaj7", "iv7", "V7")),
            "dorian": (_p("i7", "IV9", "i7", "IV9"),),
            "major": (_p("ii7", "V7", "Imaj7", "vi7"), _p("Imaj7", "iii7", "vi7", "IVmaj7")),
        },
        parts=(
            Part(
                "chords",
                ("electric piano", "piano", "string ensemble", "vibraphone", "organ"),
                ("x-------x-------", "x-----x-----x---", "x---------x-----"),
                62,
                4,
            ),
            Part(
                "bass",
                ("synth bass", "electric bass", "upright bass", "fretless bass"),
                ("1-.....1..1-....", "1-....1-..5-....", "1-------..1-..5-"),
                38,
            ),
            Part(
                "melody",
                ("flute", "vibraphone", "muted trumpet", "piano", "synth lead", "alto saxophone"),
                ("sparse", "medium"),
                72,
                prob=0.6,
                level=-4,
            ),
        ),
        grooves=(
            Groove(
                "standard",
                {"kick": "x.........x.....", "snare": "....x.......x...", "hat": "x.x.x.x.x.x.x.x."},
                fills=False,
            ),
            Groove(
                "room",
                {"kick": "x......x..x.....", "snare": "....x.......x...", "hat": "xxxxxxxxxxxxxxxx"},
                fills=False,
            ),
            Groove(
                "tr808",
                {"kick": "x......x..x.....", "clap": "....x.......x...", "hat": "x.x.x.x.x.x.x.x."},
                fills=False,
            ),
        ),
        swing=(0.3, 0.6),
        swing_unit=16,
        dynamics=(("soft", 0.3), ("medium", 0.7)),
        humanize=0.004,
        moods=("groovy", "relaxed", "dark", "melancholic"),
        weight=1.0,
    ),
    Style(
        name="folk",
        genres=("folk",),
        meter="4/4",
        bpm=(80, 125),
        modes=(("major", 0.55), ("mixolydian", 0.15), ("dorian", 0.15), ("minor", 0.15)),
        progressions={
            "major": (_p("I", "IV", "I", "V"), _p("I", "V", "vi", "IV"), _p("I", "IV", "V", "I")),
            "mixolydian": (_p("I", "bVII", "IV", "I"),),
            "dorian": (_p("i", "IV", "i", "bVII"),),
            "minor": (_p("i", "bVI", "bVII", "i"), _p("i", "bVII", "i", "bVII")),
        },
        parts=(
            Part(
                "chords",
                ("acoustic guitar", "classical guitar"),
                ("x---x-u---u-x-u-", "x-----u-x---x-u-"),
                55,
                5,
                strum=0.012,
                level=-6,
                prob=0.6,
                group="guitar",
            ),
            Part(
                "arp",
                ("acoustic guitar", "classical guitar", "harp", "banjo"),
                ("0-2-1-3-0-2-1-3-", "0-3-1-3-0-3-1-3-"),
                55,
                4,
                level=-6,
                prob=0.4,
                group="guitar",
            ),
            Part(
                "melody",
                ("flute", "violin", "harmonica", "accordion", "recorder", "banjo", "pan flute"),
                ("medium",),
                70,
            ),
            Part("bass", ("upright bass",), ("1-------5-------",), 40, prob=0.5),
        ),
        grooves=(
            Groove("room", {"kick": "x.......x.......", "tambourine": "....x.......x..."}, fills=False),
            Groove("brush", {"kick": "x.......x.......", "shaker": "x.x.x.x.x.x.x.x."}, fills=False),
        ),
        drum_prob=0.3,
        dynamics=(("soft", 0.45), ("medium", 0.55)),
        moods=("nostalgic", "peaceful", "happy", "melancholic"),
        weight=1.0,
    ),
    Style(
        name="funk",
        genres=("funk",),
        meter="4/4",
        bpm=(92, 118),
        modes=(("dorian", 0.5), ("mixolydian", 0.4), ("minor", 0.1)),
        progressions={
            "dorian": (_p("i7", "i7", "IV7", "IV7"), _p("i9", "i9", "i9", "IV9")),
            "mixolydian": (_p("I7", "I7", "IV7", "I7"), _p("I9", "I9", "bVII9", "I9")),
            "minor": (_p("i7", "iv7", "i7", "iv7"),),
        },
        parts=(
            Part(
                "bass",
                ("slap bass", "electric bass", "synth bass"),
                ("1..1..x.1.8..1x.", "1.x.8..1.x1.5.7.", "1..x1.8.x.1..5.7"),
                38,
            ),
            Part(
                "chords",
                ("muted guitar", "electric guitar"),
                ("..x..x.x..x..x.x", "x.x..x.xx.x..x.x"),
                64,
                3,
                gate=0.25,
                pan=40,
            ),
            Part(
                "chords",
                ("electric piano", "organ"),
                ("x.....x...x.....",),
                60,
                4,
                prob=0.5,
                gate=0.6,
                level=-10,
                pan=90,
                volume=85,
            ),
            Part(
                "chords", ("brass section", "synth brass"), ("......x-......x.",), 68, 3, prob=0.4, gate=0.6, level=-2
            ),
            Part(
                "melody",
                ("tenor saxophone", "alto saxophone", "trumpet", "synth lead", "electric guitar"),
                ("medium",),
                70,
                prob=0.6,
            ),
        ),
        grooves=(
            Groove("standard", {"kick": "x.....x...x..x..", "snare": "....x..o.o..x..o", "hat": "XoxoXoxoXoxoXoxo"}),
            Groove("room", {"kick": "x..x..x...x.....", "snare": "....x..o....x.o.", "hat": "xxxxxxxxxxxxxxxx"}),
        ),
        dynamics=(("medium", 0.6), ("loud", 0.4)),
        humanize=0.005,
        moods=("groovy", "energetic", "playful"),
        syncopated=True,
        weight=0.7,
    ),
    Style(
        name="disco",
        genres=("disco", "dance"),
        meter="4/4",
        bpm=(112, 128),
        modes=(("minor", 0.4), ("dorian", 0.2), ("major", 0.4)),
        progressions={
            "minor": (_p("i7", "iv7", "bVII7", "bIIImaj7"), _p("i7", "i7", "iv7", "iv7")),
            "dorian": (_p("i7", "IV7", "i7", "IV7"),),
            "major": (_p("Imaj7", "ii7", "iii7", "ii7"), _p("ii7", "V7", "Imaj7", "vi7")),
        },
        parts=(
            Part("bass", ("electric bass", "synth bass", "slap bass"), ("1.8.1.8.1.8.1.8.", "1.8.1.8.5.8.5.8."), 36),
            Part("pad", ("string ensemble", "synth strings"), (), 66, 3, prob=0.7, level=-10, volume=85),
            Part(
                "chords",
                ("muted guitar", "electric guitar"),
                ("x.x.x.x.x.x.x.x.",),
                64,
                3,
                prob=0.6,
                gate=0.3,
                level=-8,
                pan=40,
            ),
            Part(
                "chords",
                ("piano", "electric piano"),
                ("..x...x...x...x.",),
                62,
                4,
                prob=0.5,
                gate=0.5,
                level=-8,
                pan=90,
            ),
            Part("chords", ("brass section",), ("..........x-x-..",), 68, 3, prob=0.35, gate=0.7),
            Part(
                "melody",
                ("synth lead", "flute", "string ensemble", "alto saxophone", "trumpet"),
                ("medium",),
                72,
                prob=0.6,
            ),
        ),
        grooves=(
            Groove(
                "standard",
                {
                    "kick": "x...x...x...x...",
                    "snare": "....x.......x...",
                    "hat": "x...x...x...x...",
                    "open_hat": "..x...x...x...x.",
                },
            ),
            Groove(
                "room",
                {
                    "kick": "x...x...x...x...",
                    "clap": "....x.......x...",
                    "hat": "x.x.x.x.x.x.x.x.",
                    "tambourine": "....x.......x...",
                },
            ),
        ),
        dynamics=(("medium", 0.5), ("loud", 0.5)),
        humanize=0.003,
        moods=("groovy", "happy", "energetic"),
        weight=0.6,
    ),
    Style(
        name="country",
        genres=("country",),
        meter="4/4",
        bpm=(90, 140),
        modes=(("major", 0.85), ("mixolydian", 0.15)),
        progressions={
            "major": (_p("I", "I", "IV", "IV", "V", "V", "I", "I"), _p("I", "IV", "I", "V"), _p("I", "V", "IV", "I")),
            "mixolydian": (_p("I", "bVII", "IV", "I"),),
        },
        parts=(
            Part(
                "chords", ("acoustic guitar",), ("x---x-u-x---x-u-", "x---u-u-x---u-u-"), 55, 5, strum=0.012, level=-6
            ),
            Part("arp", ("banjo",), ("0120120120120120", "0-1-2-0-1-2-0-1-"), 64, 3, prob=0.4, level=-10),
            Part("melody", ("electric guitar", "harmonica", "violin", "banjo", "piano"), ("medium",), 70),
            Part("bass", ("upright bass", "electric bass"), ("1-------5-------", "1---5---1---5---"), 40),
        ),
        grooves=(
            Groove("standard", {"kick": "x.......x.......", "snare": "....x.......x...", "hat": "x.x.x.x.x.x.x.x."}),
            Groove("brush", {"kick": "x.......x.......", "snare": "xoxoxoxoxoxoxoxo"}),
        ),
        drum_prob=0.8,
        dynamics=(("soft", 0.2), ("medium", 0.6), ("loud", 0.2)),
        moods=("happy", "nostalgic", "relaxed"),
        weight=0.7,
    ),
    Style(
        name="orchestral",
        genres=("orchestral", "classical"),
        meter="4/4",
        bpm=(70, 110),
        modes=(("minor", 0.45), ("harmonic minor", 0.2), ("major", 0.35)),
        progressions={
            "minor": (_p("i", "bVI", "bIII", "bVII"), _p("i", "iv", "bVI", "bVII")),
            "harmonic minor": (_p("i", "iv", "bVI", "V"), _p("i", "bVI", "iv", "V")),
            "major": (_p("I", "iii", "IV", "iv"), _p("I", "V", "vi", "IV"), _p("IV", "V", "iii", "vi")),
        },
        parts=(
            Part(
                "chords",
                ("string ensemble", "tremolo strings"),
                ("x-x-x-x-x-x-x-x-", "xxxxxxxxxxxxxxxx", "x-------x-------"),
                58,
                4,
                gate=0.95,
                level=-6,
            ),
            Part(
                "melody",
                ("french horn", "violin", "cello", "trumpet", "flute", "oboe", "brass section", "choir"),
                ("sparse", "medium"),
                67,
            ),
            Part(
                "harmony",
                ("french horn", "trombone", "clarinet", "bassoon", "cello", "viola"),
                ("3", "6"),
                60,
                prob=0.4,
                level=-8,
            ),
            Part("bass", ("cello", "tuba", "pizzicato strings"), ("1-------1-------", "1---1---1---1---"), 40),
            Part(
                "bass",
                ("timpani",),
                ("1-----------1-1-", "1---------------", "1-......5-......"),
                45,
                prob=0.7,
                level=8,
                volume=120,
            ),
            Part("pad", ("choir",), (), 62, 3, prob=0.3, level=-14, volume=85),
            Part("arp", ("harp",), ("0123012301230123", "0-1-2-3-2-1-0-1-"), 64, 4, prob=0.35, level=-10),
        ),
        dynamics=(("soft", 0.2), ("medium", 0.4), ("loud", 0.4)),
        reverb=0.4,
        rt60=2.2,
        humanize=0.006,
        moods=("epic", "triumphant", "dark", "tense", "mysterious"),
        orchestral=True,
        weight=0.9,
    ),
    Style(
        name="ballad",
        genres=("ballad",),
        meter="4/4",
        bpm=(60, 84),
        modes=(("major", 0.7), ("minor", 0.3)),
        progressions={
            "major": (
                _p("I", "V", "vi", "IV"),
                _p("I", "vi", "IV", "V"),
                _p("vi", "IV", "I", "V"),
                _p("I", "iii", "IV", "V"),
            ),
            "minor": (_p("i", "bVI", "bIII", "bVII"), _p("i", "iv", "bVII", "bIII")),
        },
        parts=(
            Part(
                "arp",
                ("piano", "piano", "electric piano", "acoustic guitar", "harp"),
                ("0-2-1-2-3-2-1-2-", "0-1-2-3-2-1-2-1-", "0-2-3-2-0-2-3-2-"),
                58,
                4,
                level=-8,
            ),
            Part(
                "melody",
                (
                    "=arp",
                    "=arp",
                    "violin",
                    "cello",
                    "flute",
                    "alto saxophone",
                    "electric guitar",
                    "oboe",
                    "clarinet",
                    "soprano saxophone",
                ),
                ("medium", "sparse"),
                70,
            ),
            Part("pad", ("string ensemble", "synth strings", "synth pad"), (), 64, 3, prob=0.5, level=-16, volume=85),
            Part(
                "bass",
                ("electric bass", "upright bass", "cello", "fretless bass"),
                ("1---------------", "1-------5-------"),
                40,
                prob=0.5,
                level=-6,
            ),
        ),
        grooves=(
            Groove("standard", {"kick": "x.......x.......", "rim": "....x.......x...", "hat": "x.x.x.x.x.x.x.x."}),
            Groove("brush", {"kick": "x.......x.......", "snare": "....x.......x..."}),
        ),
        drum_prob=0.4,
        dynamics=(("soft", 0.6), ("medium", 0.4)),
        reverb=0.35,
        rt60=1.8,
        moods=("romantic", "tender", "sad", "nostalgic"),
        weight=1.0,
    ),
    Style(
        name="salsa",
        genres=("salsa", "latin"),
        meter="4/4",
        bpm=(150, 200),
        modes=(("minor", 0.5), ("harmonic minor", 0.2), ("major", 0.3)),
        progressions={
            "minor": (_p("i", "iv", "V7", "i"), _p("i iv", "V7 i", "i iv", "V7 i")),
            "harmonic minor": (_p("i", "V7", "V7", "i"),),
            "major": (_p("I IV", "V IV", "I IV", "V IV"), _p("I", "IV", "V7", "IV")),
        },
        parts=(
            Part("chords", ("piano",), ("x.x..x.x.x..x.x.", "x..x.x..x..x.x.."), 66, 3, gate=0.5, level=-6),
            Part("bass", ("electric bass", "upright bass"), ("......5-....1-..", "......1-....5-.."), 40),
            Part("melody", ("brass section", "trumpet", "trombone", "flute"), ("busy", "medium"), 72),
            Part("harmony", ("trombone", "alto saxophone", "baritone saxophone"), ("3", "6"), 62, prob=0.5, level=-8),
        ),
        grooves=(
            Groove(
                "standard",
                {
                    "claves": "x.....x.....x.......x...x.......",
                    "conga_mute": "x.......x.......",
                    "conga_hi": "............x.x.",
                    "cowbell": "x...x...x...x...",
                    "kick": "...........x....",
                },
                fills=False,
            ),
            Groove(
                "room",
                {
                    "claves": "x.....x.....x.......x...x.......",
                    "bongo_hi": "x.x.x.x.x.x.x.x.",
                    "timbale_hi": "x..x..x...x.x...",
                },
                fills=False,
            ),
        ),
        dynamics=(("medium", 0.5), ("loud", 0.5)),
        moods=("energetic", "happy", "groovy"),
        syncopated=True,
        weight=0.5,
    ),
    Style(
        name="celtic",
        genres=("celtic", "folk"),
        meter="6/8",
        bpm=(100, 125),
        modes=(("major", 0.5), ("mixolydian", 0.2), ("dorian", 0.3)),
        progressions={
            "major": (_p("I", "I", "IV", "V"), _p("I", "IV", "I", "V")),
            "mixolydian": (_p("I", "bVII", "I", "bVII"),),
            "dorian": (_p("i", "bVII", "i", "bVII"), _p("i", "i", "bIII", "bVII")),
        },
        parts=(
            Part(
                "melody",
                ("flute", "violin", "bagpipe", "pan flute", "recorder", "accordion"),
                ("busy",),
                74,
                level=6,
                volume=115,
            ),
            Part(
                "chords",
                ("acoustic guitar",),
                ("x---x-x---x-", "x-----x-u-x-"),
                55,
                5,
                strum=0.01,
                level=-14,
                volume=85,
            ),
            Part("bass", ("upright bass",), ("1-----5-----",), 40, prob=0.4),
        ),
        grooves=(Groove("room", {"tom_floor": "x.x.x.x.x.x.", "tom_low": "x.....x....."}, fills=False),),
        drum_prob=0.5,
        dynamics=(("soft", 0.3), ("medium", 0.5), ("loud", 0.2)),
        moods=("happy", "playful", "energetic"),
        weight=0.5,
    ),
    Style(
        name="lullaby",
        genres=("lullaby",),
        meter="3/4",
        bpm=(60, 84),
        modes=(("major", 0.85), ("minor", 0.15)),
        progressions={
            "major": (_p("I", "IV", "I", "V"), _p("I", "vi", "IV", "V"), _p("I", "I", "V", "I")),
            "minor": (_p("i", "iv", "i", "V"),),
        },
        parts=(
            Part(
                "melody",
                ("music box", "celesta", "harp", "flute", "kalimba", "piano", "vibraphone", "marimba", "xylophone"),
                ("sparse", "medium"),
                74,
            ),
            Part(
                "arp",
                ("harp", "piano", "=melody", "classical guitar"),
                ("0-1-2-1-2-1-", "0-2-1-2-1-2-"),
                60,
                3,
                level=-10,
            ),
            Part("pad", ("string ensemble", "synth pad", "choir"), (), 62, 3, prob=0.35, level=-18, volume=80),
        ),
        dynamics=(("soft", 1.0),),
        reverb=0.35,
        rt60=2.0,
        moods=("calm", "tender", "peaceful", "dreamy"),
        weight=0.5,
    ),
)
"""Every style of the corpus."""

STYLE_BY_NAME: dict[str, Style] = {s.name: s for s in STYLES}


def get_style(name: str) -> Style:
    """Look up a style by name.

    Raises:
        ConfigError: if the name is unknown.
    """
    try:
        return STYLE_BY_NAME[name]
    except KeyError:
        raise ConfigError(f"unknown style {name!r}; choose one of {sorted(STYLE_BY_NAME)}") from None


def progressions_for(style: Style, mode: str) -> tuple[tuple[str, ...], ...]:
    """The style's progressions for ``mode`` (exact mode name first, then its major/minor quality)."""
    from musicsearch.data.synth.theory import MODE_QUALITY

    if mode in style.progressions:
        return style.progressions[mode]
    quality = MODE_QUALITY[mode]
    if quality in style.progressions:
        return style.progressions[quality]
    raise ConfigError(f"style {style.name!r} has no progression for mode {mode!r}")
