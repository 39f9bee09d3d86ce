"""The dataset registry, the generic manifest dataset and the LabelledDataset contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from musicsearch.data.manifest import Track, write_manifest
from musicsearch.data.sources.labels import LabelledDataset, natural_label_text, seeded_split
from musicsearch.data.sources.registry import dataset_names, load_dataset
from musicsearch.errors import ConfigError, ManifestError


def test_registry_names_and_unknown_name() -> None:
    assert set(dataset_names()) >= {
        "mtat", "mtg-top50", "mtg-genre", "mtg-instrument", "mtg-moodtheme", "gtzan", "fma-small", "kvt",
        "emotify", "manifest",
    }  # fmt: skip
    with pytest.raises(ConfigError, match="known: emotify"):
        load_dataset("magnatagatune", "/x")


def test_manifest_dataset_over_its_vocabulary(tmp_path: Path) -> None:
    tracks = [
        Track("a", "a.wav", tags=("jazz", "piano"), split="train"),
        Track("b", "b.wav", tags=("jazz",), split="valid"),
        Track("c", "c.wav", tags=("rock",), split="test"),
    ]
    write_manifest(tmp_path / "m.jsonl", tracks)
    ds = load_dataset("manifest", tmp_path / "m.jsonl")
    assert ds.label_names == ("jazz", "piano", "rock") and ds.metric == "roc_auc"
    assert ds.label_texts == ds.label_names  # a manifest's tags are the texts its models were trained on
    assert ds.labels.tolist() == [[1, 1, 0], [1, 0, 0], [0, 0, 1]]
    assert load_dataset("manifest", tmp_path / "m.jsonl", min_count=2).label_names == ("jazz",)
    assert load_dataset("manifest", tmp_path / "m.jsonl", vocabulary=["rock", "metal"]).labels.tolist() == [
        [0, 0], [0, 0], [1, 0]
    ]  # fmt: skip
    with pytest.raises(ManifestError, match="does not exist"):
        load_dataset("manifest", tmp_path / "none.jsonl")


def test_labelled_dataset_checks_and_helpers() -> None:
    tracks = tuple(Track(str(i), f"{i}.wav", split=s) for i, s in enumerate(["train", "train", "test"]))
    ds = LabelledDataset("x", "multiclass", ("a", "b"), tracks, np.array([0, 1, 1]), "accuracy")
    assert ds.label_matrix().tolist() == [[1, 0], [0, 1], [0, 1]]
    assert ds.split_indices("train").tolist() == [0, 1] and len(ds.split("test")) == 1
    with pytest.raises(ManifestError, match="int64"):
        LabelledDataset("x", "multiclass", ("a", "b"), tracks, np.array([0, 1]), "accuracy")
    with pytest.raises(ManifestError, match="out of range"):
        LabelledDataset("x", "multiclass", ("a", "b"), tracks, np.array([0, 1, 2]), "accuracy")
    with pytest.raises(ManifestError, match="float32"):
        LabelledDataset("x", "multilabel", ("a", "b"), tracks, np.zeros((3, 2)), "roc_auc")
    with pytest.raises(ManifestError, match="metric"):
        LabelledDataset("x", "multilabel", ("a", "b"), tracks, np.zeros((3, 2), np.float32), "auc")
    with pytest.raises(ManifestError, match="empty label text"):
        LabelledDataset("x", "multiclass", ("a", "b"), tracks, np.array([0, 1, 1]), "accuracy", label_text={"a": " "})


@pytest.mark.parametrize(
    ("name", "text"),
    [("joyful_activation", "joyful activation"), ("noVocals", "no vocals"), ("femaleVocal", "female vocal"),
     ("husky/throaty", "husky or throaty"), ("Hip-Hop", "hip-hop"), ("  Electronic  ", "electronic"),
     ("110-119 bpm", "110-119 bpm"), ("f# minor", "f# minor"), ("r&b", "r&b")],
)  # fmt: skip
def test_natural_label_text(name: str, text: str) -> None:
    assert natural_label_text(name) == text


def test_label_text_overrides_the_normaliser() -> None:
    tracks = tuple(Track(str(i), f"{i}.wav", split="test") for i in range(2))
    ds = LabelledDataset("x", "multiclass", ("hiphop", "new_age"), tracks, np.array([0, 1]), "accuracy",
                         label_text={"hiphop": "hip hop", "unused": "ignored"})  # fmt: skip
    assert ds.label_texts == ("hip hop", "new age")


def test_seeded_split_is_stratified_and_reproducible() -> None:
    ids = [f"t{i}" for i in range(100)]
    strata = [i % 4 for i in range(100)]
    a = seeded_split(ids, strata=strata, seed=1)
    assert a == seeded_split(ids, strata=strata, seed=1) and a != seeded_split(ids, strata=strata, seed=2)
    for k in range(4):
        members = [a[ids[i]] for i in range(100) if strata[i] == k]
        assert (members.count("train"), members.count("valid"), members.count("test")) == (15, 5, 5)
