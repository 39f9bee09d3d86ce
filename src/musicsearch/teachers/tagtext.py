"""The teachers' tags written as natural text, the way a person would query them (issue 13).

musicnn's tag names are dataset labels: MSD's decades (``00s``), Last.fm spellings (``female vocalists``,
``rnb``, ``Hip-Hop``), MagnaTagATune's fragments (``female``, ``no voice``, ``man``). The text tower reads each tag
as words, so each is rewritten as the phrase a query would use (``00s`` -> ``2000s``, ``female`` -> ``female
vocals``, ``easy listening`` stays). Unlike :func:`musicsearch.teachers.pseudolabel.canonical_tag`, nothing is
merged or dropped: every column of every teacher keeps its own text, so soft targets cover all 100 tags.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["natural_tag_text", "teacher_tag_texts"]

_TEXT: dict[str, str] = {
    # MSD decades: when a record came out (they still have a sound)
    "00s": "2000s",
    "90s": "1990s",
    "80s": "1980s",
    "70s": "1970s",
    "60s": "1960s",
    # vocals
    "female": "female vocals",
    "woman": "female vocals",
    "female vocal": "female vocals",
    "female voice": "female vocals",
    "female vocalists": "female vocals",
    "female vocalist": "female vocalist",
    "male": "male vocals",
    "man": "male vocals",
    "male vocal": "male vocals",
    "male voice": "male vocals",
    "male vocalists": "male vocals",
    "vocal": "vocals",
    "voice": "voice",
    "singing": "singing",
    "no vocals": "no vocals",
    "no vocal": "no vocals, instrumental",
    "no voice": "no voice, instrumental",
    "choral": "choral music",
    "opera": "opera singing",
    # genres and styles
    "classic": "classical music",
    "classical": "classical",
    "hip-hop": "hip hop",
    "rnb": "r&b, rhythm and blues",
    "house": "house music",
    "electro": "electro music",
    "indian": "indian music",
    "new age": "new age music",
    "country": "country music",
    "dance": "dance music",
    "party": "party music",
    "oldies": "oldies",
    "beat": "beat",
    "beats": "beats",
    "solo": "solo instrument",
    "weird": "weird, strange",
    "fast": "fast tempo",
    "slow": "slow tempo",
}


def natural_tag_text(tag: str) -> str:
    """The natural-language text of one teacher tag (lower case; unknown tags are returned lower-cased).

    >>> natural_tag_text("00s"), natural_tag_text("female"), natural_tag_text("easy listening")
    ('2000s', 'female vocals', 'easy listening')
    """
    t = tag.strip().lower()
    return _TEXT.get(t, t)


def teacher_tag_texts(teacher_tags: Sequence[Sequence[str]]) -> list[str]:
    """The texts of several teachers' tags, concatenated in teacher then column order (``2 x 50 = 100`` for
    MSD and MTT): the columns of the concatenated teacher probabilities."""
    return [natural_tag_text(t) for tags in teacher_tags for t in tags]
