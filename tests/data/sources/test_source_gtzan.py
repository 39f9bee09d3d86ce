"""GTZAN adapter: the shipped fault-filtered split, and a tiny fake genres/ folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from musicsearch.data.sources.gtzan import GENRES, load_gtzan
from musicsearch.data.sources.registry import load_dataset
from musicsearch.errors import ManifestError


def test_shipped_fault_filtered_split_sizes() -> None:
    ds = load_dataset("gtzan", "/nonexistent", check_audio=False)
    assert ds.summary()["splits"] == {"train": 443, "valid": 197, "test": 290}
    assert ds.task == "multiclass" and ds.metric == "accuracy" and ds.label_names == GENRES
    assert ds.label_texts == ("blues", "classical", "country", "disco", "hip hop", "jazz", "metal", "pop", "reggae",
                              "rock")  # fmt: skip
    assert ds.split("test").label_texts == ds.label_texts  # subsets keep the texts
    assert set(ds.labels.tolist()) == set(range(10))
    assert len({t.track_id for t in ds.tracks}) == 930
    assert ds.tracks[0].audio_path.endswith("genres/blues/blues.00029.wav")


def test_reads_a_fake_genres_folder_with_au_fallback(tmp_path: Path) -> None:
    lists = {}
    for split, names in {"train": ["blues/blues.00029.wav"], "valid": ["rock/rock.00001.wav"],
                         "test": ["jazz/jazz.00054.wav"]}.items():  # fmt: skip
        lists[split] = tmp_path / f"{split}.txt"
        lists[split].write_text("\n".join(names) + "\n")
    for rel in ("blues/blues.00029.wav", "rock/rock.00001.wav", "jazz/jazz.00054.au"):
        p = tmp_path / "gtzan" / "genres" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
    ds = load_gtzan(tmp_path / "gtzan", split_lists=lists)
    assert [t.track_id for t in ds.tracks] == ["blues.00029", "rock.00001", "jazz.00054"]
    assert [ds.label_names[i] for i in ds.labels] == ["blues", "rock", "jazz"]
    assert [t.split for t in ds.tracks] == ["train", "valid", "test"]
    assert ds.tracks[2].audio_path.endswith("jazz.00054.au")


def test_missing_audio_and_malformed_list(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"930 audio file\(s\) missing"):
        load_gtzan(tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_text("polka/polka.00001.wav\n")
    with pytest.raises(ManifestError, match=r"bad\.txt:1"):
        load_gtzan(tmp_path, split_lists={"train": bad, "valid": bad, "test": bad}, check_audio=False)
    with pytest.raises(ManifestError, match="missing file"):
        load_gtzan(tmp_path, split_lists={"train": tmp_path / "none.txt", "valid": bad, "test": bad})
