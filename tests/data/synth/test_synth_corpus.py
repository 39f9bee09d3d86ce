"""Making a corpus folder: determinism across worker counts, resuming, manifest / stats / metadata, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from musicsearch.cli.main import main
from musicsearch.data.manifest import read_manifest
from musicsearch.data.synth.corpus import (
    GENERATOR_VERSION,
    check_captions,
    clip_split,
    make_corpus,
)
from musicsearch.data.synth.figures import plot_tag_frequencies
from musicsearch.data.synth.render import find_soundfont
from musicsearch.data.synth.tags import CATEGORIES, HELDOUT_SYNONYMS, VOCABULARY
from musicsearch.errors import ConfigError, MusicSearchError


@pytest.fixture(scope="module")
def soundfont() -> Path:
    try:
        from musicsearch.data.synth.render import FluidSynth

        path = find_soundfont()
        FluidSynth(path).close()
        return path
    except MusicSearchError as exc:
        pytest.skip(str(exc))


def folder_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix in (".flac", ".mid", ".jsonl")
    }


def test_corpus_is_identical_for_one_or_two_workers_and_resumes(tmp_path: Path, soundfont: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    sa = make_corpus(a, 5, seed=3, seconds=2.0, workers=1, soundfont=soundfont)
    sb = make_corpus(b, 5, seed=3, seconds=2.0, workers=2, soundfont=soundfont)
    assert (sa.made, sb.made) == (5, 5)
    assert folder_bytes(a) == folder_bytes(b)
    assert len([k for k in folder_bytes(a) if k.endswith(".flac")]) == 5

    # resuming keeps every finished clip, and re-makes a damaged one (same bytes again)
    again = make_corpus(a, 5, seed=3, seconds=2.0, workers=1, soundfont=soundfont)
    assert (again.made, again.skipped) == (0, 5)
    damaged = a / "audio" / "synth000002.flac"
    original = damaged.read_bytes()
    damaged.write_bytes(original[:100])
    fixed = make_corpus(a, 6, seed=3, seconds=2.0, workers=1, soundfont=soundfont)
    assert (fixed.made, fixed.skipped) == (2, 4)
    assert damaged.read_bytes() == original

    # a different seed makes different music
    c = tmp_path / "c"
    make_corpus(c, 2, seed=4, seconds=2.0, workers=1, soundfont=soundfont)
    assert (c / "audio" / "synth000000.flac").read_bytes() != (a / "audio" / "synth000000.flac").read_bytes()


def test_corpus_files(tmp_path: Path, soundfont: Path) -> None:
    out = tmp_path / "corpus"
    make_corpus(out, 8, seed=1, seconds=2.0, workers=1, soundfont=soundfont)
    tracks = read_manifest(out / "manifest.jsonl")
    assert [t.track_id for t in tracks] == [f"synth{i:06d}" for i in range(8)]
    for t in tracks:
        assert Path(t.audio_path).is_file()
        assert t.split == clip_split(1, int(t.track_id[5:]))
        assert 6 <= len(t.tags) <= 15
        for key in ("style", "bpm", "key", "mode", "instruments", "duration", "all_tags", "midi_path"):
            assert key in t.metadata
        assert (out / t.metadata["midi_path"]).is_file()
    assert check_captions(tracks) == []

    splits = json.loads((out / "splits.json").read_text())
    assert sorted(i for ids in splits.values() for i in ids) == [t.track_id for t in tracks]

    stats = json.loads((out / "stats.json").read_text())
    assert stats["n_clips"] == 8
    assert 6 <= stats["tags_per_clip"]["min"] <= stats["tags_per_clip"]["max"] <= 15
    assert set(stats["tag_frequency"]) == set(CATEGORIES)
    assert sum(sum(c.values()) for c in stats["tag_frequency"].values()) == sum(len(t.tags) for t in tracks)

    meta = json.loads((out / "corpus.json").read_text())
    assert meta["generator_version"] == GENERATOR_VERSION
    assert meta["seed"] == 1
    assert {v["tag"]: v["category"] for v in meta["vocabulary"]} == VOCABULARY
    assert meta["heldout_synonyms"] == {k: list(v) for k, v in HELDOUT_SYNONYMS.items()}
    assert meta["soundfont"]["name"] == soundfont.name

    png = plot_tag_frequencies(out, tmp_path / "fig.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_splits_are_roughly_80_10_10() -> None:
    splits = [clip_split(0, i) for i in range(5000)]
    assert 0.77 < splits.count("train") / 5000 < 0.83
    assert 0.08 < splits.count("valid") / 5000 < 0.12
    assert 0.08 < splits.count("test") / 5000 < 0.12


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--n"):
        make_corpus(tmp_path, 0)
    with pytest.raises(ConfigError, match="--seconds"):
        make_corpus(tmp_path, 1, seconds=0)
    with pytest.raises(ConfigError, match="--workers"):
        make_corpus(tmp_path, 1, workers=0)


def test_cli_synth(tmp_path: Path, soundfont: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, png = tmp_path / "cli", tmp_path / "freq.png"
    code = main(["synth", "--out", str(out), "--n", "3", "--seconds", "1.5", "--workers", "1", "--figure", str(png)])
    assert code == 0
    assert len(read_manifest(out / "manifest.jsonl")) == 3
    assert png.is_file()
    assert "3 clips" in capsys.readouterr().out
    code = main(["synth", "--out", str(out), "--n", "1", "--soundfont", str(tmp_path / "nope.sf2")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err
