"""Tag vocabulary, tag derivation and captions of the synthetic corpus (composition only, no audio)."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from musicsearch.data.synth.captions import TEMPLATES, CaptionFacts, heldout_hits, sentences, tag_caption
from musicsearch.data.synth.compose import compose_clip
from musicsearch.data.synth.corpus import describe
from musicsearch.data.synth.styles import get_style
from musicsearch.data.synth.tags import (
    CATEGORIES,
    GENERAL_MOODS,
    HELDOUT_SYNONYMS,
    MAX_TAGS,
    MIN_TAGS,
    MOOD_RULES,
    VOCABULARY,
    bpm_band,
    choose_moods,
    tempo_class,
)


@pytest.fixture(scope="module")
def described() -> list[tuple[list[str], list[str], dict]]:
    return [describe(compose_clip(1, i, seconds=6.0), 1, i) for i in range(400)]


def test_vocabulary_has_150_tags_each_with_a_documented_category() -> None:
    assert len(VOCABULARY) >= 150
    assert set(VOCABULARY.values()) <= set(CATEGORIES)
    for cat in CATEGORIES:
        assert any(c == cat for c in VOCABULARY.values()), cat
    instruments = [t for t, c in VOCABULARY.items() if c == "instrument"]
    assert len(instruments) >= 25
    assert {"acoustic guitar", "string ensemble", "electric piano"} <= set(instruments)


def test_heldout_synonyms_are_not_tags_and_name_real_tags() -> None:
    for tag, synonyms in HELDOUT_SYNONYMS.items():
        assert tag in VOCABULARY, tag
        for s in synonyms:
            assert s not in VOCABULARY, s
    phrases = [p for ps in HELDOUT_SYNONYMS.values() for p in ps]
    assert len(phrases) == len(set(phrases)) >= 100


def test_tags_per_clip_and_vocabulary(described: list[tuple[list[str], list[str], dict]]) -> None:
    counts = Counter()
    for tags, _captions, meta in described:
        assert MIN_TAGS <= len(tags) <= MAX_TAGS
        assert len(set(tags)) == len(tags)
        assert set(tags) <= set(VOCABULARY)
        assert set(tags) <= set(meta["all_tags"])
        assert set(meta["tag_categories"].values()) <= set(CATEGORIES)
        counts.update(tags)
    # the generator reaches most of its vocabulary even in 400 clips ...
    assert len(counts) >= 0.85 * len(VOCABULARY)
    # ... with long-tailed frequencies: the head tags are far more common than the median tag
    freq = sorted(counts.values(), reverse=True)
    assert freq[0] >= 10 * freq[len(freq) // 2]
    mean = np.mean([len(t) for t, _, _ in described])
    assert 9 <= mean <= 14


def test_captions_are_ecals_form_plus_sentences(described: list[tuple[list[str], list[str], dict]]) -> None:
    for tags, captions, _ in described[:100]:
        assert len(captions) == 3
        assert sorted(captions[0].split(", ")) == sorted(tags)
        for sentence in captions[1:]:
            assert sentence[0].isupper() and sentence.endswith(".")
            assert "  " not in sentence and " ," not in sentence
    # templates are varied: many distinct sentence openings
    openings = {c[1].split()[0] for _, c, _ in described} | {c[2].split()[0] for _, c, _ in described}
    assert len(openings) >= 20


def test_captions_and_tags_never_use_heldout_synonyms(described: list[tuple[list[str], list[str], dict]]) -> None:
    for tags, captions, _ in described:
        for text in (*captions, *tags):
            assert heldout_hits(text) == [], text


def test_heldout_matcher_finds_whole_words_only() -> None:
    assert heldout_hits("a quick jazz tune on keys") == ["quick", "keys"]
    assert heldout_hits("a fast jazz tune on piano, quickly") == []
    assert heldout_hits("Laid-back groove") == ["Laid-back"]


def test_sentences_name_the_tagged_facts(described: list[tuple[list[str], list[str], dict]]) -> None:
    """Every instrument a sentence names is one of the clip's instruments (no invented players)."""
    names = sorted((t for t, c in VOCABULARY.items() if c == "instrument"), key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(re.escape(n) for n in names) + r")\b")
    for _tags, captions, meta in described[:200]:
        allowed = {t for t in meta["all_tags"] if VOCABULARY[t] == "instrument"} | {"drums", "drum machine", "808"}
        for sentence in captions[1:]:
            for m in pattern.finditer(sentence.lower()):
                assert m.group(1) in allowed, (sentence, meta["instruments"])


def test_tempo_and_bpm_tags() -> None:
    assert tempo_class(70, "4/4") == "slow"
    assert tempo_class(100, "3/4") == "medium tempo"
    assert tempo_class(140, "4/4") == "fast"
    assert tempo_class(100, "6/8") == "fast"  # a jig: 100 dotted quarters a minute
    assert bpm_band(120) == "120-129 bpm"
    assert bpm_band(129.9) == "120-129 bpm"


def test_mood_rules_hold_for_chosen_moods() -> None:
    rng = np.random.default_rng(0)
    for style in ("metal", "lullaby", "bossa nova", "orchestral", "folk"):
        for quality in ("major", "minor"):
            for tempo in ("slow", "medium", "fast"):
                for dyn in ("soft", "medium", "loud"):
                    feats = {"quality": quality, "tempo": tempo, "dynamics": dyn, "register": "mid", "drums": True}
                    moods = choose_moods(get_style(style), feats, rng)
                    assert 1 <= len(moods) <= 2
                    assert all(MOOD_RULES[m](feats) for m in moods), (style, feats, moods)
    for (quality, tempo), moods in GENERAL_MOODS.items():
        for dyn in ("soft", "medium", "loud"):
            for register in ("low", "mid", "high"):
                feats = {"quality": quality, "tempo": tempo, "dynamics": dyn, "register": register, "drums": False}
                assert MOOD_RULES[moods[0]](feats), (quality, tempo, dyn, register)


def test_every_template_renders_for_every_texture() -> None:
    rng = np.random.default_rng(1)
    for texture, instruments in [
        ("solo", ("piano",)),
        ("duo", ("violin", "harp")),
        ("trio", ("flute", "cello", "harp")),
        ("band", ("electric guitar", "electric bass")),
        ("orchestra", ("string ensemble", "french horn", "timpani", "harp")),
        ("ensemble", ("choir", "church organ", "tuba", "cello")),
    ]:
        facts = CaptionFacts(
            style="waltz",
            genres=("waltz",),
            instruments=instruments,
            kit_tags=("drums",) if texture == "band" else (),
            tempo="slow",
            bpm=72,
            moods=("melancholic", "tender"),
            key="d minor",
            mode="",
            meter="3/4",
            texture=texture,
            dynamics="soft",
            rhythm=("swing",),
        )
        for _ in range(len(TEMPLATES) * 3):
            for s in sentences(facts, rng, n=2):
                assert heldout_hits(s) == []
                assert "{" not in s and "}" not in s
    assert tag_caption(["a", "b", "c"]) == "a, b, c"


def test_every_vocabulary_tag_is_reachable() -> None:
    """Each instrument is in some style, each bpm band inside some style's range, each genre some style's."""
    from musicsearch.data.synth.instruments import INSTRUMENTS
    from musicsearch.data.synth.styles import STYLES

    used = {n for s in STYLES for p in s.parts for n in p.instruments}
    assert set(INSTRUMENTS) <= used
    genres = {g for s in STYLES for g in s.genres}
    assert {t for t, c in VOCABULARY.items() if c == "genre"} == genres
    for tag, cat in VOCABULARY.items():
        if cat == "bpm":
            lo = int(tag.split("-")[0])
            assert any(s.bpm[0] <= lo + 9 and s.bpm[1] >= lo for s in STYLES), tag
    modes = {m for s in STYLES for m, _ in s.modes}
    assert {t for t, c in VOCABULARY.items() if c == "mode"} <= modes | {"major", "minor"}
