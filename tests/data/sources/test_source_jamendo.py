"""MTG-Jamendo adapter on a tiny fake copy of data/splits/split-0 + audio folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from musicsearch.data.sources.jamendo import load_mtg_jamendo
from musicsearch.data.sources.registry import load_dataset
from musicsearch.errors import ManifestError

HEADER = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n"
ROWS = {
    "train": [
        "track_0000214\tartist_000014\talbum_000031\t14/214.mp3\t124.6\tgenre---punkrock\n",
        "track_0000775\tartist_000104\talbum_000126\t75/775.mp3\t198.1\tgenre---easylistening\tgenre---electronic\n",
    ],
    "validation": ["track_0001729\tartist_000264\talbum_000252\t29/1729.mp3\t270.2\tgenre---pop\tgenre---rock\n"],
    "test": ["track_0002213\tartist_000276\talbum_000357\t13/2213.mp3\t242.4\tgenre---jazz\tgenre---world\n"],
}


def _make_jamendo(root: Path) -> None:
    split_dir = root / "data" / "splits" / "split-0"
    split_dir.mkdir(parents=True)
    for split, rows in ROWS.items():
        (split_dir / f"autotagging_genre-{split}.tsv").write_text(HEADER + "".join(rows))
    for rel in ("14/214.mp3", "75/775.mp3", "29/1729.mp3", "13/2213.low.mp3"):  # one low-quality download
        p = root / "audio" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


def test_reads_split0_tags_and_splits(tmp_path: Path) -> None:
    _make_jamendo(tmp_path)
    ds = load_dataset("mtg-genre", tmp_path)
    assert ds.name == "mtg-genre" and ds.task == "multilabel" and ds.metric == "roc_auc"
    assert ds.label_names == ("easylistening", "electronic", "jazz", "pop", "punkrock", "rock", "world")
    assert ds.info["label_keys"][0] == "genre---easylistening"
    assert ds.label_texts == ("easy listening", "electronic", "jazz", "pop", "punk rock", "rock", "world")
    assert [t.split for t in ds.tracks] == ["train", "train", "valid", "test"]
    assert ds.tracks[1].tags == ("easylistening", "electronic")
    np.testing.assert_array_equal(ds.labels[3], [0, 0, 1, 0, 0, 0, 1])
    assert ds.tracks[0].audio_path == str(tmp_path / "audio" / "14" / "214.mp3")
    assert ds.tracks[3].audio_path.endswith("2213.low.mp3")
    assert ds.tracks[0].metadata["duration"] == 124.6


def test_root_may_be_the_split_folder(tmp_path: Path) -> None:
    _make_jamendo(tmp_path)
    ds = load_mtg_jamendo(
        tmp_path / "data" / "splits" / "split-0", subset="genre", audio_dir=tmp_path / "audio", check_audio=True
    )
    assert len(ds) == 4


def test_missing_split_file_is_named(tmp_path: Path) -> None:
    _make_jamendo(tmp_path)
    (tmp_path / "data" / "splits" / "split-0" / "autotagging_genre-validation.tsv").unlink()
    with pytest.raises(ManifestError, match=r"autotagging_genre-validation\.tsv"):
        load_dataset("mtg-genre", tmp_path)
    with pytest.raises(ManifestError, match=r"autotagging_moodtheme-train\.tsv"):
        load_dataset("mtg-moodtheme", tmp_path)


def test_malformed_rows(tmp_path: Path) -> None:
    _make_jamendo(tmp_path)
    p = tmp_path / "data" / "splits" / "split-0" / "autotagging_genre-test.tsv"
    p.write_text(HEADER + "track_0002213\tartist_000276\talbum_000357\t13/2213.mp3\t242.4\tjazz\n")
    with pytest.raises(ManifestError, match="genre---rock"):
        load_dataset("mtg-genre", tmp_path)
    p.write_text("TRACK\tPATH\n")
    with pytest.raises(ManifestError, match="header"):
        load_dataset("mtg-genre", tmp_path)
