"""Indexing: odd and bad files, determinism, incremental updates, model checks, locking, repair, the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from musicsearch.cli.main import main
from musicsearch.data.manifest import Track, write_manifest
from musicsearch.errors import MusicSearchError
from musicsearch.index.embedder import WindowPlan, decode_track, load_embedder
from musicsearch.index.indexer import index_collection
from musicsearch.index.sources import collect_source
from musicsearch.index.store import Store
from musicsearch.models.checkpoint import save_model
from musicsearch.models.registry import build_model, model_config
from musicsearch.search.api import Searcher

SR = 16000


def save_debug_model(path: Path, seed: int) -> Path:
    """An untrained debug model (1 s windows): embeddings are deterministic functions of the audio."""
    torch.manual_seed(seed)
    model = build_model(model_config("debug", text_encoder="tiny-bert"), pretrained_text=False)
    save_model(model, path)
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_debug_model(tmp_path_factory.mktemp("model") / "debug.safetensors", seed=0)


def tone(freq: float, seconds: float, *, amp: float = 0.3, sr: int = SR) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t) * (1 + 0.3 * np.sin(2 * np.pi * 0.7 * t))).astype(np.float32)


def write_tone_folder(root: Path, freqs: tuple[int, ...]) -> Path:
    """A small collection under ``root``: ``t{i}`` a tone of ``freqs[i]`` Hz lasting 1.5 + 0.25 i s; every third one a
    WAV in ``sub/``, the rest FLAC at the top (two formats and a nested folder, as a user's library has)."""
    (root / "sub").mkdir(parents=True, exist_ok=True)
    for i, freq in enumerate(freqs):
        rel = f"sub/t{i}.wav" if i % 3 == 0 else f"t{i}.flac"
        sf.write(root / rel, tone(freq, 1.5 + 0.25 * i), SR)
    return root


def write_odd_folder(root: Path) -> dict[str, str]:
    """A folder of good files in odd formats/names plus bad ones; returns {relative path: expected outcome}."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "Artist Ä" / "Album 1").mkdir(parents=True)
    files = {
        "a.wav": ("WAV", "PCM_16", tone(220, 2.5)),
        "UPPER.WAV": ("WAV", "PCM_16", tone(330, 1.2)),
        "b.Flac": ("FLAC", "PCM_16", tone(440, 3.0)),
        "c.ogg": ("OGG", "VORBIS", tone(550, 2.0)),
        "d.mp3": ("MP3", "MPEG_LAYER_III", tone(660, 2.0)),
        "e.opus": ("OGG", "OPUS", tone(770, 2.0)),
        "with space ♫ ünïcode.flac": ("FLAC", "PCM_16", tone(880, 1.5)),
        "Artist Ä/Album 1/01 First Song.wav": ("WAV", "PCM_16", tone(990, 1.5)),
        "tiny.wav": ("WAV", "PCM_16", tone(500, 0.1)),
        "silent.wav": ("WAV", "PCM_16", np.zeros(2 * SR, np.float32)),
    }
    for rel, (fmt, sub, wave) in files.items():
        sf.write(root / rel, wave, SR, format=fmt, subtype=sub)
    # a 10-minute file, quick to write: a repeated 1 s tone at 8 kHz
    sf.write(root / "long.wav", np.tile(tone(300, 1.0, sr=8000), 600), 8000, subtype="PCM_16")
    (root / "empty.wav").write_bytes(b"")
    (root / "corrupt.mp3").write_bytes(np.random.default_rng(0).bytes(5000))
    (root / "notes.txt").write_text("not audio")
    expected = {rel: "ok" for rel in files} | {"long.wav": "ok", "silent.wav": "silent"}
    expected |= {"empty.wav": "empty", "corrupt.mp3": "corrupt"}
    return expected


def test_folder_with_odd_and_bad_files(model_file: Path, tmp_path: Path) -> None:
    expected = write_odd_folder(tmp_path / "music")
    report = index_collection(tmp_path / "music", tmp_path / "store", model=model_file, workers=1, batch_size=8)
    good = {rel for rel, what in expected.items() if what == "ok"}
    failed = {f.track_id: f.reason for f in report.failed}
    assert set(failed) == {rel for rel, what in expected.items() if what != "ok"}
    assert "silent" in failed["silent.wav"] and "empty" in failed["empty.wav"]
    assert "corrupt" in failed["corrupt.mp3"] or "decode" in failed["corrupt.mp3"]
    assert report.added == len(good) and report.scanned == len(expected)
    with Store.open(tmp_path / "store") as store:
        tracks = {t.track_id: t for t in store.db.iter_tracks()}
        assert set(tracks) == good
        info = store.settings.info()
        for t in tracks.values():  # every vector records the model and the preprocessing
            assert (t.model_name, t.weights_checksum, t.preprocessing_version) == (
                info.model_name,
                info.weights_checksum,
                info.preprocessing_version,
            )
        assert info.weights_checksum == load_embedder(model_file).checksum
        plan = store.settings.plan
        long_windows = store.db.windows(tracks["long.wav"].id)
        assert len(long_windows) == plan.max_windows  # capped, spread over the whole track
        assert long_windows[0].start == 0 and long_windows[-1].start == pytest.approx(600 - 1, abs=0.01)
        assert tracks["long.wav"].duration == pytest.approx(600, abs=0.01)
        assert len(store.db.windows(tracks["tiny.wav"].id)) == 1  # padded to one window
        assert tracks["tiny.wav"].duration == pytest.approx(0.1, abs=0.002)
        nested = tracks["Artist Ä/Album 1/01 First Song.wav"]
        assert (nested.artist, nested.album, nested.title, nested.folder) == (
            "Artist Ä",
            "Album 1",
            "First Song",
            "Artist Ä/Album 1",
        )
        ids = store.tracks.ids()
        vecs = store.tracks.get(ids)
        assert np.isfinite(vecs).all() and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
        assert len(store.windows) == sum(len(store.db.windows(t.id)) for t in tracks.values())
    # a rerun redoes nothing: good files unchanged, bad ones remembered with their reason
    again = index_collection(tmp_path / "music", tmp_path / "store", workers=0)
    assert (again.added, again.updated, again.unchanged) == (0, 0, len(good))
    assert {f.track_id for f in again.failed} == set(failed)
    assert all("unchanged since it failed" in f.reason for f in again.failed if f.track_id != "empty.wav")


def test_windows_follow_the_plan() -> None:
    plan = WindowPlan(16000, max_windows=4)
    assert [plan.n_windows(n) for n in (1600, 16000, 16001, 48000, 50000, 10**7)] == [1, 1, 2, 3, 4, 4]
    assert plan.version() != WindowPlan(16000, max_windows=5).version()


def test_embeddings_are_deterministic_and_match_query_time(model_file: Path, tmp_path: Path) -> None:
    music = tmp_path / "music"
    music.mkdir()
    for i in range(5):
        sf.write(music / f"t{i}.wav", tone(200 + 150 * i, 1.0 + 0.8 * i), SR)
    a = index_collection(music, tmp_path / "a", model=model_file, workers=1, batch_size=3)
    b = index_collection(music, tmp_path / "b", model=model_file, workers=0, batch_size=16)
    assert a.added == b.added == 5
    with Store.open(tmp_path / "a") as sa, Store.open(tmp_path / "b") as sb:
        emb = load_embedder(model_file)
        for ta in sa.db.iter_tracks():
            tb = sb.db.find_track(ta.track_id)
            assert tb is not None
            va = _vector(sa, ta.vector_id)
            vb = _vector(sb, tb.vector_id)
            np.testing.assert_allclose(va, vb, atol=1e-5)  # other batching, other workers: same vector
            track, _, decoded = emb.embed_file(ta.path, sa.settings.plan)  # a query-time embedding
            np.testing.assert_allclose(track, va, atol=1e-5)
            assert [w.start for w in sa.db.windows(ta.id)] == pytest.approx(decoded.starts.tolist())


def _vector(store: Store, vector_id: int | None) -> np.ndarray:
    ids = store.tracks.ids()
    vecs = store.tracks.get(ids)
    return vecs[int(np.searchsorted(ids, vector_id))]


def test_incremental_update_touch_and_prune(model_file: Path, tmp_path: Path) -> None:
    music = tmp_path / "music"
    music.mkdir()
    for i in range(6):
        sf.write(music / f"t{i}.flac", tone(200 + 100 * i, 2.0), SR)
    first = index_collection(music, tmp_path / "store", model=model_file, workers=0)
    assert first.added == 6
    with Store.open(tmp_path / "store") as store:
        before = {t.track_id: t for t in store.db.iter_tracks()}
    sf.write(music / "t1.flac", tone(1234, 2.5), SR)  # changed content
    os.utime(music / "t2.flac", ns=(1, 10**18))  # touched only: new mtime, same bytes
    (music / "t3.flac").unlink()  # removed
    second = index_collection(music, tmp_path / "store", workers=0)
    assert (second.added, second.updated, second.unchanged, second.stale, second.removed) == (0, 1, 4, 1, 0)
    assert second.embedded == 1  # only the changed file was embedded (the touched one was hashed, not decoded)
    with Store.open(tmp_path / "store") as store:
        after = {t.track_id: t for t in store.db.iter_tracks()}
        assert after["t1.flac"].content_hash != before["t1.flac"].content_hash
        assert after["t1.flac"].duration == pytest.approx(2.5)
        assert after["t2.flac"].id == before["t2.flac"].id  # untouched row
        assert "t3.flac" in after  # kept without --prune
    third = index_collection(music, tmp_path / "store", workers=0, prune=True)
    assert (third.embedded, third.removed, third.unchanged) == (0, 1, 5)
    with Store.open(tmp_path / "store") as store:
        assert "t3.flac" not in {t.track_id for t in store.db.iter_tracks()}
        assert len(store.tracks) == 5 and len(store.windows) == 4 * 2 + 3  # t1 is now 2.5 s: 3 windows
        assert np.array_equal(store.db.vector_ids(level="track"), store.tracks.ids())
        assert np.array_equal(store.db.vector_ids(level="window"), store.windows.ids())


def test_manifest_metadata_and_edits(model_file: Path, tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    for i in range(3):
        sf.write(audio / f"s{i}.wav", tone(300 + 200 * i, 4.0), SR)
    tracks = [
        Track("x0", str(audio / "s0.wav"), tags=("jazz", "Piano"), metadata={"artist": "Ann", "year": 1999}),
        Track("x1", str(audio / "s1.wav"), tags=("rock",), start=1.0, end=3.0, metadata={"album": "B", "year": "2004"}),
        Track("x2", str(audio / "s2.wav"), tags=(), metadata={"title": "Third"}),
    ]
    write_manifest(tmp_path / "m.jsonl", tracks)
    report = index_collection(tmp_path / "m.jsonl", tmp_path / "store", model=model_file, workers=0)
    assert report.added == 3
    with Store.open(tmp_path / "store") as store:
        x0, x1 = store.db.find_track("x0"), store.db.find_track("x1")
        assert x0 is not None and x1 is not None
        assert (x0.artist, x0.year, x0.tags) == ("Ann", 1999, ("jazz", "Piano"))
        assert x1.year == 2004 and x1.duration == pytest.approx(2.0)
        assert store.db.windows(x1.id)[0].start == pytest.approx(1.0)  # segment windows in file time
    # editing a tag re-indexes that track only
    tracks[2] = Track("x2", str(audio / "s2.wav"), tags=("ambient",), metadata={"title": "Third"})
    write_manifest(tmp_path / "m.jsonl", tracks)
    again = index_collection(tmp_path / "m.jsonl", tmp_path / "store", workers=0)
    assert (again.updated, again.unchanged) == (1, 2)


def test_model_mismatch_is_refused(model_file: Path, tmp_path: Path) -> None:
    music = tmp_path / "music"
    music.mkdir()
    sf.write(music / "a.wav", tone(440, 1.5), SR)
    index_collection(music, tmp_path / "store", model=model_file, workers=0)
    other = save_debug_model(tmp_path / "other.safetensors", seed=1)
    with pytest.raises(MusicSearchError, match="re-index") as err:
        Searcher.open(tmp_path / "store", model=other)
    assert str(model_file.resolve()) in str(err.value)  # says which model to use instead
    with pytest.raises(MusicSearchError, match="not comparable"):
        index_collection(music, tmp_path / "store", model=other, workers=0)
    with pytest.raises(MusicSearchError, match="max"):
        index_collection(music, tmp_path / "store", workers=0, max_windows=3)
    with Searcher.open(tmp_path / "store") as searcher:  # the store's own model by default
        assert searcher.embedder.checksum == load_embedder(model_file).checksum


def test_second_writer_is_refused(model_file: Path, tmp_path: Path) -> None:
    # (a new store without --model takes the default model: tests/index/test_indexer_hostile.py)
    music = tmp_path / "music"
    music.mkdir()
    sf.write(music / "a.wav", tone(440, 1.5), SR)
    index_collection(music, tmp_path / "store", model=model_file, workers=0)
    with Store.open(tmp_path / "store", writable=True):
        with pytest.raises(MusicSearchError, match="another indexing run"):
            index_collection(music, tmp_path / "store", workers=0)
    with pytest.raises(MusicSearchError, match="not a musicsearch store"):
        Store.open(tmp_path / "music")


def test_repair_drops_orphans_and_tracks_missing_vectors(model_file: Path, tmp_path: Path) -> None:
    music = tmp_path / "music"
    music.mkdir()
    for i in range(3):
        sf.write(music / f"t{i}.wav", tone(300 + 100 * i, 1.5), SR)
    index_collection(music, tmp_path / "store", model=model_file, workers=0)
    with Store.open(tmp_path / "store", writable=True) as store:
        dim = store.settings.dim
        # as if killed after saving vectors but before committing them, and after removing a track's vectors
        # but before committing its removal
        store.tracks.add([10_000], np.ones((1, dim), np.float32))
        victim = store.db.find_track("t1.wav")
        assert victim is not None and victim.vector_id is not None
        store.tracks.remove([victim.vector_id])
        store.save_vectors()
    with Store.open(tmp_path / "store", writable=True) as store:  # opening for writing repairs
        assert {t.track_id for t in store.db.iter_tracks()} == {"t0.wav", "t2.wav"}
        assert np.array_equal(store.db.vector_ids(level="track"), store.tracks.ids())
        assert np.array_equal(store.db.vector_ids(level="window"), store.windows.ids())
    again = index_collection(music, tmp_path / "store", workers=0)
    assert (again.added, again.unchanged) == (1, 2)


def test_symlink_out_of_the_folder_is_rejected(tmp_path: Path) -> None:
    music = tmp_path / "music"
    music.mkdir()
    sf.write(music / "in.wav", tone(440, 1.0), SR)
    sf.write(tmp_path / "outside.wav", tone(440, 1.0), SR)
    (music / "link.wav").symlink_to(tmp_path / "outside.wav")
    (music / "inner_link.wav").symlink_to(music / "in.wav")
    items, rejected = collect_source(music)
    assert {i.track_id for i in items} == {"in.wav", "inner_link.wav"}
    assert [r.track_id for r in rejected] == ["link.wav"] and "outside" in rejected[0].reason


def test_decode_track_segment_and_silence(tmp_path: Path) -> None:
    sf.write(tmp_path / "a.wav", tone(440, 5.0), SR)
    d = decode_track(tmp_path / "a.wav", WindowPlan(16000), start=1.0, end=4.0)
    assert d.windows.shape == (3, 16000) and d.starts.tolist() == pytest.approx([1.0, 2.0, 3.0])
    sf.write(tmp_path / "quiet.wav", np.full(SR, 1e-5, np.float32), SR)
    with pytest.raises(MusicSearchError, match="silent"):
        decode_track(tmp_path / "quiet.wav", WindowPlan(16000))


def test_cli_index_and_query(model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    music = tmp_path / "music"
    music.mkdir()
    for i in range(4):
        sf.write(music / f"t{i}.wav", tone(200 + 300 * i, 2.0), SR)
    (music / "bad.wav").write_bytes(b"RIFF nonsense")
    store = tmp_path / "store"
    assert main(["index", str(music), "--store", str(store), "--model", str(model_file), "--workers", "1"]) == 0
    out = capsys.readouterr()
    assert "4 added" in out.out and "failed bad.wav" in out.err
    assert (store / "calibration.json").is_file() and (store / "map.json").is_file()
    assert main(["index", str(music), "--store", str(store), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["unchanged"] == 4 and report["added"] == 0
    assert main(["query", "a low tone", "--store", str(store), "-k", "3", "--json"]) == 0
    resp = json.loads(capsys.readouterr().out)
    assert len(resp["results"]) == 3 and all(0 <= r["relevance"] <= 1 for r in resp["results"])
    assert main(["query", "--like", "t0.wav", "--store", str(store), "-k", "2"]) == 0
    table = capsys.readouterr().out
    assert "like: track:" in table and "t0" not in table.split("track\n", 1)[1]
    assert main(["query", "", "--store", str(store)]) == 2  # empty query: a clear error, exit 2
    assert "empty" in capsys.readouterr().err
