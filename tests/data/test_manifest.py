"""The JSONL manifest: round trip, relative paths, and every error path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from musicsearch.data.manifest import (
    Track,
    iter_manifest,
    read_manifest,
    tag_vocabulary,
    track_from_json,
    write_manifest,
)
from musicsearch.errors import ManifestError


def full_track(root: Path) -> Track:
    return Track(
        track_id="Artist/Album/01 Song",
        audio_path=str(root / "audio" / "song.flac"),
        tags=("jazz", "piano"),
        captions=("a relaxed jazz trio", "late-night piano"),
        split="valid",
        start=1.5,
        end=11.5,
        metadata={"artist": "Artist", "year": 1999, "duration": 31.2, "nested": {"a": [1, 2]}},
    )


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    tracks = [full_track(tmp_path), Track(track_id="bare", audio_path=str(tmp_path / "bare.wav"))]
    manifest = tmp_path / "manifest.jsonl"
    assert write_manifest(manifest, tracks) == 2
    back = read_manifest(manifest)
    assert back == tracks  # metadata is excluded from equality: compare it separately
    assert [t.metadata for t in back] == [t.metadata for t in tracks]
    assert back[1].tags == () and back[1].split is None and back[1].start is None


def test_paths_are_stored_relative_and_resolved_on_read(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    outside = tmp_path / "elsewhere" / "x.wav"
    tracks = [full_track(corpus), Track(track_id="out", audio_path=str(outside))]
    write_manifest(corpus / "manifest.jsonl", tracks)
    lines = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()]
    assert lines[0]["audio_path"] == "audio/song.flac"
    assert lines[1]["audio_path"] == str(outside.resolve())  # outside the manifest folder: absolute
    # the corpus folder can move as a whole
    moved = tmp_path / "moved"
    corpus.rename(moved)
    back = read_manifest(moved / "manifest.jsonl")
    assert back[0].audio_path == str((moved / "audio" / "song.flac").resolve())


def test_optional_fields_are_omitted_when_empty(tmp_path: Path) -> None:
    write_manifest(tmp_path / "m.jsonl", [Track(track_id="a", audio_path=str(tmp_path / "a.wav"))])
    assert json.loads((tmp_path / "m.jsonl").read_text()) == {"track_id": "a", "audio_path": "a.wav", "tags": []}


def test_split_filter_blank_lines_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(
        "# a comment\n\n"
        '{"track_id": "a", "audio_path": "a.wav", "split": "train"}\n'
        "   \n"
        '{"track_id": "b", "audio_path": "b.wav", "split": "test", "captions": "one caption"}\n'
    )
    assert [t.track_id for t in read_manifest(path)] == ["a", "b"]
    assert [t.track_id for t in read_manifest(path, split="test")] == ["b"]
    assert read_manifest(path, split="test")[0].captions == ("one caption",)  # a string becomes a 1-tuple
    it = iter_manifest(path)
    assert next(it).track_id == "a"  # lazy


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


BAD_LINES = [
    ("[1, 2]", "expected a JSON object"),
    ('{"audio_path": "a.wav"}', "missing required field 'track_id'"),
    ('{"track_id": "a"}', "missing required field 'audio_path'"),
    ('{"track_id": "", "audio_path": "a.wav"}', "missing required field 'track_id'"),
    ('{"track_id": "a", "audio_path": "a.wav", "tags": "jazz"}', "'tags' must be a list of strings"),
    ('{"track_id": "a", "audio_path": "a.wav", "tags": [1]}', "'tags' must be a list of strings"),
    ('{"track_id": "a", "audio_path": "a.wav", "captions": [3]}', "'captions' must be a list of strings"),
    ('{"track_id": "a", "audio_path": "a.wav", "split": "dev"}', "'split' must be one of"),
    ('{"track_id": "a", "audio_path": "a.wav", "start": "soon"}', "'start'/'end' must be numbers"),
    ('{"track_id": "a", "audio_path": "a.wav", "start": 5, "end": 5}', "'end' \\(5.0\\) must be after"),
    ('{"track_id": "a", "audio_path": "a.wav", "metadata": [1]}', "'metadata' must be an object"),
    ('{"track_id": "a", "audio_path": "a.wav"', "not valid JSON"),
]


@pytest.mark.parametrize(("line", "message"), BAD_LINES)
def test_malformed_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = write_lines(tmp_path / "bad.jsonl", '{"track_id": "ok", "audio_path": "ok.wav"}', line)
    with pytest.raises(ManifestError, match=message) as info:
        read_manifest(path)
    assert f"{path}:2" in str(info.value)


def test_missing_manifest_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"does not exist.*musicsearch scan"):
        read_manifest(tmp_path / "none.jsonl")
    with pytest.raises(ManifestError, match="does not exist"):
        list(iter_manifest(tmp_path / "none.jsonl"))


def test_duplicate_ids(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "dup.jsonl",
        '{"track_id": "a", "audio_path": "a.wav"}',
        '{"track_id": "a", "audio_path": "b.wav"}',
    )
    with pytest.raises(ManifestError, match="duplicate track_id 'a'"):
        read_manifest(path)
    assert len(list(iter_manifest(path))) == 2  # the lazy reader does not check


def test_track_from_json_without_base_keeps_path() -> None:
    t = track_from_json({"track_id": 7, "audio_path": "rel/a.wav", "start": "1.5"})
    assert t.track_id == "7" and t.audio_path == "rel/a.wav" and t.start == 1.5


def test_write_is_atomic_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    write_manifest(path, [Track(track_id="old", audio_path="old.wav")])

    def broken() -> list[Track]:
        raise RuntimeError("boom")

    def tracks() -> object:
        yield Track(track_id="new", audio_path="new.wav")
        broken()

    with pytest.raises(RuntimeError):
        write_manifest(path, tracks())  # type: ignore[arg-type]
    assert [t.track_id for t in read_manifest(path)] == ["old"]
    assert [p.name for p in tmp_path.iterdir()] == ["m.jsonl"]  # no temporary file left


def test_tag_vocabulary_orders_by_count_then_name() -> None:
    tracks = [
        Track("1", "1.wav", tags=("rock", "pop")),
        Track("2", "2.wav", tags=("pop", "jazz")),
        Track("3", "3.wav", tags=("pop", "ambient", "rock")),
    ]
    assert tag_vocabulary(tracks) == ["pop", "rock", "ambient", "jazz"]
    assert tag_vocabulary([]) == []
