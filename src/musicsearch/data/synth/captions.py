"""Captions of a clip: the ECALS tag caption (tags joined with ", ") and natural sentences from varied templates.

Sentences only say what the tags say (style, instruments, tempo, mood, key, meter, texture, dynamics, rhythm) with
a small set of paraphrases; none of the held-out synonyms of :data:`~musicsearch.data.synth.tags.HELDOUT_SYNONYMS`
is ever used, which :func:`heldout_hits` checks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from musicsearch.data.synth.tags import HELDOUT_SYNONYMS, KIT_PHRASES

TEMPO_WORDS: dict[str, tuple[str, ...]] = {
    "slow": ("slow", "slow-moving", "slow-paced"),
    "medium tempo": ("mid-tempo", "medium-tempo", "steady"),
    "fast": ("fast", "fast-paced", "brisk", "high-tempo"),
}
"""Paraphrases of the tempo tags used in sentences."""

DYNAMIC_PHRASES: dict[str, tuple[str, ...]] = {
    "soft": ("played softly", "at a soft volume", "softly played"),
    "loud": ("played loud", "at full volume", "loud and full"),
}

RHYTHM_PHRASES: dict[str, tuple[str, ...]] = {
    "swing": ("with a swing feel", "with a swinging rhythm"),
    "four on the floor": ("over a four on the floor kick", "with a four on the floor beat"),
    "backbeat": ("with a solid backbeat", "over a steady backbeat"),
    "syncopated": ("with syncopated rhythms", "full of syncopation"),
}

STYLE_NOUNS: dict[str, tuple[str, ...]] = {
    "waltz": ("waltz",),
    "march": ("march",),
    "lullaby": ("lullaby",),
    "ballad": ("ballad",),
    "chorale": ("chorale", "hymn"),
    "hip hop": ("hip hop beat", "hip hop instrumental"),
    "house": ("house track", "house groove"),
    "techno": ("techno track",),
    "orchestral": ("orchestral piece", "orchestral track"),
    "baroque": ("baroque piece", "baroque movement"),
}
"""Noun phrases for a style; other styles use '<style> piece / track / tune / instrumental'."""

CAPS = {"c#": "C#", "eb": "Eb", "f#": "F#", "ab": "Ab", "bb": "Bb"}


@dataclass(frozen=True)
class CaptionFacts:
    """What a sentence may mention, all of it taken from the clip's tags and plan.

    Attributes:
        style: style tag.
        genres: genre tags.
        instruments: melodic instrument tags, in part order.
        kit_tags: drum kit tags (``drums``, ``drum machine``, ``808``, ``brushes``) and ``percussion``.
        tempo: tempo tag.
        bpm: tempo in felt beats a minute.
        moods: mood tags.
        key: key tag (``"d minor"``).
        mode: modal tag (``"dorian"``) or ``""``.
        meter: time signature.
        texture: texture tag.
        dynamics: ``soft`` / ``loud`` or ``""``.
        rhythm: rhythm tags.
    """

    style: str
    genres: tuple[str, ...]
    instruments: tuple[str, ...]
    kit_tags: tuple[str, ...]
    tempo: str
    bpm: int
    moods: tuple[str, ...]
    key: str
    mode: str
    meter: str
    texture: str
    dynamics: str
    rhythm: tuple[str, ...]


def tag_caption(tags: Iterable[str], rng: np.random.Generator | None = None) -> str:
    """The ECALS-form caption: the tags joined with ``", "`` (shuffled when ``rng`` is given)."""
    items = list(tags)
    if rng is not None:
        items = [items[i] for i in rng.permutation(len(items))]
    return ", ".join(items)


def _a(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _key_phrase(f: CaptionFacts) -> str:
    pc, quality = f.key.split(" ", 1)
    name = CAPS.get(pc, pc.upper())
    return f"{name} {f.mode}" if f.mode else f"{name} {quality}"


class _Slots:
    """Phrase choices for one sentence."""

    def __init__(self, f: CaptionFacts, rng: np.random.Generator) -> None:
        self.f = f
        self.rng = rng

    def pick(self, options: tuple[str, ...] | list[str]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def tempo(self) -> str:
        return self.pick(TEMPO_WORDS[self.f.tempo])

    def mood(self) -> str:
        return self.f.moods[0]

    def moods(self) -> str:
        return _join(list(self.f.moods))

    def noun(self) -> str:
        s = self.f.style
        return self.pick(STYLE_NOUNS.get(s, (f"{s} piece", f"{s} track", f"{s} tune", f"{s} instrumental")))

    def players(self) -> list[str]:
        kit = [KIT_PHRASES[k] for k in self.f.kit_tags if k in KIT_PHRASES and k != "808"]
        if "808" in self.f.kit_tags:
            kit = ["an 808 drum machine" if k == "a drum machine" else k for k in kit]
        if "brushes" in self.f.kit_tags:
            kit = ["drums played with brushes" if k == "drums" else k for k in kit if k != "brushes"]
        if "percussion" in self.f.kit_tags:
            kit.append("percussion")
        return [*self.f.instruments, *kit]

    def instruments(self) -> str:
        return _join(self.players())

    def verb(self) -> str:
        return "plays" if len(self.players()) == 1 else "play"

    def texture(self) -> str:
        f, players = self.f, self.players()
        if f.texture == "solo":
            return self.pick((f"on solo {players[0]}", f"for solo {players[0]}", f"played by a lone {players[0]}"))
        if f.texture == "duo":
            return self.pick((f"for {_join(players)}", f"by a duo of {_join(players)}"))
        if f.texture == "trio":
            return self.pick((f"by a trio of {_join(players)}", f"for {_join(players)}"))
        if f.texture == "band":
            return self.pick((f"by a band with {_join(players)}", f"played by a band: {_join(players)}"))
        if f.texture == "orchestra":
            return self.pick((f"for orchestra with {_join(players)}", f"by an orchestra of {_join(players)}"))
        return self.pick((f"by an ensemble of {_join(players)}", f"for {_join(players)}"))

    def extras(self) -> str:
        bits = []
        if self.f.dynamics:
            bits.append(self.pick(DYNAMIC_PHRASES[self.f.dynamics]))
        if self.f.rhythm:
            bits.append(self.pick(RHYTHM_PHRASES[self.f.rhythm[0]]))
        return ", ".join(bits)


Template = Callable[[_Slots], str]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _tail(s: _Slots) -> str:
    e = s.extras()
    return f", {e}" if e else ""


TEMPLATES: tuple[Template, ...] = (
    lambda s: f"{_cap(_a(s.tempo()))}, {s.mood()} {s.noun()} {s.texture()}.",
    lambda s: f"{_cap(s.mood())} {s.noun()} in {_key_phrase(s.f)} with {s.instruments()}.",
    lambda s: f"This {s.tempo()} {s.noun()} features {s.instruments()} and feels {s.moods()}.",
    lambda s: f"{_cap(s.instruments())} {s.verb()} {_a(s.mood())} {s.noun()} at {s.f.bpm} bpm.",
    lambda s: f"{_cap(_a(s.noun()))} in {s.f.meter} time, {s.tempo()} and {s.mood()}, {s.texture()}.",
    lambda s: f"{_cap(_a(s.tempo()))} {s.f.style} {s.texture()}{_tail(s)}.",
    lambda s: f"Instrumental {s.f.style} with {s.instruments()}; the mood is {s.moods()}.",
    lambda s: (
        f"{_cap(_a(s.mood()))} piece of {s.f.style} music in {_key_phrase(s.f)}, {s.tempo()} at about "
        f"{s.f.bpm} beats per minute."
    ),
    lambda s: f"{_cap(s.f.style)} {s.texture()}{_tail(s)}, in {_key_phrase(s.f)}.",
    lambda s: f"{_cap(_a(s.moods()))} {s.noun()} for {s.instruments()}.",
    lambda s: f"{_cap(_key_phrase(s.f))} {s.noun()}, {s.tempo()}, with {s.instruments()}{_tail(s)}.",
    lambda s: (
        f"{_cap(_a(s.noun()))} for {s.instruments()} with {_a(s.mood())} character, {s.f.bpm} bpm in {s.f.meter}."
    ),
    lambda s: f"{_cap(s.instruments())} in {_a(s.tempo())}, {s.mood()} {s.f.style} arrangement.",
    lambda s: f"Listen to {_a(s.mood())} {s.noun()} {s.texture()}, {s.tempo()} in {_key_phrase(s.f)}.",
)
"""Sentence templates; each call of a template draws its paraphrases from the generator."""


def sentences(facts: CaptionFacts, rng: np.random.Generator, n: int = 2) -> list[str]:
    """``n`` natural-language captions from distinct templates.

    Args:
        facts: what the clip is.
        rng: generator for template and paraphrase choice.
        n: number of sentences (at most ``len(TEMPLATES)``).

    Returns:
        The sentences.
    """
    order = rng.permutation(len(TEMPLATES))[:n]
    slots = _Slots(facts, rng)
    return [TEMPLATES[int(i)](slots) for i in order]


def heldout_pattern() -> re.Pattern[str]:
    """A case-insensitive regular expression matching any held-out synonym as whole words."""
    phrases = sorted({p for ps in HELDOUT_SYNONYMS.values() for p in ps}, key=len, reverse=True)
    return re.compile(r"(?<![\w-])(" + "|".join(re.escape(p) for p in phrases) + r")(?![\w-])", re.IGNORECASE)


def heldout_hits(text: str) -> list[str]:
    """The held-out synonyms that occur in ``text`` (as whole words); empty for every corpus caption."""
    return [m.group(0) for m in heldout_pattern().finditer(text)]
