"""Query and filter parsing (:mod:`musicsearch.search.query`): negative terms, filter syntax, refused input."""

from __future__ import annotations

import pytest

from musicsearch.errors import MusicSearchError
from musicsearch.index.metadata import MetadataFilter
from musicsearch.search.query import MAX_QUERY_CHARS, parse_filters, parse_query


@pytest.mark.parametrize(
    ("text", "positive", "negatives"),
    [
        ("calm piano, no vocals", "calm piano", ("vocals",)),
        ("calm piano with no vocals", "calm piano", ("vocals",)),
        ("Piano NO Vocals", "Piano", ("Vocals",)),
        ('jazz -drums -"electric guitar"', "jazz", ("drums", "electric guitar")),
        ("rock without drums but with saxophone", "rock saxophone", ("drums",)),
        ("no drums, no bass, ambient pads", "ambient pads", ("drums", "bass")),
        ("upbeat pop minus autotune and with strings", "upbeat pop strings", ("autotune",)),
        ("music from 1985 at -5 dB", "music from 1985 at -5 dB", ()),
        ("sad song -vocals -VOCALS", "sad song", ("vocals",)),
        ("a quiet song.", "a quiet song", ()),
        ("no vocals", "", ("vocals",)),
    ],
)
def test_parse_query_splits_negative_terms(text: str, positive: str, negatives: tuple[str, ...]) -> None:
    parsed = parse_query(text)
    assert (parsed.positive, parsed.negatives) == (positive, negatives)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("x" * (MAX_QUERY_CHARS + 1), "limit"),
        ("piano\x00", "control"),
        ("caf\ufffd", "UTF-8"),
        (" ".join(f"-t{i}" for i in range(9)) + " jazz", "negative terms"),
    ],
)
def test_parse_query_rejects_bad_text(text: str, match: str) -> None:
    with pytest.raises(MusicSearchError, match=match):
        parse_query(text)


def test_parse_filters() -> None:
    f = parse_filters(
        ["artist=Nina Simone", "year>=1960", "year<1970", "duration<=3:30", "tag=jazz", "tag!=vocals", "-tag=Drums"]
    )
    assert f == MetadataFilter(
        artist="Nina Simone",
        year_min=1960,
        year_max=1969,
        duration_max=210.0,
        tags=("jazz",),
        without_tags=("vocals", "Drums"),
    )
    assert parse_filters("year=1999") == MetadataFilter(year_min=1999, year_max=1999)
    assert parse_filters(["folder=a/b", 'album="Blue Train"']) == MetadataFilter(folder="a/b", album="Blue Train")
    strict = parse_filters("duration>60")
    assert strict.duration_min is not None and 60 < strict.duration_min < 60.0001
    assert parse_filters(None).is_empty() and parse_filters({"artist": "X"}) == MetadataFilter(artist="X")


@pytest.mark.parametrize(
    ("item", "match"),
    [
        ("colour=red", "unknown key"),
        ("artist>=x", "takes '='"),
        ("year>=nineteen", "whole number"),
        ("year=", "empty"),
        ("duration<=inf", "finite"),
        ("-artist=x", "only tags"),
        ("nonsense", "KEY OP VALUE"),
    ],
)
def test_parse_filters_rejects_bad_input(item: str, match: str) -> None:
    with pytest.raises(MusicSearchError, match=match):
        parse_filters([item])
    with pytest.raises(MusicSearchError, match="twice"):
        parse_filters(["artist=a", "artist=b"])
