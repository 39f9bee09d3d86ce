"""The indexing pipeline against the naive loop (decode a file, embed its windows, next file), and the rule that
gives the model its cores around the decoders (:class:`musicsearch.index.indexer._Batcher`)."""

from __future__ import annotations

import concurrent.futures as cf
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_indexer import SR, save_debug_model, tone

from musicsearch.index import indexer
from musicsearch.index.embedder import Embedder, decode_track, load_embedder, track_vector
from musicsearch.index.indexer import _Batcher, _Decoding, _Outcome, index_collection
from musicsearch.index.store import Store

#: Vectors of one window embedded in batches of different sizes, on other thread counts, then normalised: float32
#: rounding of the model's sums (about 1e-7 relative each) over a few hundred terms, far below any real difference.
VECTOR_ATOL = 1e-5


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_debug_model(tmp_path_factory.mktemp("model") / "debug.safetensors", seed=0)


def write_music(root: Path) -> dict[str, str]:
    """Tones of several lengths and rates (a 44.1 kHz one long enough to be decoded window by window, with
    resampling), and a corrupt file; returns {relative path: "ok" | "corrupt"}."""
    root.mkdir(parents=True)
    expected = {}
    for i in range(7):
        name = f"t{i}.flac"
        sf.write(root / name, tone(180 + 70 * i, 1.2 + 0.6 * i), SR)
        expected[name] = "ok"
    long_sr = 44100
    sf.write(root / "long44k.flac", np.tile(tone(310, 1.0, sr=long_sr), 40), long_sr)  # 40 s > (16 + 1) windows
    expected["long44k.flac"] = "ok"
    (root / "broken.flac").write_bytes(b"fLaC" + np.random.default_rng(1).bytes(4000))
    expected["broken.flac"] = "corrupt"
    return expected


def naive_vectors(folder: Path, names: list[str], embedder: Embedder, store: Path) -> dict[str, np.ndarray]:
    """The oracle: each file decoded and embedded alone, with the store's window plan."""
    with Store.open(store) as st:
        plan = st.settings.plan
    return {n: track_vector(embedder.embed_windows(decode_track(folder / n, plan).windows)) for n in names}


@pytest.mark.parametrize("workers", [1, 2])
def test_the_pipeline_stores_what_the_naive_loop_computes(model_file: Path, tmp_path: Path, workers: int) -> None:
    expected = write_music(tmp_path / "music")
    report = index_collection(tmp_path / "music", tmp_path / "store", model=model_file, workers=workers, batch_size=3)
    good = sorted(n for n, what in expected.items() if what == "ok")
    assert {f.track_id for f in report.failed} == {"broken.flac"}  # reported, and the rest goes on
    assert "broken.flac" in report.failed[0].path and report.failed[0].reason
    assert report.added == len(good)
    want = naive_vectors(tmp_path / "music", good, load_embedder(model_file), tmp_path / "store")
    with Store.open(tmp_path / "store") as st:
        tracks = {t.track_id: t for t in st.db.iter_tracks()}
        assert sorted(tracks) == good
        assert len(st.db.windows(tracks["long44k.flac"].id)) == st.settings.plan.max_windows
        for name in good:
            vid = tracks[name].vector_id
            assert vid is not None
            got = st.tracks.get(np.array([vid], np.int64))[0]
            np.testing.assert_allclose(got, want[name], rtol=0, atol=VECTOR_ATOL, err_msg=name)
    # the workers' store equals the inline one (workers=0) too
    inline = index_collection(tmp_path / "music", tmp_path / "inline", model=model_file, workers=0)
    assert inline.added == len(good)
    assert window_vectors(tmp_path / "inline").keys() == window_vectors(tmp_path / "store").keys()
    for name, vecs in window_vectors(tmp_path / "inline").items():  # ids follow the order tracks finish in
        np.testing.assert_allclose(vecs, window_vectors(tmp_path / "store")[name], rtol=0, atol=VECTOR_ATOL)


def window_vectors(store: Path) -> dict[str, np.ndarray]:
    """``(n, D)`` window vectors of every stored track, by track id, in window order."""
    with Store.open(store) as st:
        out = {}
        for t in st.db.iter_tracks():
            ids = np.array([w.vector_id for w in st.db.windows(t.id)], np.int64)
            out[t.track_id] = st.windows.get(ids)
        return out


# --- the cores rule ----------------------------------------------------------------------------------------------


class _Script(_Decoding):
    """A decoding state that plays a script: ``running()`` answers from ``counts`` (the last repeats) and
    ``wait`` moves to the next answer."""

    def __init__(self, counts: list[int], mean: float) -> None:
        super().__init__(workers=max(1, *counts))
        self.counts = counts
        self.seconds, self.jobs = mean, 1
        self.waited: list[float | None] = []

    def running(self) -> int:
        return self.counts[0]

    def wait(self, timeout: float | None) -> None:
        self.waited.append(timeout)
        if len(self.counts) > 1:
            self.counts.pop(0)


class _Counter(Embedder):
    """No model: window embeddings are their first 4 samples; notes the threads of every pass."""

    def __init__(self) -> None:
        self.name, self.checksum, self.source, self.batch_size = "counter", "0" * 64, "test", 8
        self.threads = 0
        self.passes: list[tuple[int, int]] = []  # (threads, windows)

    @property
    def dim(self) -> int:
        return 4

    @property
    def window_samples(self) -> int:
        return 10

    def using_threads(self, threads: int):  # type: ignore[no-untyped-def, override]
        import contextlib

        @contextlib.contextmanager
        def block():  # type: ignore[no-untyped-def]
            before, self.threads = self.threads, threads
            try:
                yield
            finally:
                self.threads = before

        return block()

    def _run_windows(self, windows: np.ndarray) -> np.ndarray:
        self.passes.append((self.threads, windows.shape[0]))
        return windows[:, :4].copy()


def quiet(batcher: _Batcher) -> _Batcher:
    """The batcher as on a quiet machine: a full batch timed 1.8x faster on every core than on the split."""
    split = max(1, batcher.cores - (batcher.decoding.workers if batcher.decoding else 0))
    batcher.batch_seconds.update({batcher.cores: 0.010, split: 0.018})
    return batcher


def test_nothing_decoding_means_every_core_and_the_full_batch() -> None:
    batcher = quiet(_Batcher(_Counter(), 4, cores=4, decoding=_Script([0], mean=0.01)))
    assert batcher._threads_for(4) == (4, 4)
    assert _Batcher(_Counter(), 4, cores=4, decoding=None)._threads_for(4) == (4, 4)


def test_a_running_decoder_leaves_its_core_and_the_model_takes_one_window() -> None:
    batcher = quiet(_Batcher(_Counter(), 4, cores=4, decoding=_Script([1], mean=0.01)))
    assert batcher._threads_for(4) == (3, 1)  # not timed yet: try it
    batcher.window_seconds[3] = 0.015  # a window shorter than two decodes: share the cores
    assert batcher._threads_for(4) == (3, 1)
    two = quiet(_Batcher(_Counter(), 4, cores=2, decoding=_Script([3], mean=0.01)))
    assert two._threads_for(4) == (1, 1)  # never fewer than one thread


def test_a_slow_window_waits_for_the_decoder_instead() -> None:
    script = _Script([1, 1, 0], mean=0.01)
    batcher = quiet(_Batcher(_Counter(), 4, cores=2, decoding=script))
    batcher.window_seconds[1] = 0.5  # one window would outlast the decoder 25 times
    assert batcher._threads_for(4) == (2, 4)  # waited until nothing decoded, then every core
    assert script.waited == [0.5, 0.5] and batcher.waits == 2


def test_where_every_core_does_not_pay_the_model_keeps_the_cores_the_workers_leave() -> None:
    batcher = _Batcher(_Counter(), 4, cores=2, decoding=_Script([0], mean=0.01))
    assert batcher._threads_for(4) == (1, 4)  # the split is timed first, on a full batch
    batcher.batch_seconds[1] = 0.011
    assert batcher._threads_for(4) == (2, 4)  # then every core
    batcher.batch_seconds[2] = 0.010  # two threads barely faster than one: a busy machine
    choices = [batcher._threads_for(4) for _ in range(indexer.RETIME_PASSES - 3)]
    assert choices == [(1, 4)] * (indexer.RETIME_PASSES - 3)  # the fixed split, full batches
    assert batcher._threads_for(4) == (1, 4) and not batcher.batch_seconds  # now and then both are timed again
    batcher.batch_seconds.update({2: 0.006, 1: 0.011})  # 1.8x: a quiet machine
    assert batcher._threads_for(4) == (2, 4)


def test_the_batcher_runs_each_pass_on_the_threads_it_chose() -> None:
    emb = _Counter()
    batcher = quiet(_Batcher(emb, 3, cores=2, decoding=_Script([1, 0], mean=0.01)))
    windows = np.arange(50, dtype=np.float32).reshape(5, 10)
    from musicsearch.index.embedder import DecodedTrack

    decoded = DecodedTrack(windows, np.arange(5.0), 5.0, -10.0)
    done = batcher.add(_Outcome(0, "ok", "x", decoded))
    done += batcher.flush()
    assert emb.passes[0] == (1, 1)  # a decoder running: one window on the other core
    assert sum(n for _, n in emb.passes) == 5 and len(done) == 1
    np.testing.assert_array_equal(done[0].raw, windows[:, :4])  # every window embedded once, in order


def test_decoding_counts_the_jobs_not_finished() -> None:
    decoding = _Decoding(workers=2)
    finished: cf.Future[_Outcome] = cf.Future()
    finished.set_result(_Outcome(0, "ok", seconds=0.2))
    waiting = [cf.Future() for _ in range(3)]  # type: ignore[var-annotated]
    decoding.futures = {finished: None, **{f: None for f in waiting}}  # type: ignore[dict-item]
    assert decoding.running() == 2  # three unfinished, two workers
    decoding.finished(finished.result())
    decoding.finished(_Outcome(1, "ok", seconds=0.4))
    assert decoding.mean_seconds() == pytest.approx(0.3)
    for f in waiting:
        f.set_result(_Outcome(2, "ok"))
    assert decoding.running() == 0
    decoding.wait(timeout=0.01)  # nothing to wait for: returns at once
    assert indexer._Decoding(workers=1).mean_seconds() == 0.0
