"""FMA adapter on a tiny fake fma_metadata/tracks.csv (3-row header) + fma_small/NNN/NNNNNN.mp3."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from musicsearch.data.sources.fma import audio_relpath, load_fma
from musicsearch.data.sources.registry import load_dataset
from musicsearch.errors import ManifestError

TOP = ["", "album", "artist", "set", "set", "track", "track"]
SUB = ["", "title", "name", "split", "subset", "genre_top", "title"]
ROWS = [
    ["2", "AWOL - A Way Of Life", "AWOL", "training", "small", "Hip-Hop", "Food"],
    ["5", "AWOL", 'Name, with "quotes"\nand a newline', "training", "small", "Hip-Hop", "This World"],
    ["10", "Constant Hitmaker", "Kurt Vile", "test", "small", "Pop", "Freeway"],
    ["140", "Make Believe", "Alec K. Redfearn", "validation", "small", "Folk", "Queen Of The Wires"],
    ["141", "Ask Me", "Alec K. Redfearn", "training", "medium", "Folk", "Ohio"],
]


def _make_fma(root: Path, *, top: list[str] = TOP) -> None:
    (root / "fma_metadata").mkdir(parents=True)
    with (root / "fma_metadata" / "tracks.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(top)
        w.writerow(SUB)
        w.writerow(["track_id"] + [""] * (len(TOP) - 1))
        w.writerows(ROWS)
    for row in ROWS[:4]:
        p = root / "fma_small" / audio_relpath(int(row[0]))
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


def test_reads_small_subset_split_and_genres(tmp_path: Path) -> None:
    _make_fma(tmp_path)
    ds = load_dataset("fma-small", tmp_path)
    assert ds.task == "multiclass" and ds.metric == "accuracy"
    assert [t.track_id for t in ds.tracks] == ["000002", "000005", "000010", "000140"]  # the medium track is out
    assert [t.split for t in ds.tracks] == ["train", "train", "test", "valid"]
    assert ds.label_names == ("Folk", "Hip-Hop", "Pop")
    assert ds.label_texts == ("folk", "hip hop", "pop")
    assert ds.labels.tolist() == [1, 1, 2, 0]
    assert ds.tracks[3].audio_path == str(tmp_path / "fma_small" / "000" / "000140.mp3")
    assert audio_relpath(123456) == "123/123456.mp3"


def test_medium_includes_the_smaller_subset(tmp_path: Path) -> None:
    _make_fma(tmp_path)
    assert len(load_fma(tmp_path, subset="medium", check_audio=False)) == 5


def test_missing_file_and_missing_column(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"fma_metadata/tracks\.csv"):
        load_fma(tmp_path)
    _make_fma(tmp_path, top=["", "album", "artist", "set", "sets", "track", "track"])
    with pytest.raises(ManifestError, match="subset"):
        load_fma(tmp_path)
