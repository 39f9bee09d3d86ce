"""Indexing in a hostile world: the README's first commands on a new store, files that hang, swell or make the
model return NaN, a full disk, a read-only store, readers next to a long commit, and a kill inside a commit."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_indexer import SR, save_debug_model, tone

from musicsearch.audio.chunking import evenly_spaced_windows, rms_db
from musicsearch.audio.io import load_audio
from musicsearch.cli.main import main
from musicsearch.errors import AudioError, MusicSearchError
from musicsearch.index import indexer
from musicsearch.index.embedder import DecodedTrack, WindowPlan, decode_track, load_embedder
from musicsearch.index.indexer import _Batcher, _hash_regular, _Outcome, index_collection
from musicsearch.index.metadata import MetadataDB, TrackInfo
from musicsearch.index.store import FileRow, Store, store_model
from musicsearch.models.loading import DEFAULT_MODEL
from musicsearch.search.api import Searcher, search


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_debug_model(tmp_path_factory.mktemp("model") / "debug.safetensors", seed=0)


def write_tones(root: Path, n: int, *, seconds: float = 1.5) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        name = f"t{i}.flac"
        sf.write(root / name, tone(200 + 90 * i, seconds + 0.25 * i), SR)
        names.append(name)
    return names


# -- a new store, and ~ in every path ------------------------------------------------------------------------------


def test_new_store_defaults_to_the_default_model(model_file: Path, tmp_path: Path) -> None:
    store = tmp_path / "s"
    assert store_model(store) == DEFAULT_MODEL  # new store: the shipped default
    assert store_model(store, model_file) == model_file  # given: as given
    write_tones(tmp_path / "music", 1)
    index_collection(tmp_path / "music", store, model=model_file, workers=0)
    assert store_model(store) == str(model_file.resolve())  # existing store: its own model


def test_readme_index_command_on_a_new_store_with_tilde_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    write_tones(home / "Music", 2, seconds=3.5)
    monkeypatch.setenv("HOME", str(home))
    # as typed with the shell's ~ left alone (quoted, or --store=~/...): the library expands it
    assert main(["index", "~/Music", "--store", "~/music.store", "--workers", "0", "--map", "none"]) == 0
    assert "2 added" in capsys.readouterr().out
    with Store.open("~/music.store") as st:
        assert st.settings.model_source == DEFAULT_MODEL and len(st) == 2
    report = index_collection("~/Music", "~/music.store", workers=0)  # the library, likewise
    assert (report.added, report.unchanged) == (0, 2)
    assert not (Path.cwd() / "~").exists()


# -- readers never write -------------------------------------------------------------------------------------------


@pytest.fixture()
def small_store(model_file: Path, tmp_path: Path) -> tuple[Path, Path]:
    music = tmp_path / "music"
    write_tones(music, 3)
    store = tmp_path / "store"
    index_collection(music, store, model=model_file, workers=0)
    return music, store


def test_reader_opens_the_database_read_only(small_store: tuple[Path, Path]) -> None:
    _, store = small_store
    with Store.open(store) as st:
        assert st.db.readonly and st.files.readonly
        with pytest.raises(sqlite3.OperationalError, match=r"readonly|read-only"):
            st.db._con.execute("INSERT INTO store_info(key, value) VALUES ('x', 'y')")
        with pytest.raises(MusicSearchError, match="reading only"):
            st.files.put([FileRow("x", 1, 1, "h", "x", "ok")])


def test_a_long_index_commit_never_blocks_readers(small_store: tuple[Path, Path]) -> None:
    _, store = small_store
    writer = MetadataDB(store / "metadata.sqlite")
    try:
        with writer.transaction():  # an index commit holding the write lock (saving vectors for minutes)
            writer.add_track(TrackInfo("pending.wav", "pending.wav", "sha256:x;meta:y"), window_starts=[0.0])
            t0 = time.monotonic()
            with Searcher.open(store) as searcher:  # opening, filtering and searching take no lock
                results = searcher.search("a low tone", k=3).results
                assert len(results) == 3 and "pending.wav" not in {r.track_id for r in results}
            assert len(search(store, "a low tone", k=2)) == 2
            assert time.monotonic() - t0 < 10.0  # the old reader waited 30 s for the lock, then failed
    finally:
        writer.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_store_can_be_searched(small_store: tuple[Path, Path]) -> None:
    _, store = small_store
    files = [p for p in store.rglob("*") if p.is_file()]
    dirs = [store, *(p for p in store.rglob("*") if p.is_dir())]
    try:
        for p in files:
            p.chmod(0o444)
        for d in dirs:
            d.chmod(0o555)
        assert len(search(store, "a low tone", k=2)) == 2
        assert len(search(store, "a high tone", k=1)) == 1
    finally:
        for d in dirs:
            d.chmod(0o755)
        for p in files:
            p.chmod(0o644)


KILL_INSIDE_COMMIT = """
import os, signal, sys
from musicsearch.index.store import Store
from musicsearch.index.indexer import index_collection
save = Store.save_vectors
def save_then_die(self):
    save(self)                            # the vectors are saved, the metadata transaction is still open
    os.kill(os.getpid(), signal.SIGKILL)
Store.save_vectors = save_then_die
index_collection(sys.argv[1], sys.argv[2], workers=0)
"""


def test_kill_inside_a_commit_leaves_k_results(model_file: Path, tmp_path: Path) -> None:
    music, store = tmp_path / "music", tmp_path / "store"
    names = write_tones(music, 4)
    for name in names[1:]:
        (music / name).rename(tmp_path / name)
    index_collection(music, store, model=model_file, workers=0)  # one track committed
    for name in names[1:]:
        (tmp_path / name).rename(music / name)
    proc = subprocess.run([sys.executable, "-c", KILL_INSIDE_COMMIT, str(music), str(store)], check=False)
    assert proc.returncode == -signal.SIGKILL
    with Store.open(store) as st:
        assert len(st) == 1 and len(st.tracks) == 4  # three orphan vectors: saved, never committed
    for name in names[1:]:  # an uncommitted track's own audio: its vector is the best match, and has no track
        got = search(store, like=str(music / name), k=1)
        assert [r.track_id for r in got] == [names[0]]
    report = index_collection(music, store, workers=0)  # the next run repairs and continues
    assert (report.added, report.unchanged) == (3, 1) and report.repaired >= 3  # 3 track + their window vectors


# -- NaN from the model is one file's error ------------------------------------------------------------------------


def test_damaged_float_files_fail_alone_and_the_rest_commits(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    music = tmp_path / "music"
    names = write_tones(music, 3)
    nan = tone(300, 2.0)
    nan[::100] = np.nan
    sf.write(music / "nan.wav", nan, SR, subtype="FLOAT")
    sf.write(music / "huge.wav", np.where(np.arange(2 * SR) % 5 == 0, 1e30, 0.1).astype(np.float32), SR, "FLOAT")
    args = ["index", str(music), "--store", str(tmp_path / "s"), "--model", str(model_file), "--map", "none"]
    assert main([*args, "--workers", "1", "--batch-size", "64"]) == 0  # one batch holds every window
    err = capsys.readouterr().err
    assert "failed nan.wav" in err and "NaN/inf samples" in err and "huge.wav" in err and "far outside" in err
    assert "damaged weights" not in err and "weights are probably damaged" not in err
    with Store.open(tmp_path / "s") as st:
        assert sorted(t.track_id for t in st.db.iter_tracks()) == names


def decoded(windows: np.ndarray) -> _Outcome:
    return _Outcome(0, "ok", "x", DecodedTrack(windows, np.zeros(windows.shape[0]), 1.0, -10.0))


def test_model_nan_for_one_track_fails_that_track_and_reruns_the_batch(model_file: Path) -> None:
    embedder = load_embedder(model_file)
    w = embedder.window_samples
    rng = np.random.default_rng(0)
    good_a = (0.1 * rng.standard_normal((3, w))).astype(np.float32)
    good_b = (0.1 * rng.standard_normal((2, w))).astype(np.float32)
    hostile = np.full((2, w), 1e30, np.float32)  # what a damaged float file would feed the model undecoded
    with pytest.raises(MusicSearchError, match="NaN"):
        embedder.embed_windows(hostile)  # the model itself says NaN for it
    batcher = _Batcher(embedder, batch_size=7)
    slots = batcher.add(decoded(good_a)) + batcher.add(decoded(hostile)) + batcher.add(decoded(good_b))
    assert len(slots) == 3  # one batch of 7 windows, three tracks done
    assert [bool(s.error) for s in slots] == [False, True, False] and "this file" in slots[1].error
    tol = 8 * float(np.finfo(np.float32).eps) * float(np.abs(slots[0].raw).max())  # batch size may change sums
    np.testing.assert_allclose(slots[0].raw, embedder.embed_windows(good_a), rtol=0, atol=tol)
    np.testing.assert_allclose(slots[2].raw, embedder.embed_windows(good_b), rtol=0, atol=tol)


def test_nan_from_damaged_weights_still_stops_the_run(model_file: Path) -> None:
    embedder = load_embedder(model_file)
    with torch.no_grad():
        for param in embedder.model.parameters():
            param.fill_(float("nan"))
    batcher = _Batcher(embedder, batch_size=2)
    with pytest.raises(MusicSearchError, match="weights"):
        batcher.add(decoded(np.zeros((2, embedder.window_samples), np.float32) + 0.1))


# -- files that hang ----------------------------------------------------------------------------------------------


def test_a_named_pipe_is_reported_without_being_opened(model_file: Path, tmp_path: Path) -> None:
    music = tmp_path / "music"
    names = write_tones(music, 2)
    os.mkfifo(music / "pipe.wav")  # reading it would block until a writer comes: forever
    with pytest.raises(AudioError, match="not a regular file"):
        _hash_regular(str(music / "pipe.wav"))
    for workers in (0, 1):
        report = index_collection(music, tmp_path / f"s{workers}", model=model_file, workers=workers)
        assert [(f.track_id, "not a regular file" in f.reason) for f in report.failed] == [("pipe.wav", True)]
        assert report.added == len(names)


def test_a_decode_that_hangs_is_stopped_by_the_timeout(
    model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    music = tmp_path / "music"
    names = write_tones(music, 3)
    real = indexer.decode_track

    def hang_on_t1(path: str, *args: object, **kwargs: object) -> DecodedTrack:
        if Path(path).name == "t1.flac":
            time.sleep(600)  # a decoder stuck on a hostile file
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(indexer, "decode_track", hang_on_t1)
    t0 = time.monotonic()
    report = index_collection(music, tmp_path / "s", model=model_file, workers=0, decode_timeout=1.0)
    assert time.monotonic() - t0 < 60
    assert [f.track_id for f in report.failed] == ["t1.flac"] and "longer than 1 s" in report.failed[0].reason
    assert report.added == len(names) - 1


# -- change detection ---------------------------------------------------------------------------------------------


def test_same_size_edit_with_restored_mtime_needs_rehash(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    music, store = tmp_path / "music", tmp_path / "s"
    write_tones(music, 2)
    wav = music / "edit.wav"
    sf.write(wav, tone(300, 2.0), SR, subtype="PCM_16")
    index_collection(music, store, model=model_file, workers=0)
    before = os.stat(wav)
    sf.write(wav, tone(900, 2.0), SR, subtype="PCM_16")  # same length and format: same size
    os.utime(wav, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the old modification time
    assert os.stat(wav).st_size == before.st_size
    report = index_collection(music, store, workers=0)
    assert (report.updated, report.unchanged) == (0, 3)  # size + mtime match: not even read (documented)
    args = ["index", str(music), "--store", str(store), "--workers", "0", "--map", "none", "--json"]
    assert main([*args, "--rehash"]) == 0
    assert '"updated": 1' in capsys.readouterr().out  # hashed again: the edit is found and re-embedded
    report = index_collection(music, store, workers=0, rehash=True)
    assert (report.updated, report.unchanged) == (0, 3)


# -- a full disk, a read-only store --------------------------------------------------------------------------------

DISK_LIMIT = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails (EFBIG), as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.RLIM_INFINITY))
from musicsearch.cli.main import main
sys.exit(main(["index", sys.argv[2], "--store", sys.argv[3], "--model", sys.argv[4], "--workers", "0",
               "--map", "none", "--commit-every", "1"]))
"""


def run_with_disk_limit(limit: int, music: Path, store: Path, model: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", DISK_LIMIT, str(limit), str(music), str(store), str(model)]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)


def test_disk_full_ends_with_one_line_and_the_next_run_continues(model_file: Path, tmp_path: Path) -> None:
    music, store = tmp_path / "music", tmp_path / "s"
    write_tones(music, 2)
    # while creating the store: nothing half made is left to block the retry
    proc = run_with_disk_limit(4096, music, store, model_file)
    lines = [ln for ln in proc.stderr.splitlines() if "error" in ln or "Traceback" in ln]
    assert proc.returncode == 2 and len(lines) == 1 and "run the same command again" in lines[0], proc.stderr
    assert not (store / "store.json").exists()
    index_collection(music, store, model=model_file, workers=0)
    # in the middle of a run: the commits before the full disk stay, the next run embeds the rest
    write_tones(music / "more", 24, seconds=1.0)
    largest = max(p.stat().st_size for p in store.rglob("*") if p.is_file())
    proc = run_with_disk_limit(largest + 8192, music, store, model_file)
    lines = [ln for ln in proc.stderr.splitlines() if "error" in ln or "Traceback" in ln]
    assert proc.returncode == 2 and len(lines) == 1 and str(store) in lines[0], proc.stderr
    with Store.open(store) as st:
        committed = len(st)
    report = index_collection(music, store, workers=0)
    assert report.unchanged == committed and report.added + report.unchanged == 26 and not report.failed
    with Store.open(store) as st:
        assert len(st) == 26 and np.array_equal(np.sort(st.tracks.ids()), np.sort(st.db.vector_ids(level="track")))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_store_directory_ends_with_one_line(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    music, parent = tmp_path / "music", tmp_path / "ro"
    write_tones(music, 1)
    parent.mkdir()
    parent.chmod(0o555)
    try:
        args = ["index", str(music), "--model", str(model_file), "--workers", "0", "--map", "none"]
        assert main([*args, "--store", str(parent / "s")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "cannot write store" in err[0] and "Traceback" not in err[0]
    finally:
        parent.chmod(0o755)


# -- a long file: only the windows kept are decoded ----------------------------------------------------------------

DECODE_PEAK = """
import resource, sys
from musicsearch.index.embedder import WindowPlan, decode_track
plan = WindowPlan(48000, max_windows=16)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
d = decode_track(sys.argv[1], plan)
print(d.windows.shape[0], (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)  # MiB
"""


def test_a_long_file_is_decoded_window_by_window_in_bounded_memory(tmp_path: Path) -> None:
    path, sr, minutes = tmp_path / "long.flac", 44100, 6
    with sf.SoundFile(path, "w", sr, 2, subtype="PCM_16") as f:
        for m in range(minutes):
            t = np.arange(60 * sr) / sr
            x = 0.3 * np.sin(2 * np.pi * (200 + 40 * m) * t)
            f.write(np.stack([x, 0.5 * x], axis=1).astype(np.float32))
    out = subprocess.run(
        [sys.executable, "-c", DECODE_PEAK, str(path)], capture_output=True, text=True, check=True, timeout=300
    ).stdout.split()
    whole_mib = minutes * 60 * sr * 2 * 4 / 2**20  # the float32 frames alone of a whole decode: 121 MiB
    assert int(out[0]) == 16 and int(out[1]) < whole_mib / 2, out
    # the windows are those of the whole decode (the oracle), to float32 resampling precision
    plan = WindowPlan(48000, max_windows=16)
    got = decode_track(path, plan)
    wave = load_audio(path)
    want, starts = evenly_spaced_windows(wave, plan.n_windows(wave.shape[0]), plan.window_samples)
    assert got.duration == wave.shape[0] / SR and np.array_equal(got.starts, starts)
    np.testing.assert_allclose(got.windows, want, rtol=0, atol=64 * float(np.finfo(np.float32).eps))
    assert abs(got.level_db - rms_db(want)) < 1e-6
