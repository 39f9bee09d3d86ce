"""ECALS release reader on a tiny fake copy of its layout, and the tag normalisation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from musicsearch.audio.io import audio_info, load_audio
from musicsearch.data.manifest import read_manifest, write_manifest
from musicsearch.data.sources.ecals import normalize_tag, read_ecals
from musicsearch.errors import ManifestError

VOCAB = ["rock", "jazz", "hip hop", "rnb", "female vocalist"]


def annotation() -> dict[str, Any]:
    def entry(tags: list[str], year: int, title: str) -> dict[str, Any]:
        return {"tag": tags, "title": title, "artist_name": f"artist of {title}", "release": "an album", "year": year}

    return {
        "TR01": entry(["rock", "guitar"], 1999, "one"),  # "guitar" is outside the vocabulary
        "TR02": entry(["jazz"], 0, "two"),  # year 0 = unknown
        "TR03": entry(["hip hop", "rnb", "hip hop"], 2005, "three"),
        "TR04": entry(["female vocalist"], 2010, "four"),
        "TR05": entry(["jazz", "rock"], 1970, "five"),
        "TR06": entry([], 1980, "six"),
    }


def make_release(root: Path, **overrides: Any) -> Path:
    ann = root / "ecals_annotation"
    ann.mkdir(parents=True, exist_ok=True)
    files = {
        "annotation.json": annotation(),
        "ecals_track_split.json": {
            "train_track": ["TR01", "TR02"],
            "extra_track": ["TR03"],
            "valid_track": ["TR04", "TR99"],  # TR99 has no annotation
            "test_track": ["TR05", "TR06"],
        },
        "ecals_tags.json": VOCAB,
        "multiquery_samples.json": {"TR05": "a jazz rock fusion track", "TR06": {"tag": ["rock", "jazz"]}},
    }
    files.update(overrides)
    for name, content in files.items():
        if isinstance(content, str):
            (ann / name).write_text(content)
        else:
            (ann / name).write_text(json.dumps(content))
    npy = root / "npy"
    npy.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for msd_id in ("TR01", "TR02", "TR05"):
        np.save(npy / f"{msd_id}.npy", rng.uniform(-0.5, 0.5, 16000 * 2).astype(np.float32))
    return root


def test_read_ecals_tracks_splits_tags_captions(tmp_path: Path) -> None:
    root = make_release(tmp_path / "ecals")
    corpus = read_ecals(root)
    assert corpus.tags == VOCAB
    by_id = {t.track_id: t for t in corpus.tracks}
    assert [t.track_id for t in corpus.tracks] == ["TR01", "TR02", "TR03", "TR04", "TR05", "TR06"]
    assert [t.split for t in corpus.tracks] == ["train", "train", "train", "valid", "test", "test"]
    assert by_id["TR01"].tags == ("rock",)
    assert by_id["TR03"].tags == ("hip hop", "rnb")  # duplicates dropped, order kept
    assert by_id["TR05"].captions == ("a jazz rock fusion track",)
    assert by_id["TR06"].captions == ("rock, jazz",)
    assert by_id["TR01"].captions == ()
    assert by_id["TR01"].metadata == {
        "msd_id": "TR01",
        "title": "one",
        "artist": "artist of one",
        "album": "an album",
        "year": 1999,
    }
    assert "year" not in by_id["TR02"].metadata
    assert by_id["TR01"].audio_path == str(root / "npy" / "TR01.npy")
    # the audio loads without conversion
    wave = load_audio(by_id["TR01"].audio_path)
    assert wave.shape == (32000,) and wave.dtype == np.float32
    assert audio_info(by_id["TR01"].audio_path).duration == pytest.approx(2.0)


def test_read_ecals_options(tmp_path: Path) -> None:
    root = make_release(tmp_path / "ecals")
    assert [t.track_id for t in read_ecals(root, splits=["test"]).tracks] == ["TR05", "TR06"]
    with_audio = read_ecals(root, require_audio=True)
    assert [t.track_id for t in with_audio.tracks] == ["TR01", "TR02", "TR05"]
    elsewhere = read_ecals(root / "ecals_annotation", npy_dir=tmp_path / "audio")
    assert elsewhere.tracks[0].audio_path == str(tmp_path / "audio" / "TR01.npy")
    with pytest.raises(ManifestError, match="unknown ECALS split"):
        read_ecals(root, splits=["dev"])


def test_ecals_tracks_round_trip_through_a_manifest(tmp_path: Path) -> None:
    root = make_release(tmp_path / "ecals")
    tracks = read_ecals(root).tracks
    write_manifest(root / "manifest.jsonl", tracks)
    back = read_manifest(root / "manifest.jsonl")
    assert back == tracks
    assert json.loads((root / "manifest.jsonl").read_text().splitlines()[0])["audio_path"] == "npy/TR01.npy"


BAD_RELEASES: list[tuple[dict[str, Any], str]] = [
    ({"annotation.json": "{not json"}, r"annotation\.json is not valid JSON"),
    ({"annotation.json": [1, 2]}, r"annotation\.json should hold a JSON dict"),
    ({"ecals_tags.json": {"rock": 1}}, r"ecals_tags\.json should hold a JSON list"),
    ({"ecals_tags.json": ["rock", 3]}, r"ecals_tags\.json should be a list of tag strings"),
    ({"ecals_track_split.json": {"train_track": []}}, r"ecals_track_split\.json lacks the list 'extra_track'"),
    (
        {
            "ecals_track_split.json": {
                "train_track": ["TR01"],
                "extra_track": [],
                "valid_track": [],
                "test_track": ["TR01"],
            }
        },
        "TR01 is in both train and test",
    ),
    (
        {"ecals_track_split.json": {"train_track": [1], "extra_track": [], "valid_track": [], "test_track": []}},
        "non-string id",
    ),
    ({"annotation.json": {"TR01": {"tag": "rock"}}}, r"annotation\.json: entry 'TR01' must be an object"),
    ({"multiquery_samples.json": {"TR05": 42}}, r"multiquery_samples\.json: entry 'TR05' holds no caption"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_RELEASES)
def test_malformed_release_files(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    root = make_release(tmp_path / "ecals", **overrides)
    with pytest.raises(ManifestError, match=message):
        read_ecals(root)


def test_missing_release_files(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="does not hold the ECALS release"):
        read_ecals(tmp_path)
    root = make_release(tmp_path / "ecals")
    (root / "ecals_annotation" / "multiquery_samples.json").unlink()
    with pytest.raises(ManifestError, match=r"multiquery_samples\.json is missing"):
        read_ecals(root)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("R&B", "rnb"),
        ("Hip-Hop", "hip hop"),
        ("Drum & Bass", "drum n bass"),
        ("Rock 'n' Roll", "rock n roll"),
        ("90's", "90s"),
        ("Post-Punk/New Wave", "post punk new wave"),
        ("Soundtrack (Film)", "soundtrack film"),
        ("[Female] Vocalist", "female vocalist"),
        ("Lo-Fi", "lo fi"),
        ("L.A. Punk", "l.a. punk"),
        ("  Jazz \t  Fusion ", "jazz fusion"),
        ("singer\u2019s songs", "singers songs"),
    ],
)
def test_normalize_tag(raw: str, expected: str) -> None:
    assert normalize_tag(raw) == expected
    assert normalize_tag(expected) == expected  # idempotent on normalised tags
