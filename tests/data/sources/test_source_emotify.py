"""Emotify adapter on a tiny fake data.csv (leading spaces in the header, as the real file) + emotifymusic/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from musicsearch.data.sources.emotify import GEMS, file_number, load_emotify
from musicsearch.data.sources.registry import load_dataset
from musicsearch.errors import ManifestError

HEADER = (
    "track id, genre, amazement, solemnity, tenderness, nostalgia, calmness, power, joyful_activation, tension, "
    "sadness, mood, liked, disliked, age, gender, mother tongue"
)


def _vote(track: int, genre: str, moods: set[str]) -> str:
    cells = [str(track), genre, *("1" if m in moods else "0" for m in GEMS), "3", "1", "0", "25", "1", "Dutch"]
    return ", ".join(cells)


VOTES = [
    (1, "classical", {"solemnity", "calmness"}),
    (1, "classical", {"solemnity"}),
    (100, "classical", {"tenderness"}),
    (101, "rock", {"power", "tension"}),
    (101, "rock", {"power"}),
    (205, "electronic", {"joyful_activation"}),
    (399, "pop", {"sadness", "nostalgia"}),  # tie between nostalgia and sadness -> the first in GEMS order
]


def _make_emotify(root: Path, votes: list[tuple[int, str, set[str]]] = VOTES) -> None:
    (root / "data.csv").write_text(HEADER + "\n" + "\n".join(_vote(*v) for v in votes) + "\n")
    for t, genre, _ in votes:
        p = root / "emotifymusic" / genre / f"{file_number(t)}.mp3"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


def test_track_to_file_rule() -> None:
    assert [file_number(t) for t in (1, 100, 101, 200, 205, 301, 399, 400)] == [1, 100, 1, 100, 5, 1, 99, 100]


def test_reads_votes_labels_and_files(tmp_path: Path) -> None:
    _make_emotify(tmp_path)
    ds = load_dataset("emotify", tmp_path)
    assert ds.task == "multiclass" and ds.metric == "accuracy" and ds.label_names == GEMS
    assert ds.label_texts == ("amazement", "solemnity", "tenderness", "nostalgia", "calmness", "power",
                              "joyful activation", "tension", "sadness")  # fmt: skip
    assert [t.track_id for t in ds.tracks] == ["1", "100", "101", "205", "399"]
    assert [ds.label_names[i] for i in ds.labels] == ["solemnity", "tenderness", "power", "joyful_activation",
                                                      "nostalgia"]  # fmt: skip
    files = [Path(t.audio_path).relative_to(tmp_path).as_posix() for t in ds.tracks]
    assert files == [
        "emotifymusic/classical/1.mp3",
        "emotifymusic/classical/100.mp3",
        "emotifymusic/rock/1.mp3",
        "emotifymusic/electronic/5.mp3",
        "emotifymusic/pop/99.mp3",
    ]
    assert ds.tracks[0].metadata["n_votes"] == 2
    np.testing.assert_allclose(ds.tracks[0].metadata["mean_votes"][:5], [0, 1, 0, 0, 0.5])
    assert {t.split for t in ds.tracks} <= {"train", "valid", "test"}


def test_given_splits_and_seeded_default_is_reproducible(tmp_path: Path) -> None:
    _make_emotify(tmp_path)
    mapping = {"1": "train", "100": "train", "101": "valid", "205": "test", "399": "test"}
    assert [t.split for t in load_emotify(tmp_path, splits=mapping).tracks] == list(mapping.values())
    assert [t.split for t in load_emotify(tmp_path).tracks] == [t.split for t in load_emotify(tmp_path).tracks]
    with pytest.raises(ManifestError, match="'205'"):
        load_emotify(tmp_path, splits={k: v for k, v in mapping.items() if k != "205"})


def test_genre_outside_its_block_is_refused(tmp_path: Path) -> None:
    _make_emotify(tmp_path, [*VOTES, (150, "pop", {"power"})])  # pop would span 101-200 and 301-400
    with pytest.raises(ManifestError, match="block of 100"):
        load_emotify(tmp_path)


def test_missing_and_malformed(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"data\.csv"):
        load_emotify(tmp_path)
    (tmp_path / "data.csv").write_text("track id, genre, amazement\n1, pop, 1\n")
    with pytest.raises(ManifestError, match="no column 'solemnity'"):
        load_emotify(tmp_path)
    _make_emotify(tmp_path)
    (tmp_path / "emotifymusic" / "pop" / "99.mp3").unlink()
    with pytest.raises(ManifestError, match=r"pop/99\.mp3"):
        load_emotify(tmp_path)
