"""Scanning a folder into a manifest: ids, path metadata, tags CSV, splits, unreadable files, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicsearch.assets import librosa_music_dir
from musicsearch.cli.main import main
from musicsearch.data.manifest import read_manifest
from musicsearch.data.scan import (
    assign_split,
    find_audio_files,
    parse_split_ratios,
    path_metadata,
    read_tags_csv,
    scan_directory,
)
from musicsearch.errors import ConfigError, ManifestError


def tone(path: Path, seconds: float = 0.2, sr: int = 16000, **kwargs: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(sr * seconds)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr, **kwargs)


@pytest.fixture
def library(tmp_path: Path) -> Path:
    root = tmp_path / "lib"
    tone(root / "Miles Davis" / "Kind of Blue" / "01 So What.flac", seconds=0.5, sr=44100)
    tone(root / "Miles Davis" / "Kind of Blue" / "02 - Freddie Freeloader.wav")
    tone(root / "loose.ogg", format="OGG", subtype="VORBIS")
    tone(root / "sub" / "clip.mp3", sr=44100, format="MP3", subtype="MPEG_LAYER_III")
    tone(root / "dup" / "take.flac")
    tone(root / "dup" / "take.wav")
    tone(root / "UPPER.WAV")
    tone(root / ".hidden" / "secret.wav")
    tone(root / ".dotfile.wav")
    (root / "notes.txt").write_text("not audio")
    (root / "broken.flac").write_bytes(np.random.default_rng(0).bytes(2000))
    (root / "empty.wav").touch()
    return root


def test_find_audio_files_sorted_and_filtered(library: Path) -> None:
    rels = [p.relative_to(library).as_posix() for p in find_audio_files(library)]
    assert rels == [
        "Miles Davis/Kind of Blue/01 So What.flac",
        "Miles Davis/Kind of Blue/02 - Freddie Freeloader.wav",
        "UPPER.WAV",
        "broken.flac",
        "dup/take.flac",
        "dup/take.wav",
        "empty.wav",
        "loose.ogg",
        "sub/clip.mp3",
    ]
    assert all(p.is_absolute() for p in find_audio_files(library))
    with pytest.raises(ManifestError, match="not a folder"):
        find_audio_files(library / "notes.txt")


def test_path_metadata_convention() -> None:
    assert path_metadata("Artist/Album/01 Title.flac") == {
        "folder": "Artist/Album",
        "title": "Title",
        "track_number": 1,
        "artist": "Artist",
        "album": "Album",
    }
    assert path_metadata("Genre/Artist/Album/12 - Long Name.mp3")["artist"] == "Artist"
    assert path_metadata("Genre/Artist/Album/12 - Long Name.mp3")["title"] == "Long Name"
    assert path_metadata("3. Intro.wav") == {"folder": "", "title": "Intro", "track_number": 3}
    assert path_metadata("Album/2Pac Song.wav") == {"folder": "Album", "title": "2Pac Song"}
    assert path_metadata("1999 remix.wav")["title"] == "1999 remix"  # four digits is not a track number
    assert path_metadata("07.wav") == {"folder": "", "title": "07"}


def test_scan_ids_metadata_and_skips(library: Path) -> None:
    report = scan_directory(library)
    ids = [t.track_id for t in report.tracks]
    assert ids == [
        "Miles Davis/Kind of Blue/01 So What",
        "Miles Davis/Kind of Blue/02 - Freddie Freeloader",
        "UPPER",
        "dup/take.flac",  # stems collide: suffix kept
        "dup/take.wav",
        "loose",
        "sub/clip",
    ]
    assert [rel for rel, _ in report.skipped] == ["broken.flac", "empty.wav"]
    assert "empty (0 bytes)" in report.skipped[1][1]
    first = report.tracks[0]
    assert Path(first.audio_path).is_file() and Path(first.audio_path).is_absolute()
    assert first.metadata["artist"] == "Miles Davis" and first.metadata["album"] == "Kind of Blue"
    assert first.metadata["title"] == "So What" and first.metadata["track_number"] == 1
    assert first.metadata["sample_rate"] == 44100 and first.metadata["duration"] == pytest.approx(0.5)
    assert report.tracks[-1].metadata["folder"] == "sub"
    assert all(t.split in ("train", "valid", "test") for t in report.tracks)
    assert all(t.tags == () for t in report.tracks)


def test_scan_is_deterministic_and_splits_follow_the_hash(library: Path) -> None:
    a = scan_directory(library, seed=3)
    b = scan_directory(library, seed=3)
    assert [(t.track_id, t.split) for t in a.tracks] == [(t.track_id, t.split) for t in b.tracks]
    assert all(t.split == assign_split(t.track_id, (0.8, 0.1, 0.1), 3) for t in a.tracks)
    only_test = scan_directory(library, split_ratios=(0.0, 0.0, 1.0))
    assert {t.split for t in only_test.tracks} == {"test"}


def test_assign_split_proportions_and_seed() -> None:
    ids = [f"track{i:05d}" for i in range(20000)]
    splits = [assign_split(t, (0.7, 0.2, 0.1), 0) for t in ids]
    for name, ratio in (("train", 0.7), ("valid", 0.2), ("test", 0.1)):
        assert abs(splits.count(name) / len(ids) - ratio) < 0.015
    other = [assign_split(t, (0.7, 0.2, 0.1), 1) for t in ids]
    assert other != splits
    # stable: a track's split does not depend on which other tracks exist
    assert assign_split("track00042", (0.7, 0.2, 0.1), 0) == splits[42]


def test_parse_split_ratios() -> None:
    assert parse_split_ratios("0.8,0.1,0.1") == pytest.approx((0.8, 0.1, 0.1))
    assert parse_split_ratios([1, 0, 0]) == (1.0, 0.0, 0.0)
    for bad in ("0.8,0.1", "0.5,0.5,0.5", "a,b,c", "-0.1,0.6,0.5"):
        with pytest.raises(ConfigError, match="split ratios"):
            parse_split_ratios(bad)


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_tags_csv_applied(library: Path, tmp_path: Path) -> None:
    csv_path = write_csv(
        tmp_path / "tags.csv",
        "path,tags,captions,split,artist,album,year,mood\n"
        "Miles Davis/Kind of Blue/01 So What.flac,jazz;modal jazz;trumpet,"
        "a cool jazz tune|modal trumpet,test,,,1959,x\n"
        'loose.ogg,"rock, guitar",,,Someone,Single,,\n'
        "clip.mp3,electronic,,valid,,,,\n"
        "dup/take,ambient,,,,,,\n"
        "missing/song.flac,pop,,,,,,\n",
    )
    report = scan_directory(library, tags_csv=csv_path)
    by_id = {t.track_id: t for t in report.tracks}
    so_what = by_id["Miles Davis/Kind of Blue/01 So What"]
    assert so_what.tags == ("jazz", "modal jazz", "trumpet")
    assert so_what.captions == ("a cool jazz tune", "modal trumpet")
    assert so_what.split == "test" and so_what.metadata["year"] == 1959
    assert so_what.metadata["artist"] == "Miles Davis"  # from the path; the empty CSV cell does not override
    loose = by_id["loose"]
    assert loose.tags == ("rock", "guitar")
    assert loose.metadata["artist"] == "Someone" and loose.metadata["album"] == "Single"
    assert by_id["sub/clip"].tags == ("electronic",) and by_id["sub/clip"].split == "valid"  # bare file name
    assert report.unmatched_tags == ["dup/take", "missing/song.flac"]  # "dup/take" is ambiguous as an id


def test_tags_csv_errors(library: Path, tmp_path: Path) -> None:
    cases = {
        "file,tags\nloose.ogg,rock\n": "no 'path' column",
        "path,tags,split\nloose.ogg,rock,training\n": "split 'training'",
        "path,tags,year\nloose.ogg,rock,nineties\n": "year 'nineties'",
        "path,tags\nloose.ogg,rock\n./loose.ogg,pop\n": "already appears",
        "path,tags\n,rock\n": "empty 'path'",
        "path,tags\ntake.flac,rock\n": "matches several files",
        "path,tags\nloose.ogg,rock\nloose,pop\n": "same file",
    }
    tone(library / "other" / "take.flac")  # a second file named take.flac
    for i, (text, message) in enumerate(cases.items()):
        csv_path = write_csv(tmp_path / f"bad{i}.csv", text)
        with pytest.raises(ManifestError, match=message) as info:
            scan_directory(library, tags_csv=csv_path)
        assert f"bad{i}.csv" in str(info.value)
    with pytest.raises(ManifestError, match="does not exist"):
        read_tags_csv(tmp_path / "nope.csv")


def test_tags_csv_with_bom_and_blank_rows(tmp_path: Path) -> None:
    csv_path = tmp_path / "excel.csv"
    csv_path.write_text("\ufeffPath,Tags\r\na.wav,x; y\r\n,\r\n", encoding="utf-8")
    rows = read_tags_csv(csv_path)
    assert len(rows) == 1 and rows[0].path == "a.wav" and rows[0].tags == ("x", "y")
    assert rows[0].where.endswith("excel.csv:2")


def test_cli_scan_writes_a_manifest(library: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_path = write_csv(tmp_path / "tags.csv", "path,tags\nloose.ogg,rock;guitar\n")
    out = tmp_path / "out" / "manifest.jsonl"
    rc = main(["scan", str(library), "--tags", str(csv_path), "--out", str(out), "--seed", "1"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "wrote 7 tracks" in captured.out
    assert "skipped broken.flac" in captured.err and "skipped empty.wav" in captured.err
    tracks = read_manifest(out)
    assert len(tracks) == 7
    assert {t.track_id: t.tags for t in tracks}["loose"] == ("rock", "guitar")
    assert all(Path(t.audio_path).is_file() for t in tracks)
    # default output beside the audio, with relative paths
    assert main(["scan", str(library)]) == 0
    first = json.loads((library / "manifest.jsonl").read_text().splitlines()[0])
    assert first["audio_path"] == "Miles Davis/Kind of Blue/01 So What.flac"


def test_cli_scan_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "nothing").mkdir()
    assert main(["scan", str(tmp_path / "nothing")]) == 2
    assert "no readable audio files" in capsys.readouterr().err
    assert main(["scan", str(tmp_path / "nothing"), "--split-ratios", "1,1,1"]) == 2
    assert "split ratios" in capsys.readouterr().err
    assert main(["scan", str(tmp_path / "absent")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_scan_of_shipped_recordings() -> None:
    report = scan_directory(librosa_music_dir())
    assert len(report.tracks) == 8 and not report.skipped
    assert report.tracks[0].track_id == "admiralbob77-choice-drum-bass"
    assert report.tracks[0].metadata["duration"] == pytest.approx(25.026, abs=1e-3)
