"""MagnaTagATune adapter on a tiny fake copy of annotations_final.csv + mp3 folders."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from musicsearch.data.sources.mtat import load_mtat, top50_tags
from musicsearch.data.sources.registry import load_dataset
from musicsearch.errors import ManifestError

CLIPS = [  # clip_id, mp3_path, top-50 tags it has
    ("2", "f/american_bach_soloists-j_s__bach_solo_cantatas-01-bwv54__i_aria-0-29.mp3", ["classical", "violin"]),
    ("6", "0/tim_rayborn-the_path_beyond-14-taqsim_ud-146-175.mp3", ["guitar", "indian"]),
    ("10", "b/some_artist-some_album-03-song-30-59.mp3", []),
    ("12", "c/other_artist-album-01-track-0-29.mp3", ["rock", "loud", "drums"]),
]


def _make_mtat(root: Path, *, make_audio: bool = True) -> None:
    tags = top50_tags()
    columns = ["clip_id", "no singer", *tags, "mp3_path"]  # plus one tag outside the top 50, like the real file
    with (root / "annotations_final.csv").open("w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", quoting=csv.QUOTE_ALL)  # the real file quotes every cell
        w.writerow(columns)
        for clip_id, mp3, have in CLIPS:
            w.writerow([clip_id, "1", *("1" if t in have else "0" for t in tags), mp3])
    if make_audio:
        for _, mp3, _ in CLIPS:
            p = root / "mp3" / mp3
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"")


def test_reads_top50_labels_and_folder_split(tmp_path: Path) -> None:
    _make_mtat(tmp_path)
    ds = load_dataset("mtat", tmp_path)
    assert ds.name == "mtat" and ds.task == "multilabel" and ds.metric == "roc_auc"
    assert list(ds.label_names) == top50_tags() and len(ds.label_names) == 50
    texts = dict(zip(ds.label_names, ds.label_texts))
    assert texts["noVocals"] == "no vocals" and texts["maleVocal"] == "male vocal" and texts["newAge"] == "new age"
    assert texts["femaleVoice"] == "female voice" and texts["guitar"] == "guitar"
    assert all(t == t.lower() and "_" not in t for t in ds.label_texts)
    assert [t.track_id for t in ds.tracks] == ["2", "6", "10", "12"]
    assert [t.split for t in ds.tracks] == ["test", "train", "train", "valid"]
    assert ds.labels.shape == (4, 50) and ds.labels.dtype == np.float32
    for row, (_, mp3, have) in enumerate(CLIPS):
        assert {ds.label_names[j] for j in np.nonzero(ds.labels[row])[0]} == set(have)
        assert set(ds.tracks[row].tags) == set(have)
        assert ds.tracks[row].audio_path == str(tmp_path / "mp3" / mp3)
    assert ds.split("train").labels.shape == (2, 50)


def test_drop_untagged_and_custom_tags(tmp_path: Path) -> None:
    _make_mtat(tmp_path)
    assert [t.track_id for t in load_mtat(tmp_path, drop_untagged=True).tracks] == ["2", "6", "12"]
    ds = load_mtat(tmp_path, tags=["rock", "no singer"])
    assert ds.labels.tolist() == [[0, 1], [0, 1], [0, 1], [1, 1]]


def test_missing_annotations_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"annotations_final\.csv"):
        load_mtat(tmp_path)


def test_malformed_path_and_missing_audio(tmp_path: Path) -> None:
    _make_mtat(tmp_path, make_audio=False)
    with pytest.raises(ManifestError, match="audio file"):
        load_mtat(tmp_path)
    assert len(load_mtat(tmp_path, check_audio=False)) == 4
    text = (tmp_path / "annotations_final.csv").read_text().replace('"c/other', '"zz/other')
    (tmp_path / "annotations_final.csv").write_text(text)
    with pytest.raises(ManifestError, match="hex folder"):
        load_mtat(tmp_path, check_audio=False)


def test_missing_tag_column_is_named(tmp_path: Path) -> None:
    _make_mtat(tmp_path)
    with pytest.raises(ManifestError, match="no column 'bossa nova'"):
        load_mtat(tmp_path, tags=["bossa nova"])
