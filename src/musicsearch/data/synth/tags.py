"""The tag vocabulary of the procedural corpus, each tag's category, the rules that derive a clip's tags, and the
held-out synonyms kept for unseen-query evaluation.

Every tag is derived from what is rendered: instrument tags are the GM programs that play notes, tempo tags come
from the MIDI tempo, key and mode tags from the key and scale the parts are written in, moods from the rules of
:data:`MOOD_RULES` over mode, tempo, dynamics and register, and so on. All true tags of a clip are kept as
``all_tags``; its listed ``tags`` always hold genre, instruments, tempo, mood, key and texture, and each of the less
specific kinds with the probability of :data:`LIST_PROBABILITY`, at most :data:`MAX_TAGS` in all (past that the kinds
of :data:`DROP_ORDER` go first) -- like ECALS, where annotators name some true tags, not all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from musicsearch.data.synth.instruments import DRUM_KITS, HAND_PERCUSSION, INSTRUMENTS
from musicsearch.data.synth.styles import METERS, STYLES, Style, get_style
from musicsearch.data.synth.theory import MODE_QUALITY, MODES, PITCH_CLASS_NAMES

MIN_TAGS = 6
MAX_TAGS = 15

CATEGORIES: dict[str, str] = {
    "genre": "style or genre of the clip (the style it was composed in and its parent genres)",
    "instrument": "a General MIDI program or drum kit that plays notes in the clip",
    "family": "instrument family of at least one instrument in the clip (guitar, strings, brass, ...)",
    "tempo": "slow / medium tempo / fast, from the rendered tempo (felt beats a minute; see tempo_class)",
    "bpm": "ten-beat band containing the rendered tempo in felt beats a minute",
    "mood": "mood derived from mode, tempo, dynamics, register and style by the rules of MOOD_RULES",
    "key": "tonic and major/minor quality of the key the clip is written in",
    "mode": "major / minor (third above the tonic) and the modal scale when not plain major or natural minor",
    "meter": "time signature",
    "rhythm": "rhythmic feel: swing, four on the floor, backbeat, syncopated",
    "texture": "solo / duo / trio / band / orchestra / ensemble, from the number of instruments and drums",
    "dynamics": "soft / loud playing (velocity level and output loudness)",
    "sound": "acoustic (only acoustic instruments) or electronic (synthesizers or a drum machine)",
}
"""Tag categories and what puts a tag of each category on a clip."""

MOODS = (
    "happy", "sad", "dark", "calm", "energetic", "tense", "romantic", "melancholic", "uplifting", "peaceful",
    "aggressive", "dreamy", "playful", "triumphant", "mysterious", "relaxed", "epic", "nostalgic", "groovy",
    "tender", "solemn",
)  # fmt: skip

MoodFeatures = dict[str, object]

MOOD_RULES: dict[str, Callable[[MoodFeatures], bool]] = {
    "happy": lambda f: f["quality"] == "major" and f["tempo"] != "slow",
    "sad": lambda f: f["quality"] == "minor" and f["tempo"] == "slow",
    "dark": lambda f: f["quality"] == "minor" and f["register"] != "high",
    "calm": lambda f: f["tempo"] == "slow" and f["dynamics"] != "loud",
    "energetic": lambda f: f["tempo"] == "fast" and f["dynamics"] != "soft",
    "tense": lambda f: f["quality"] == "minor" and f["tempo"] != "slow",
    "romantic": lambda f: f["tempo"] != "fast" and f["dynamics"] != "loud",
    "melancholic": lambda f: f["quality"] == "minor" and f["tempo"] != "fast",
    "uplifting": lambda f: f["quality"] == "major" and f["tempo"] != "slow" and f["dynamics"] != "soft",
    "peaceful": lambda f: f["tempo"] == "slow" and f["dynamics"] == "soft",
    "aggressive": lambda f: f["quality"] == "minor" and f["tempo"] == "fast" and f["dynamics"] == "loud",
    "dreamy": lambda f: f["tempo"] == "slow" and f["dynamics"] == "soft",
    "playful": lambda f: f["quality"] == "major" and f["tempo"] != "slow" and f["register"] != "low",
    "triumphant": lambda f: f["quality"] == "major" and f["dynamics"] == "loud",
    "mysterious": lambda f: f["quality"] == "minor" and f["dynamics"] != "loud",
    "relaxed": lambda f: f["tempo"] != "fast" and f["dynamics"] != "loud",
    "epic": lambda f: f["dynamics"] == "loud",
    "nostalgic": lambda f: f["quality"] == "major" and f["tempo"] != "fast",
    "groovy": lambda f: bool(f["drums"]) and f["tempo"] != "slow",
    "tender": lambda f: f["tempo"] == "slow" and f["dynamics"] == "soft",
    "solemn": lambda f: f["tempo"] == "slow" and f["dynamics"] != "loud",
}
"""When a mood may be given: a predicate over the clip's features (quality, tempo, dynamics, register, drums)."""

GENERAL_MOODS: dict[tuple[str, str], tuple[str, ...]] = {
    ("major", "fast"): ("happy", "energetic", "uplifting"),
    ("major", "medium"): ("happy", "uplifting", "playful"),
    ("major", "slow"): ("nostalgic", "calm", "peaceful", "tender"),
    ("minor", "fast"): ("tense", "energetic", "dark"),
    ("minor", "medium"): ("melancholic", "mysterious", "dark"),
    ("minor", "slow"): ("sad", "melancholic", "dark"),
}
"""Moods any style may get, by (quality, tempo); the first of each entry always satisfies its rule."""

TEMPO_THRESHOLDS: dict[str, tuple[int, int]] = {"4/4": (85, 125), "3/4": (85, 125), "2/4": (85, 125), "6/8": (60, 95)}
"""Per meter: a felt-beat tempo below the first bound is ``slow``, from the second on ``fast``, else medium."""

BPM_BANDS = tuple(range(50, 210, 10))
"""Lower bounds of the ten-beat tempo bands (``"120-129 bpm"``)."""

DROP_ORDER = ("rhythm", "bpm", "mood2", "sound", "family", "genre2", "meter", "mode")
"""What is dropped first when a clip still has more than :data:`MAX_TAGS` tags (``mood2``: a second mood,
``genre2``: genre tags after the first, ``mode``: the major/minor tag beside the key tag)."""

LIST_PROBABILITY: dict[str, float] = {
    "genre2": 0.6,
    "family": 0.3,
    "bpm": 0.3,
    "mode": 0.5,
    "meter": 0.3,
    "rhythm": 0.35,
    "dynamics": 0.7,
    "sound": 0.3,
}
"""Probability that a true tag of these kinds is listed in a clip's ``tags`` (like an annotator who names some true
tags, not all, as in ECALS); everything else is always listed, and the complete list is kept as ``all_tags``.
``meter`` applies to 4/4 only (other meters are always listed), ``mode`` to the major/minor tag (a modal name such
as dorian is always listed)."""

KIT_PHRASES = {"drums": "drums", "drum machine": "a drum machine", "808": "an 808", "brushes": "brushes"}


def tempo_class(bpm: float, meter: str) -> str:
    """``slow``, ``medium tempo`` or ``fast`` for a tempo in felt beats a minute (see :data:`TEMPO_THRESHOLDS`)."""
    lo, hi = TEMPO_THRESHOLDS[meter]
    return "slow" if bpm < lo else ("fast" if bpm >= hi else "medium tempo")


def bpm_band(bpm: float) -> str:
    """The ten-beat band tag of a tempo, e.g. ``"120-129 bpm"``."""
    lo = int(bpm // 10 * 10)
    return f"{lo}-{lo + 9} bpm"


def register_class(mean_pitch: float) -> str:
    """``low`` (< 58), ``high`` (> 74) or ``mid`` for the mean MIDI pitch of the lead part."""
    return "low" if mean_pitch < 58 else ("high" if mean_pitch > 74 else "mid")


def _style_genres() -> list[str]:
    out: list[str] = []
    for s in STYLES:
        for g in s.genres:
            if g not in out:
                out.append(g)
    return out


def build_vocabulary() -> dict[str, str]:
    """Every tag the generator can emit, mapped to its category (ordered by category, then musically)."""
    vocab: dict[str, str] = {}

    def add(tags: list[str] | tuple[str, ...], category: str) -> None:
        for t in tags:
            if t in vocab:
                raise AssertionError(f"tag {t!r} in two categories ({vocab[t]}, {category})")
            vocab[t] = category

    add(_style_genres(), "genre")
    kit_tags = [t for k in DRUM_KITS.values() for t in k.tags]
    add([*INSTRUMENTS, *dict.fromkeys(kit_tags), "percussion"], "instrument")
    add(list(dict.fromkeys(i.family for i in INSTRUMENTS.values() if i.family)), "family")
    add(["slow", "medium tempo", "fast"], "tempo")
    add([bpm_band(b) for b in BPM_BANDS], "bpm")
    add(MOODS, "mood")
    add([f"{pc} {q}" for q in ("major", "minor") for pc in PITCH_CLASS_NAMES], "key")
    add(["major", "minor", *(m for m in MODES if m not in ("major", "minor") and not _scale_only(m))], "mode")
    add(list(METERS), "meter")
    add(["swing", "four on the floor", "backbeat", "syncopated"], "rhythm")
    add(["solo", "duo", "trio", "band", "orchestra", "ensemble"], "texture")
    add(["soft", "loud"], "dynamics")
    add(["acoustic", "electronic"], "sound")
    return vocab


def _scale_only(mode: str) -> bool:
    """Scales used only inside the theory module, never as a clip's mode."""
    return mode in ("major pentatonic", "minor pentatonic", "blues")


VOCABULARY: dict[str, str] = build_vocabulary()
"""tag -> category, for every tag the generator can emit."""

HELDOUT_SYNONYMS: dict[str, tuple[str, ...]] = {
    "fast": ("quick", "rapid", "speedy", "uptempo"),
    "slow": ("leisurely", "sluggish", "languid", "unhurried"),
    "medium tempo": ("moderate pace", "andante"),
    "soft": ("quiet", "hushed", "pianissimo"),
    "loud": ("noisy", "booming", "thunderous", "fortissimo"),
    "happy": ("joyful", "cheerful", "joyous", "glad"),
    "sad": ("sorrowful", "mournful", "gloomy", "heartbroken"),
    "calm": ("serene", "tranquil", "soothing"),
    "energetic": ("lively", "vigorous", "high-energy"),
    "dark": ("ominous", "sinister", "brooding"),
    "tense": ("suspenseful", "anxious", "nervous"),
    "romantic": ("amorous", "sensual", "loving"),
    "melancholic": ("wistful", "bittersweet", "plaintive"),
    "peaceful": ("placid", "restful"),
    "aggressive": ("fierce", "furious", "violent"),
    "dreamy": ("ethereal", "hazy"),
    "playful": ("whimsical", "jaunty"),
    "triumphant": ("victorious", "heroic"),
    "mysterious": ("enigmatic", "eerie"),
    "relaxed": ("chill", "laid-back", "mellow"),
    "epic": ("grandiose", "majestic"),
    "nostalgic": ("sentimental", "reminiscent"),
    "groovy": ("funky", "in the pocket"),
    "tender": ("affectionate", "delicate"),
    "solemn": ("reverent", "sombre"),
    "uplifting": ("inspiring", "euphoric"),
    "piano": ("keys", "pianoforte", "ivories"),
    "electric piano": ("rhodes", "wurlitzer"),
    "organ": ("hammond",),
    "church organ": ("pipe organ",),
    "acoustic guitar": ("steel-string guitar", "flat-top guitar"),
    "classical guitar": ("nylon-string guitar", "spanish guitar"),
    "distorted guitar": ("fuzz guitar", "crunchy guitar"),
    "upright bass": ("double bass", "contrabass", "standup bass"),
    "electric bass": ("bass guitar",),
    "synth bass": ("sub bass",),
    "drums": ("drum kit", "drum set"),
    "drum machine": ("programmed beat", "beat box"),
    "violin": ("fiddle",),
    "cello": ("violoncello",),
    "string ensemble": ("string section", "string orchestra"),
    "choir": ("chorus", "singers"),
    "saxophone": ("sax",),
    "brass": ("horn section",),
    "strings": ("bowed strings",),
    "synthesizer": ("synthesiser", "synths"),
    "woodwinds": ("reeds",),
    "hip hop": ("rap beat", "boom bap"),
    "house": ("club music",),
    "techno": ("rave music",),
    "electronic": ("electronica", "edm"),
    "metal": ("thrash", "headbanging"),
    "jazz": ("jazzy",),
    "blues": ("bluesy",),
    "reggae": ("jamaican music",),
    "baroque": ("early music", "bach style"),
    "chorale": ("hymnal", "four-part harmony"),
    "ambient": ("atmospheric", "soundscape"),
    "orchestral": ("symphonic", "cinematic", "film score"),
    "folk": ("folksy", "traditional music"),
    "country": ("country and western", "cowboy music"),
    "march": ("marching band", "military band"),
    "waltz": ("valse",),
    "bossa nova": ("brazilian jazz",),
    "disco": ("70s dance music",),
    "lullaby": ("cradle song", "nursery song"),
    "celtic": ("irish", "gaelic", "scottish"),
    "ballad": ("love song",),
    "major": ("major tonality", "ionian"),
    "minor": ("minor tonality", "aeolian"),
    "3/4": ("triple meter", "three-four time"),
    "4/4": ("common time", "four-four time"),
    "6/8": ("compound meter", "six-eight time"),
    "2/4": ("duple meter", "two-four time"),
    "solo": ("unaccompanied", "single instrument"),
    "duo": ("duet",),
    "trio": ("three-piece",),
    "orchestra": ("symphony orchestra", "philharmonic"),
    "ensemble": ("chamber group",),
    "acoustic": ("unplugged",),
    "swing": ("swung", "lilting"),
    "syncopated": ("offbeat accents",),
}
"""Held-out synonyms and paraphrases of tags: they never appear in any tag or caption of the corpus, so queries
made of them test retrieval with unseen words (the ``unseen-query`` evaluation)."""


@dataclass(frozen=True)
class ClipTags:
    """A clip's listed tags in order with their categories, every true tag, and the true tags not listed."""

    tags: tuple[str, ...]
    categories: tuple[str, ...]
    all_tags: tuple[str, ...]
    dropped: tuple[str, ...]
    moods: tuple[str, ...]
    texture: str

    def by_category(self) -> dict[str, list[str]]:
        """Category -> tags of the clip."""
        out: dict[str, list[str]] = {}
        for t, c in zip(self.tags, self.categories):
            out.setdefault(c, []).append(t)
        return out


def _groove_hits(style: Style, groove_index: int | None) -> dict[str, set[int]]:
    """Drum name -> grid steps (within one bar, all bars of the pattern folded) where it plays."""
    if groove_index is None:
        return {}
    groove = style.grooves[groove_index]
    beats, spb, _ = METERS[style.meter]
    steps = beats * spb
    out: dict[str, set[int]] = {}
    for name, pattern in groove.patterns.items():
        out[name] = {i % steps for i, c in enumerate(pattern) if c not in ".-"}
    return out


def texture_of(n_instruments: int, has_drums: bool, orchestral: bool) -> str:
    """Texture tag from the number of distinct sounding instruments (a drum kit counts as one)."""
    if n_instruments <= 1:
        return "solo"
    if n_instruments == 2:
        return "duo"
    if has_drums:
        return "band"
    if n_instruments == 3:
        return "trio"
    return "orchestra" if orchestral else "ensemble"


def derive_tags(
    *,
    style: str,
    instruments: list[str],
    kit: str | None,
    drums_played: list[str],
    bpm: int,
    meter: str,
    tonic: int,
    mode: str,
    dynamics: str,
    swing: float,
    register: float,
    groove_index: int | None,
    rng: np.random.Generator,
) -> ClipTags:
    """All tags of a clip from what it renders.

    Args:
        style: style name.
        instruments: tag names of the melodic instruments that sound (distinct, in part order).
        kit: drum kit name if drums sound, else ``None``.
        drums_played: drum names that sound (for ``percussion`` and the rhythm tags).
        bpm: tempo in felt beats a minute.
        meter: time signature.
        tonic: key tonic pitch class.
        mode: mode name.
        dynamics: ``soft`` / ``medium`` / ``loud``.
        swing: swing amount 0..1.
        register: mean MIDI pitch of the lead part.
        groove_index: index of the style's groove, or ``None``.
        rng: generator for the mood choice.

    Returns:
        The :class:`ClipTags` (between :data:`MIN_TAGS` and :data:`MAX_TAGS` tags).
    """
    st = get_style(style)
    quality = MODE_QUALITY[mode]
    tempo = tempo_class(bpm, meter)
    items: list[tuple[str, str, str]] = []  # (tag, category, drop key)
    for i, g in enumerate(st.genres):
        items.append((g, "genre", "genre2" if i else ""))
    for name in instruments:
        items.append((name, "instrument", ""))
    kit_tags: tuple[str, ...] = DRUM_KITS[kit].tags if kit else ()
    played = set(drums_played)
    has_kit = bool(kit) and bool(played - HAND_PERCUSSION)
    if has_kit:
        for t in kit_tags:
            items.append((t, "instrument", ""))
    has_perc = bool(played & HAND_PERCUSSION)
    if has_perc:
        items.append(("percussion", "instrument", ""))
    for fam in dict.fromkeys(INSTRUMENTS[n].family for n in instruments):
        if fam:
            items.append((fam, "family", "family"))
    items.append((tempo, "tempo", ""))
    items.append((bpm_band(bpm), "bpm", "bpm"))

    feats: MoodFeatures = {
        "quality": quality,
        "tempo": "medium" if tempo == "medium tempo" else tempo,
        "dynamics": dynamics,
        "register": register_class(register),
        "drums": has_kit,
    }
    moods = choose_moods(st, feats, rng)
    for i, m in enumerate(moods):
        items.append((m, "mood", "mood2" if i else ""))
    items.append((f"{PITCH_CLASS_NAMES[tonic]} {quality}", "key", ""))
    items.append((quality, "mode", "mode"))
    if mode not in ("major", "minor"):
        items.append((mode, "mode", ""))
    items.append((meter, "meter", "meter" if meter == "4/4" else ""))
    hits = _groove_hits(st, groove_index) if has_kit else {}
    beats, spb, _ = METERS[meter]
    if swing >= 0.3:
        items.append(("swing", "rhythm", "rhythm"))
    if hits and all(b * spb in hits.get("kick", set()) for b in range(beats)) and meter == "4/4":
        items.append(("four on the floor", "rhythm", "rhythm"))
    back = set().union(*(hits.get(k, set()) for k in ("snare", "clap", "rim", "esnare"))) if hits else set()
    if meter == "4/4" and {4, 12} <= back and not {0, 8} & back:
        items.append(("backbeat", "rhythm", "rhythm"))
    if st.syncopated:
        items.append(("syncopated", "rhythm", "rhythm"))
    n_inst = len(instruments) + (1 if has_kit or has_perc else 0)
    texture = texture_of(n_inst, has_kit, st.orchestral)
    items.append((texture, "texture", ""))
    if dynamics in ("soft", "loud"):
        items.append((dynamics, "dynamics", "dynamics"))
    electronic = any(INSTRUMENTS[n].electronic for n in instruments) or (has_kit and DRUM_KITS[kit or ""].electronic)
    acoustic = all(INSTRUMENTS[n].acoustic for n in instruments) and not (has_kit and DRUM_KITS[kit or ""].electronic)
    if electronic:
        items.append(("electronic", "sound", "sound"))
    elif acoustic:
        items.append(("acoustic", "sound", "sound"))

    seen: set[str] = set()
    complete = [it for it in items if not (it[0] in seen or seen.add(it[0]))]  # type: ignore[func-returns-value]
    listed = [it for it in complete if not it[2] or it[2] == "mood2" or rng.random() < LIST_PROBABILITY[it[2]]]
    dropped = [it[0] for it in complete if it not in listed]
    for key in DROP_ORDER:
        for it in [it for it in listed if it[2] == key][::-1]:
            if len(listed) <= MAX_TAGS:
                break
            listed.remove(it)
            dropped.append(it[0])
    return ClipTags(
        tags=tuple(t for t, _, _ in listed),
        categories=tuple(c for _, c, _ in listed),
        all_tags=tuple(t for t, _, _ in complete),
        dropped=tuple(dropped),
        moods=tuple(moods),
        texture=texture,
    )


def choose_moods(style: Style, feats: MoodFeatures, rng: np.random.Generator) -> list[str]:
    """One or two moods allowed by :data:`MOOD_RULES`: the style's own moods first, then the general ones.

    Args:
        style: the clip's style.
        feats: ``quality`` (major/minor), ``tempo`` (slow/medium/fast), ``dynamics``, ``register`` (low/mid/high),
            ``drums`` (a kit plays).
        rng: generator for the draw.

    Returns:
        One or two distinct mood tags.
    """
    general = GENERAL_MOODS[(str(feats["quality"]), str(feats["tempo"]))]
    own = [m for m in style.moods if MOOD_RULES[m](feats)]
    common = [m for m in general if MOOD_RULES[m](feats)]
    first = own[int(rng.integers(len(own)))] if own else common[int(rng.integers(len(common)))]
    rest = [m for m in dict.fromkeys([*own, *common]) if m != first]
    if rest and rng.random() < 0.5:
        return [first, rest[int(rng.integers(len(rest)))]]
    return [first]
