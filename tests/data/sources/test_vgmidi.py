"""VGMIDI adapter: a tiny fake layout (mido-written MIDI + labels.csv) in tmp_path; never reads /work/shared."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf

from musicsearch.data.sources.registry import dataset_names, load_dataset
from musicsearch.data.sources.vgmidi import (
    AROUSAL_NAMES,
    QUADRANT_NAMES,
    TAIL_SECONDS,
    VALENCE_NAMES,
    default_cache_dir,
    read_vgmidi_labels,
)
from musicsearch.data.synth.render import FluidSynth, find_soundfont
from musicsearch.errors import ManifestError, MusicSearchError

HEADER = "id,series,console,game,piece,midi,valence,arousal"
# (id, valence, arousal): two happy, two peaceful, one tense, one sad
ROWS = [("11", 1, 1), ("12", 1, 1), ("21", 1, -1), ("22", 1, -1), ("31", -1, 1), ("41", -1, -1)]


def _soundfont_ok() -> bool:
    try:
        FluidSynth(find_soundfont()).close()
    except MusicSearchError:
        return False
    return True


needs_synth = pytest.mark.skipif(not _soundfont_ok(), reason="no General MIDI soundfont / libfluidsynth")


def _write_midi(path: Path, pitch: int, beats: int = 2) -> None:
    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=500000, time=0))  # 120 bpm: one beat = 0.5 s
    track.append(mido.Message("program_change", program=0, channel=0, time=0))
    for _ in range(beats):
        track.append(mido.Message("note_on", note=pitch, velocity=90, channel=0, time=0))
        track.append(mido.Message("note_off", note=pitch, velocity=0, channel=0, time=480))
    mid.save(str(path))


def _stem(tid: str) -> str:
    return f"Series_N64_Game {tid}_Piece {tid}_0"


def _layout(root: Path, rows: list[tuple[str, int, int]] = ROWS) -> Path:
    (root / "phrases").mkdir(parents=True)
    lines = [HEADER]
    for k, (tid, v, a) in enumerate(rows):
        name = f"{_stem(tid)}.mid"
        _write_midi(root / "phrases" / name, 60 + k)
        lines.append(f"{tid},Series,N64,Game {tid},Piece {tid},labelled/phrases/{name},{v},{a}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_registered() -> None:
    names = dataset_names()
    assert {"vgmidi-valence", "vgmidi-arousal", "vgmidi-quadrant"} <= set(names)


@pytest.mark.parametrize(
    ("name", "classes", "expected"),
    [
        ("vgmidi-valence", VALENCE_NAMES, ["happy", "happy", "happy", "happy", "sad", "sad"]),
        ("vgmidi-arousal", AROUSAL_NAMES, ["energetic", "energetic", "calm", "calm", "energetic", "calm"]),
        ("vgmidi-quadrant", QUADRANT_NAMES, ["happy", "happy", "peaceful", "peaceful", "tense", "sad"]),
    ],
)
def test_labels_without_audio(tmp_path: Path, name: str, classes: tuple[str, ...], expected: list[str]) -> None:
    root = _layout(tmp_path / "vgmidi")
    ds = load_dataset(name, root, check_audio=False, cache_dir=tmp_path / "cache")
    assert ds.task == "multiclass" and ds.metric == "accuracy"
    assert ds.label_names == classes
    assert ds.label_texts == classes  # already natural words
    assert [t.track_id for t in ds.tracks] == [_stem(r[0]) for r in ROWS]
    assert [t.metadata["vgmidi_id"] for t in ds.tracks] == [r[0] for r in ROWS]
    assert [classes[i] for i in ds.labels] == expected
    assert [t.tags[0] for t in ds.tracks] == expected
    assert {t.split for t in ds.tracks} <= {"train", "valid", "test"}
    assert all(t.audio_path.startswith(str(tmp_path / "cache")) and t.audio_path.endswith(".flac") for t in ds.tracks)
    assert not (tmp_path / "cache").exists()  # nothing rendered without check_audio
    assert ds.tracks[0].metadata["midi"].endswith("phrases/Series_N64_Game 11_Piece 11_0.mid")


def test_split_stratified_seeded_and_given(tmp_path: Path) -> None:
    rows = [(str(100 + i), 1 if i % 2 else -1, 1) for i in range(20)]
    root = _layout(tmp_path / "vgmidi", rows)
    a = load_dataset("vgmidi-valence", root, check_audio=False, split_seed=3)
    b = load_dataset("vgmidi-valence", root, check_audio=False, split_seed=3)
    assert [t.split for t in a.tracks] == [t.split for t in b.tracks]
    for c in range(2):  # 10 per class -> 6 / 2 / 2 in each class
        splits = [t.split for t, lab in zip(a.tracks, a.labels) if lab == c]
        assert (splits.count("train"), splits.count("valid"), splits.count("test")) == (6, 2, 2)
    given = {_stem(t): "test" for t, _, _ in rows}
    assert {t.split for t in load_dataset("vgmidi-valence", root, check_audio=False, splits=given).tracks} == {"test"}
    with pytest.raises(ManifestError, match="101"):
        load_dataset("vgmidi-valence", root, check_audio=False, splits={_stem("100"): "train"})


def test_missing_labels_csv(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"missing file .*labels\.csv"):
        load_dataset("vgmidi-quadrant", tmp_path, check_audio=False)


def test_malformed_labels_csv(tmp_path: Path) -> None:
    root = _layout(tmp_path / "vgmidi")
    path = root / "labels.csv"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace(",1,1\n", ",1,0\n", 1), encoding="utf-8")
    with pytest.raises(ManifestError, match=r"labels\.csv:2.*-1 or 1"):
        read_vgmidi_labels(root)
    path.write_text(text.replace("arousal", "energy"), encoding="utf-8")
    with pytest.raises(ManifestError, match=r"labels\.csv.*arousal"):
        load_dataset("vgmidi-arousal", root, check_audio=False)
    path.write_text(HEADER + "\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"labels\.csv has no rows"):
        read_vgmidi_labels(root)


def test_default_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "vgmidi"
    root.mkdir()
    assert default_cache_dir(root) == root / "rendered"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    assert default_cache_dir(root) == tmp_path / "home" / ".cache" / "musicsearch" / "vgmidi"


@needs_synth
def test_render_once_and_nonsilent(tmp_path: Path) -> None:
    root = _layout(tmp_path / "vgmidi")
    ds = load_dataset("vgmidi-quadrant", root)  # default cache: root/rendered
    assert len(ds) == len(ROWS) and ds.info["excluded"] == {}
    for t in ds.tracks:
        path = Path(t.audio_path)
        assert path.parent == root / "rendered" and path.is_file()
        audio, sr = sf.read(path, dtype="float32")
        assert sr == 16000 and audio.ndim == 1
        assert abs(len(audio) / sr - (2 * 0.5 + TAIL_SECONDS)) < 0.01
        assert float(np.sqrt(np.mean(audio**2))) > 1e-3
    assert not list((root / "rendered").glob("*.tmp")) and not list((root / "rendered").glob(".*"))
    stamps = {t.audio_path: os.stat(t.audio_path).st_mtime_ns for t in ds.tracks}
    again = load_dataset("vgmidi-valence", root)
    assert {t.audio_path: os.stat(t.audio_path).st_mtime_ns for t in again.tracks} == stamps  # not re-rendered


@needs_synth
def test_bad_and_missing_midi_left_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _layout(tmp_path / "vgmidi")
    bad = root / "phrases" / "Series_N64_Game 21_Piece 21_0.mid"
    bad.write_bytes(b"not a midi file at all")
    (root / "phrases" / "Series_N64_Game 41_Piece 41_0.mid").unlink()
    with caplog.at_level(logging.WARNING, logger="musicsearch.data.sources.vgmidi"):
        ds = load_dataset("vgmidi-quadrant", root, cache_dir=tmp_path / "cache", max_seconds=0.5)
    assert [t.track_id for t in ds.tracks] == [_stem(t) for t in ("11", "12", "22", "31")]
    assert set(ds.info["excluded"]) == {_stem("21"), _stem("41")}
    assert "Game 21" in ds.info["excluded"][_stem("21")] and "missing MIDI" in ds.info["excluded"][_stem("41")]
    assert "Game 21" in caplog.text
    audio, sr = sf.read(ds.tracks[0].audio_path)
    assert len(audio) == sr // 2  # max_seconds cuts the render


@needs_synth
def test_nothing_renderable(tmp_path: Path) -> None:
    root = _layout(tmp_path / "vgmidi", ROWS[:1])
    (root / "phrases" / "Series_N64_Game 11_Piece 11_0.mid").write_bytes(b"MThd garbage")
    with pytest.raises(ManifestError, match="no MIDI file"):
        load_dataset("vgmidi-valence", root, cache_dir=tmp_path / "cache")


def test_shared_id_kept_duplicate_midi_refused(tmp_path: Path) -> None:
    root = _layout(tmp_path / "vgmidi")
    path = root / "labels.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    # a second phrase of piece 11 shares its id (as in the real file); it is its own track
    _write_midi(root / "phrases" / "Series_N64_Game 11_Piece 11_1.mid", 72)
    path.write_text("\n".join([*lines, lines[1].replace("_0.mid", "_1.mid")]) + "\n", encoding="utf-8")
    pieces = read_vgmidi_labels(root)
    assert [p.track_id for p in pieces if p.metadata["vgmidi_id"] == "11"] == [_stem("11"), _stem("11")[:-1] + "1"]
    path.write_text("\n".join([*lines, lines[1]]) + "\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"labels\.csv:8.*twice"):
        read_vgmidi_labels(root)
