"""Text queries and metadata filters: what a user types, checked and parsed before anything is searched.

:func:`parse_query` splits a text query into what is wanted and its negative terms ("calm piano, no vocals");
:func:`parse_filters` turns ``KEY OP VALUE`` strings or a mapping of fields into a
:class:`~musicsearch.index.metadata.MetadataFilter`, every value checked for its type and range. Both refuse bad
input with a :class:`~musicsearch.errors.MusicSearchError` that names it and shows the syntax.
"""

from __future__ import annotations

import dataclasses
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from musicsearch.errors import MusicSearchError
from musicsearch.index.metadata import MetadataFilter

__all__ = [
    "FILTER_KEYS",
    "MAX_NEGATIVES",
    "MAX_QUERY_CHARS",
    "SURROGATES",
    "ParsedQuery",
    "parse_filters",
    "parse_query",
    "short_repr",
]

#: Longest accepted text query, in characters.
MAX_QUERY_CHARS = 500
#: Most negative terms in one query.
MAX_NEGATIVES = 8

#: Words that start a negative term.
NEGATION_WORDS = frozenset({"no", "without", "not", "minus", "except", "excluding", "exclude"})
#: Words that end a negative term (and are dropped next to one).
CONJUNCTIONS = frozenset({"and", "but", "or", "with", "yet", "plus"})
#: Words of a negative term after its marker, at most.
MAX_NEGATIVE_WORDS = 3
_TOKEN = re.compile(r"""-"[^"]*"|-'[^']*'|[,;.!?]|[^\s,;.!?]+""")


@dataclass(frozen=True)
class ParsedQuery:
    """A text query split into what is wanted and what is not.

    Attributes:
        raw: the query as given (normalised: NFC, spaces collapsed).
        positive: the text embedded as the query ("" when the query has only negative terms).
        negatives: negative terms, each embedded alone.
    """

    raw: str
    positive: str
    negatives: tuple[str, ...] = ()


#: Control characters (Unicode category Cc) other than tab, newline and carriage return.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
#: Lone surrogates: what undecodable bytes become in ``sys.argv`` and file names (``surrogateescape``).
SURROGATES = re.compile("[\ud800-\udfff]")


def _check_text(text: Any, what: str) -> str:
    """``text`` checked and normalised (NFC, spaces collapsed); every check runs at C speed, so a huge string is
    refused as fast as a short one."""
    if not isinstance(text, str):
        raise MusicSearchError(f"{what} must be a string, got {type(text).__name__}")
    if "\ufffd" in text or SURROGATES.search(text):
        raise MusicSearchError(f"{what} is not valid UTF-8 text (it holds undecodable bytes); send UTF-8")
    if _CONTROL.search(text):
        raise MusicSearchError(f"{what} holds control characters; send plain text")
    text = " ".join(unicodedata.normalize("NFC", text).split())
    if len(text) > MAX_QUERY_CHARS:
        raise MusicSearchError(
            f"{what} is {len(text)} characters long; the limit is {MAX_QUERY_CHARS}: describe the music in a sentence"
        )
    return text


def parse_query(text: str) -> ParsedQuery:
    """Split a query into its positive text and its negative terms.

    Rule (applied left to right, case-insensitive markers):

    * ``-word`` or ``-"a phrase"`` is a negative term;
    * ``no``, ``without``, ``not``, ``minus``, ``except``, ``excluding``, ``exclude`` start a negative term of
      the following words, up to 3, stopping at punctuation (``, ; . ! ?``), a conjunction (``and but or with yet
      plus``) or another marker: ``"piano, no vocals"`` -> ``"piano"`` minus ``"vocals"``. Write
      ``"no drums, no bass"`` (or ``-drums -bass``) for two negative terms;
    * conjunctions next to a removed negative term are dropped (``"calm piano with no vocals"`` -> ``"calm
      piano"``), and so is leftover punctuation at the ends.

    Args:
        text: the query.

    Returns:
        The :class:`ParsedQuery`.

    Raises:
        MusicSearchError: empty, over :data:`MAX_QUERY_CHARS` characters, holding control characters or
            undecodable bytes, or more than :data:`MAX_NEGATIVES` negative terms.
    """
    raw = _check_text(text, "the query")
    if not raw:
        raise MusicSearchError("the query is empty; describe the music you want, e.g. 'calm piano, no vocals'")
    tokens = _TOKEN.findall(raw)
    pos: list[str] = []
    negs: list[str] = []

    def is_word(tok: str) -> bool:
        return tok not in ",;.!?"

    def drop_trailing_conjunctions() -> None:
        while pos and pos[-1].lower() in CONJUNCTIONS:
            pos.pop()

    i, n = 0, len(tokens)
    after_negative = False
    while i < n:
        tok = tokens[i]
        low = tok.lower()
        if after_negative and low in CONJUNCTIONS:
            i += 1
            continue
        after_negative = False
        if tok.startswith("-") and len(tok) > 1 and not _is_number(tok):
            term = tok[1:].strip("\"'").strip()
            if term:
                negs.append(term)
                drop_trailing_conjunctions()
                after_negative = True
            i += 1
            continue
        if low in NEGATION_WORDS and i + 1 < n and is_word(tokens[i + 1]):
            j = i + 1
            words: list[str] = []
            while (
                j < n
                and is_word(tokens[j])
                and tokens[j].lower() not in CONJUNCTIONS | NEGATION_WORDS
                and not tokens[j].startswith("-")
                and len(words) < MAX_NEGATIVE_WORDS
            ):
                words.append(tokens[j])
                j += 1
            if words:
                negs.append(" ".join(words))
                drop_trailing_conjunctions()
                after_negative = True
                i = j
                continue
        pos.append(tok)
        i += 1
    positive = _join_tokens(pos)
    seen: set[str] = set()
    negatives = tuple(t for t in negs if not (t.casefold() in seen or seen.add(t.casefold())))  # type: ignore[func-returns-value]
    if len(negatives) > MAX_NEGATIVES:
        raise MusicSearchError(f"the query has {len(negatives)} negative terms; at most {MAX_NEGATIVES} are allowed")
    return ParsedQuery(raw, positive, negatives)


def _is_number(tok: str) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return True


def _join_tokens(tokens: Sequence[str]) -> str:
    out = ""
    for tok in tokens:
        if tok in ",;.!?":
            if out and out[-1] not in ",;.!?":
                out += tok
        else:
            out += (" " if out else "") + tok
    out = out.strip(" ,;.!?")
    words = out.split(" ")
    while words and words[0].lower() in CONJUNCTIONS:
        words.pop(0)
    while words and words[-1].lower().strip(",;.!?") in CONJUNCTIONS:
        words.pop()
    return " ".join(words).strip(" ,;.!?")


# --------------------------------------------------------------------------------------------------------------
# Filters

FILTER_KEYS = ("artist", "album", "year", "duration", "folder", "tag")
_FILTER = re.compile(r"^\s*(-?)([A-Za-z_]+)\s*(>=|<=|!=|==|=|>|<|:)\s*(.*?)\s*$", re.DOTALL)


def _filter_error(item: str, why: str) -> MusicSearchError:
    return MusicSearchError(
        f"bad filter {item!r}: {why}. Filters look like artist=NAME, album=NAME, year>=1990, year=1999, "
        "duration<=300 (seconds, or m:ss), folder=PATH, tag=TAG, tag!=TAG (or -tag=TAG)"
    )


def _number(item: str, value: str, *, integer: bool) -> float:
    text = value.strip()
    try:
        if not integer and ":" in text:
            m, s = text.split(":", 1)
            out = 60 * int(m) + float(s)
        else:
            out = int(text) if integer else float(text)
    except ValueError:
        raise _filter_error(item, f"{value!r} is not a {'whole number' if integer else 'number'}") from None
    if not math.isfinite(out):
        raise _filter_error(item, f"{value!r} is not a finite number")
    return float(out)


def parse_filters(filters: MetadataFilter | Mapping[str, Any] | Sequence[str] | str | None) -> MetadataFilter:
    """Build a :class:`~musicsearch.index.metadata.MetadataFilter` from ``KEY OP VALUE`` strings.

    Keys: ``artist``, ``album`` (``=``, exact up to case), ``year`` (whole numbers; ``= >= <= > <``),
    ``duration`` (seconds or ``m:ss``; ``>= <= > <``), ``folder`` (``=``: that folder or below), ``tag``
    (``=``: must have; ``!=`` or ``-tag=``: must not have; repeat for several). Conditions combine with AND.

    A mapping (or a :class:`MetadataFilter`) gives the fields directly: ``artist``, ``album``, ``folder`` (text),
    ``year_min``, ``year_max`` (whole numbers), ``duration_min``, ``duration_max`` (seconds, finite), ``tags``,
    ``without_tags`` (a list of tags, or one string, which is **one tag**: ``{"tags": "jazz"}`` means the tag
    ``jazz``, never the letters j, a, z, z). Each value is checked for its type.

    Args:
        filters: ``None``; a filter; a mapping of :class:`MetadataFilter` fields; or strings such as
            ``["artist=Nina Simone", "year>=1960", "tag=jazz"]`` (one string may hold one condition).

    Returns:
        The filter.

    Raises:
        MusicSearchError: an unknown key, operator or value, a value of the wrong type, or ``filters`` of a type
            other than those above, naming it and showing the syntax.
    """
    if filters is None:
        return MetadataFilter()
    if isinstance(filters, MetadataFilter):
        return _checked_filter(dataclasses.asdict(filters))
    if isinstance(filters, Mapping):
        return _checked_filter(filters)
    if isinstance(filters, bytes | bytearray | memoryview) or not isinstance(filters, str | Iterable):
        raise MusicSearchError(
            f"filters must be a list of conditions like ['year>=1990', 'tag=jazz'], a mapping of filter fields "
            f"like {{'year_min': 1990}}, or None; got {type(filters).__name__} {short_repr(filters)}"
        )
    items = [filters] if isinstance(filters, str) else list(filters)
    fields: dict[str, Any] = {}
    tags: list[str] = []
    without: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise MusicSearchError(f"filters must be strings like 'year>=1990', got {item!r}")
        item = _check_text(item, "a filter")
        m = _FILTER.match(item)
        if not m:
            raise _filter_error(item, "expected KEY OP VALUE")
        neg, key, op, value = m.group(1), m.group(2).lower(), m.group(3), m.group(4).strip().strip("\"'")
        key = {"tags": "tag", "genre": "tag"}.get(key, key)
        op = "=" if op in ("==", ":") else op
        if key not in FILTER_KEYS:
            raise _filter_error(item, f"unknown key {key!r} (known: {', '.join(FILTER_KEYS)})")
        if not value:
            raise _filter_error(item, "the value is empty")
        if neg and not (key == "tag" and op == "="):
            raise _filter_error(item, "only tags can be negated (-tag=TAG)")
        if key in ("artist", "album", "folder"):
            if op != "=":
                raise _filter_error(item, f"{key} takes '=' only")
            if key in fields:
                raise _filter_error(item, f"{key} is given twice")
            fields[key] = value
        elif key == "tag":
            if op == "=" and not neg:
                tags.append(value)
            elif op == "!=" or neg:
                without.append(value)
            else:
                raise _filter_error(item, "tag takes '=' or '!='")
        else:
            integer = key == "year"
            x = _number(item, value, integer=integer)
            lo_key, hi_key = f"{key}_min", f"{key}_max"
            step = 1.0 if integer else 0.0
            if op in ("=",):
                lo, hi = x, x
            elif op == ">=":
                lo, hi = x, None
            elif op == ">":
                lo, hi = (x + step if integer else math.nextafter(x, math.inf)), None
            elif op == "<=":
                lo, hi = None, x
            elif op == "<":
                lo, hi = None, (x - step if integer else math.nextafter(x, -math.inf))
            else:
                raise _filter_error(item, f"{key} takes = >= <= > <")
            if lo is not None:
                fields[lo_key] = max(lo, fields.get(lo_key, -math.inf))
            if hi is not None:
                fields[hi_key] = min(hi, fields.get(hi_key, math.inf))
    for key in ("year_min", "year_max"):
        if key in fields:
            fields[key] = int(fields[key])
    return _checked_filter({**fields, "tags": tuple(tags), "without_tags": tuple(without)})


#: Largest year a filter accepts (either sign); years beyond would only overflow the database's integers.
MAX_FILTER_YEAR = 1_000_000
_FILTER_FIELDS = tuple(f.name for f in dataclasses.fields(MetadataFilter))


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages about hostile input."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _checked_filter(fields: Mapping[Any, Any]) -> MetadataFilter:
    """A :class:`MetadataFilter` from its fields, each value checked for its type and range (see
    :func:`parse_filters`)."""
    unknown = [key for key in fields if key not in _FILTER_FIELDS]
    if unknown:
        raise MusicSearchError(
            f"unknown filter field {short_repr(unknown[0])}; the fields are {', '.join(_FILTER_FIELDS)} "
            "(or write conditions like 'year>=1990')"
        )
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if value is None:
            continue
        got = f"got {type(value).__name__} {short_repr(value)}"
        if key in ("artist", "album", "folder"):
            if not isinstance(value, str):
                raise MusicSearchError(f"filter field {key!r} must be text (a name or folder), {got}")
            out[key] = _check_text(value, f"filter field {key!r}")
            if not out[key]:
                raise MusicSearchError(f"filter field {key!r} must be non-empty text (or None for no condition), {got}")
        elif key in ("year_min", "year_max"):
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise MusicSearchError(f"filter field {key!r} must be a whole number (a year such as 1990), {got}")
            if abs(int(value)) > MAX_FILTER_YEAR:
                raise MusicSearchError(
                    f"filter field {key!r} must be a year between -{MAX_FILTER_YEAR} and {MAX_FILTER_YEAR}, {got}"
                )
            out[key] = int(value)
        elif key in ("duration_min", "duration_max"):
            if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
                raise MusicSearchError(f"filter field {key!r} must be a number of seconds, {got}")
            if not math.isfinite(float(value)):
                raise MusicSearchError(f"filter field {key!r} must be a finite number of seconds, {got}")
            out[key] = float(value)
        else:  # tags, without_tags: one string is one tag
            items = [value] if isinstance(value, str) else value
            if isinstance(items, bytes | bytearray | Mapping) or not isinstance(items, Iterable):
                raise MusicSearchError(f"filter field {key!r} must be a list of tags (or one tag as a string), {got}")
            tags = []
            for tag in items:
                if not isinstance(tag, str):
                    raise MusicSearchError(f"filter field {key!r} must be a list of tags (strings), {got}")
                tag = _check_text(tag, f"a tag in filter field {key!r}")
                if not tag:
                    raise MusicSearchError(f"filter field {key!r} must be a list of non-empty tags, {got}")
                tags.append(tag)
            out[key] = tuple(tags)
    return MetadataFilter(**out)
