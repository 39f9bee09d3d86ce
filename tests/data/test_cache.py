"""The decoded-audio cache: contents equal a direct decode, resume, failures, parameters, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicsearch.assets import librosa_music_files
from musicsearch.audio.io import load_audio
from musicsearch.cli.main import main
from musicsearch.data.cache import INDEX_NAME, AudioCache, build_audio_cache, cache_key
from musicsearch.data.manifest import Track, write_manifest
from musicsearch.errors import AudioError, ConfigError, ManifestError, MusicSearchError

SR = 16000


def write_noise(path: Path, seconds: float, sr: int, channels: int = 1, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    sf.write(path, rng.uniform(-0.5, 0.5, (round(seconds * sr), channels)).astype(np.float32), sr)
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> list[Track]:
    audio = tmp_path / "audio"
    audio.mkdir()
    write_noise(audio / "stereo44k.wav", 2.0, 44100, channels=2, seed=1)
    write_noise(audio / "long16k.flac", 4.0, SR, seed=2)
    sf.write(audio / "silent.wav", np.zeros(SR, dtype=np.float32), SR)
    (audio / "corrupt.flac").write_bytes(np.random.default_rng(3).bytes(3000))
    (audio / "empty.wav").touch()
    return [
        Track("stereo", str(audio / "stereo44k.wav")),
        Track("long", str(audio / "long16k.flac")),
        Track("segment", str(audio / "long16k.flac"), start=1.0, end=2.5),
        Track("silent", str(audio / "silent.wav")),
        Track("corrupt", str(audio / "corrupt.flac")),
        Track("empty", str(audio / "empty.wav")),
    ]


def test_cache_contents_equal_direct_decode(corpus: list[Track], tmp_path: Path) -> None:
    cache = build_audio_cache(corpus, tmp_path / "cache", max_seconds=None, workers=1, progress=False)
    assert cache.track_ids == ["stereo", "long", "segment", "silent"]
    assert len(cache) == 4 and "long" in cache and "corrupt" not in cache
    assert set(cache.failed) == {"corrupt", "empty"}
    assert "corrupt.flac" in cache.failed["corrupt"] and "empty" in cache.failed["empty"]
    for t in corpus[:4]:
        arr = cache.get(t.track_id)
        assert isinstance(arr, np.memmap) and arr.dtype == np.float32 and arr.ndim == 1
        duration = None if t.end is None else t.end - (t.start or 0.0)
        np.testing.assert_array_equal(arr, load_audio(t.audio_path, offset=t.start, duration=duration))
        assert cache.path_of(t.track_id).name == f"{cache_key(t.track_id)}.npy"
    assert cache.get("segment").shape == (int(1.5 * SR),)
    assert cache.duration("long") == pytest.approx(4.0)
    assert cache.entries["silent"].rms_db < -100 and cache.entries["long"].rms_db > -20
    # reopening gives the same cache
    again = AudioCache.open(tmp_path / "cache")
    assert again.entries == cache.entries and again.failed == cache.failed
    assert again.sample_rate == SR and again.max_seconds is None and again.excerpt == "start"


def test_max_seconds_and_excerpt(corpus: list[Track], tmp_path: Path) -> None:
    long = [corpus[1]]
    first = build_audio_cache(long, tmp_path / "start", max_seconds=1.0, workers=1, progress=False)
    np.testing.assert_array_equal(first.get("long"), load_audio(long[0].audio_path, duration=1.0))
    centre = build_audio_cache(long, tmp_path / "centre", max_seconds=1.0, excerpt="centre", workers=1, progress=False)
    np.testing.assert_array_equal(centre.get("long"), load_audio(long[0].audio_path, offset=1.5, duration=1.0))
    with pytest.raises(ConfigError, match="excerpt"):
        build_audio_cache(long, tmp_path / "x", excerpt="middle", progress=False)
    with pytest.raises(ConfigError, match="max_seconds"):
        build_audio_cache(long, tmp_path / "x", max_seconds=0, progress=False)


def test_resume_skips_cached_and_retries_failed(corpus: list[Track], tmp_path: Path) -> None:
    root = tmp_path / "cache"
    cache = build_audio_cache(corpus, root, workers=1, progress=False)
    stamps = {tid: cache.path_of(tid).stat().st_mtime_ns for tid in cache.track_ids}
    # fix the corrupt file; the next build retries it and leaves the cached ones alone
    write_noise(Path(corpus[4].audio_path), 1.0, SR, seed=4)
    cache2 = build_audio_cache(corpus, root, workers=1, progress=False)
    assert {tid: cache2.path_of(tid).stat().st_mtime_ns for tid in stamps} == stamps
    assert "corrupt" in cache2 and set(cache2.failed) == {"empty"}
    # a track whose source changed is decoded again
    moved = Track("stereo", corpus[1].audio_path)
    cache3 = build_audio_cache([moved], root, workers=1, progress=False)
    np.testing.assert_array_equal(cache3.get("stereo"), load_audio(corpus[1].audio_path, duration=30.0))


def test_crash_between_array_and_index_is_repaired(corpus: list[Track], tmp_path: Path) -> None:
    root = tmp_path / "cache"
    build_audio_cache(corpus[:2], root, workers=1, progress=False)
    index = json.loads((root / INDEX_NAME).read_text())
    del index["tracks"]["long"]  # as if the process died after writing the array but before the index
    (root / INDEX_NAME).write_text(json.dumps(index))
    cache = build_audio_cache(corpus[:2], root, workers=1, progress=False)
    assert cache.track_ids == ["stereo", "long"]
    np.testing.assert_array_equal(cache.get("long"), load_audio(corpus[1].audio_path))
    assert not list(root.rglob("*.tmp"))


def test_process_pool_gives_the_same_cache(corpus: list[Track], tmp_path: Path) -> None:
    serial = build_audio_cache(corpus, tmp_path / "serial", workers=1, progress=False)
    pooled = build_audio_cache(corpus, tmp_path / "pooled", workers=2, progress=False)
    assert pooled.entries == serial.entries and set(pooled.failed) == set(serial.failed)
    for tid in serial.track_ids:
        np.testing.assert_array_equal(pooled.get(tid), serial.get(tid))


def test_parameters_must_match_an_existing_cache(corpus: list[Track], tmp_path: Path) -> None:
    build_audio_cache(corpus[:1], tmp_path / "cache", workers=1, progress=False)
    with pytest.raises(ConfigError, match="was built with"):
        build_audio_cache(corpus[:1], tmp_path / "cache", max_seconds=10.0, workers=1, progress=False)


def test_errors(corpus: list[Track], tmp_path: Path) -> None:
    with pytest.raises(MusicSearchError, match="not an audio cache"):
        AudioCache.open(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / INDEX_NAME).write_text('{"version": 1}')
    with pytest.raises(MusicSearchError, match="malformed"):
        AudioCache.open(bad)
    with pytest.raises(ManifestError, match="appears twice"):
        build_audio_cache([corpus[0], corpus[0]], tmp_path / "dup", progress=False)
    cache = build_audio_cache(corpus, tmp_path / "cache", workers=1, progress=False)
    with pytest.raises(KeyError, match="nope"):
        cache.get("nope")
    with pytest.raises(KeyError, match="failed to decode"):
        cache.get("corrupt")
    cache.path_of("long").unlink()
    with pytest.raises(AudioError, match="rebuild the cache"):
        cache.get("long")


def test_real_recording_and_memmap_window(tmp_path: Path) -> None:
    trumpet = next(f for f in librosa_music_files() if f.stem == "sorohanro-solo-trumpet")
    cache = build_audio_cache([Track("trumpet", str(trumpet))], tmp_path / "c", workers=1, progress=False)
    arr = cache.get("trumpet")
    direct = load_audio(trumpet)
    assert arr.shape == direct.shape and abs(arr.shape[0] - 5.3334 * SR) < 2
    np.testing.assert_array_equal(arr[SR : 2 * SR], direct[SR : 2 * SR])


def test_cli_cache(corpus: list[Track], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "manifest.jsonl"
    write_manifest(manifest, corpus)
    out = tmp_path / "cache"
    assert main(["cache", str(manifest), "--out", str(out), "--workers", "1", "--max-seconds", "none"]) == 0
    captured = capsys.readouterr()
    assert "4 of 6 tracks cached" in captured.out and "2 failed" in captured.out
    assert "failed corrupt:" in captured.err
    assert len(AudioCache.open(out)) == 4
    assert main(["cache", str(manifest), "--out", str(out), "--workers", "1"]) == 2  # other max_seconds
    assert "was built with" in capsys.readouterr().err
