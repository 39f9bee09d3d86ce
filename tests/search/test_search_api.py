"""search() and Searcher: results checked against an exact NumPy oracle (query parsing is tested in
test_search_query.py, calibration in test_calibration.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from musicsearch.data.manifest import Track, write_manifest
from musicsearch.errors import MusicSearchError
from musicsearch.index.backends.base import l2_normalize
from musicsearch.index.embedder import decode_track, load_embedder
from musicsearch.index.indexer import index_collection
from musicsearch.index.metadata import MetadataFilter
from musicsearch.models.checkpoint import save_model
from musicsearch.models.registry import build_model, model_config
from musicsearch.search.api import Searcher, search
from musicsearch.search.query import parse_filters

SR = 16000


# --------------------------------------------------------------------------------------------- the oracle


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model(model_config("debug", text_encoder="tiny-bert"), pretrained_text=False)
    path = tmp_path_factory.mktemp("model") / "debug.safetensors"
    save_model(model, path)
    return path


ARTISTS = ["Ann", "Bob", "Cy"]


@pytest.fixture(scope="module")
def store(model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of 12 tagged tracks (1.5 to 4.25 s, several windows each) with artists, years and folders."""
    root = tmp_path_factory.mktemp("collection")
    tracks = []
    rng = np.random.default_rng(0)
    for i in range(12):
        seconds = 1.5 + 0.25 * i
        t = np.arange(int(seconds * SR)) / SR
        freq = 100 * (i + 1)
        wave = 0.3 * np.sin(2 * np.pi * freq * t) * (t % 1.0 < 0.5 + 0.04 * i) + 0.02 * rng.standard_normal(t.size)
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(exist_ok=True)
        path = folder / f"t{i}.wav"
        sf.write(path, wave.astype(np.float32), SR)
        tags = ("low" if freq < 600 else "high", "even" if i % 2 == 0 else "odd")
        meta = {"artist": ARTISTS[i % 3], "year": 1990 + i, "folder": folder.name, "title": f"Track {i}"}
        tracks.append(Track(f"t{i}", str(path), tags=tags, metadata=meta))
    write_manifest(root / "m.jsonl", tracks)
    report = index_collection(root / "m.jsonl", root / "store", model=model_file, workers=0)
    assert report.added == 12
    return root / "store"


class Oracle:
    """Embeddings computed independently of the store (file by file), and brute-force rankings."""

    def __init__(self, searcher: Searcher) -> None:
        self.emb = searcher.embedder
        plan = searcher.store.settings.plan
        self.recs = sorted(searcher.store.db.iter_tracks(), key=lambda r: r.id)
        self.tracks = np.stack([self.emb.embed_file(r.path, plan)[0] for r in self.recs])  # (N, D)
        self.windows = [self.emb.embed_file(r.path, plan)[1] for r in self.recs]
        self.starts = [[w.start for w in searcher.store.db.windows(r.id)] for r in self.recs]

    def text(self, text: str) -> np.ndarray:
        return self.emb.embed_texts([text])[0]

    def rank(self, q: np.ndarray, scores: np.ndarray | None = None, keep: Any = None) -> list[tuple[int, float]]:
        s = self.tracks @ q if scores is None else scores
        items = [(r.id, float(x)) for r, x in zip(self.recs, s) if keep is None or keep(r)]
        return sorted(items, key=lambda it: (-it[1], it[0]))


def check(results: list[Any], expected: list[tuple[int, float]], k: int) -> None:
    assert [r.id for r in results] == [i for i, _ in expected[:k]]
    np.testing.assert_allclose([r.score for r in results], [s for _, s in expected[:k]], atol=2e-5)
    rel = [r.relevance for r in results]
    assert all(0 <= x <= 1 for x in rel) and rel == sorted(rel, reverse=True)


def test_text_search_filters_and_segments_match_the_oracle(store: Path) -> None:
    with Searcher.open(store) as searcher:
        oracle = Oracle(searcher)
        for text in ("low hum", "a bright high tone", "odd"):
            q = oracle.text(text)
            resp = searcher.search(text, k=5)
            check(resp.results, oracle.rank(q), 5)
            assert resp.no_good_match == (resp.results[0].relevance < 0.5)
            for r in resp.results:  # best window: the argmax over the track's own windows
                j = next(i for i, rec in enumerate(oracle.recs) if rec.id == r.id)
                best = int(np.argmax(oracle.windows[j] @ q))
                assert r.segment_start == pytest.approx(oracle.starts[j][best])
                assert r.segment_score == pytest.approx(float(oracle.windows[j][best] @ q), abs=2e-5)
        q = oracle.text("tone")
        cases = [
            (["artist=bob"], lambda r: r.artist == "Bob"),
            (["year>=1995", "year<=1999"], lambda r: 1995 <= r.year <= 1999),
            (["tag=HIGH", "tag!=odd"], lambda r: "high" in r.tags and "odd" not in r.tags),
            (["folder=a"], lambda r: r.folder == "a"),
            (["duration>3"], lambda r: r.duration > 3),
        ]
        for flt, keep in cases:
            expected = oracle.rank(q, keep=keep)
            results = searcher.search("tone", k=12, filters=flt).results
            assert len(results) == len(expected) > 0  # filtered inside the index: every match comes back
            check(results, expected, 12)
        assert searcher.search("tone", filters=["artist=nobody"]).results == []


def test_negative_terms_follow_the_documented_rule(store: Path) -> None:
    with Searcher.open(store) as searcher:
        oracle = Oracle(searcher)
        cal = searcher.calibration()
        np.testing.assert_allclose(cal.mean_vector, oracle.tracks.mean(0), atol=1e-5)
        q, neg = oracle.text("tone"), oracle.text("odd")
        penalised = oracle.tracks @ q - np.maximum(0, oracle.tracks @ neg - float(neg @ cal.mean_vector))
        resp = searcher.search("tone, no odd", k=6)
        assert resp.query is not None and resp.query.negatives == ("odd",)
        check(resp.results, oracle.rank(q, scores=penalised), 6)
        plain = searcher.search("tone", k=12).results
        # tracks closer to "odd" than the average track lose rank; the others keep their raw score
        for r in resp.results:
            raw = next(p.score for p in plain if p.id == r.id)
            j = next(i for i, rec in enumerate(oracle.recs) if rec.id == r.id)
            # float32 scores against the rule recomputed here: within the determinism promise, not bit for bit
            want = raw - max(0.0, float(oracle.tracks[j] @ neg - neg @ cal.mean_vector))
            assert abs(r.score - want) <= PROMISED_ATOL
        weightless = searcher.search("tone, no odd", k=6, negative_weight=0.0).results
        check(weightless, oracle.rank(q), 6)


def test_query_by_example_and_combined(store: Path, tmp_path: Path) -> None:
    with Searcher.open(store) as searcher:
        oracle = Oracle(searcher)
        rec = oracle.recs[3]
        a = oracle.tracks[3]
        by_id = searcher.search(like=rec.id, k=4)
        check(by_id.results, oracle.rank(a, keep=lambda r: r.id != rec.id), 4)  # the example itself left out
        assert by_id.like == f"track:{rec.id}"
        by_track_id = searcher.search(like=rec.track_id, k=4).results
        assert [r.id for r in by_track_id] == [r.id for r in by_id.results]
        by_file = searcher.search(like=rec.path, k=1, allow_files=True)  # a file embedded on the fly
        # the file is also indexed under another id, so it finds itself
        assert by_file.results[0].score == pytest.approx(1.0, abs=1e-5)
        outside = tmp_path / "query.wav"
        sf.write(outside, (0.3 * np.sin(2 * np.pi * 250 * np.arange(SR * 2) / SR)).astype(np.float32), SR)
        qa = searcher.embedder.embed_file(outside, searcher.store.settings.plan)[0]
        check(searcher.search(like=str(outside), k=5).results, oracle.rank(qa), 5)
        t = oracle.text("bright")
        for w in (0.5, 0.8):
            q = l2_normalize((w * t + (1 - w) * a)[None, :])[0]
            both = searcher.search("bright", like=rec.id, k=5, text_weight=w).results
            check(both, oracle.rank(q, keep=lambda r: r.id != rec.id), 5)
        with pytest.raises(MusicSearchError, match="not an indexed track id"):
            searcher.search(like=str(outside), allow_files=False)
        assert [r.id for r in searcher.similar(rec.track_id, 4).results] == [r.id for r in by_id.results]


def test_bad_requests_are_clear_errors(store: Path, model_file: Path, tmp_path: Path) -> None:
    with Searcher.open(store) as searcher:
        for kwargs, match in [
            ({}, "give a text query"),
            ({"query": ""}, "empty"),
            ({"query": "y" * 5000}, "limit"),
            ({"query": "no vocals"}, "only what to leave out"),
            ({"query": "x", "k": 0}, "k must be"),
            ({"query": "x", "k": 10**6}, "k must be"),
            ({"query": "x", "k": "3"}, "k must be"),
            ({"query": "x", "filters": ["bpm>100"]}, "unknown key"),
            ({"like": "no-such-track"}, "not an indexed track id or an audio file"),
            ({"like": 999}, "no track"),
            ({"query": "x", "like": 0, "text_weight": 2}, "text_weight"),
        ]:
            with pytest.raises(MusicSearchError, match=match):
                searcher.search(**kwargs)
    torch.manual_seed(5)
    other = build_model(model_config("debug", text_encoder="tiny-bert"), pretrained_text=False)
    save_model(other, tmp_path / "other.safetensors")
    with pytest.raises(MusicSearchError, match="re-index"):
        search(store, "x", model=tmp_path / "other.safetensors")
    with pytest.raises(MusicSearchError, match="not a musicsearch store"):
        search(tmp_path, "x")
    assert len(search(store, "x", k=3, model=model_file)) == 3  # the same model by path is accepted
    with Searcher.open(store) as searcher:  # an open searcher checks a model given to search() the same way
        with pytest.raises(MusicSearchError, match="re-index"):
            search(searcher, "x", model=tmp_path / "other.safetensors")
        assert len(search(searcher, "x", k=3, model=model_file)) == 3


def test_calibration_and_map_are_cached_per_store_version(store: Path, model_file: Path) -> None:
    with Searcher.open(store) as searcher:
        cal = searcher.calibration()
        saved = json.loads((store / "calibration.json").read_text())
        assert saved["token"] == searcher.store.version_token() == cal.token
        assert cal.n_tracks == 12 and cal.n_texts >= 48
        m = searcher.collection_map()
        assert m["count"] == 12 and {p["id"] for p in m["points"]} == {r.id for r in searcher.store.db.iter_tracks()}
        assert all(0 <= p["x"] <= 1 and 0 <= p["y"] <= 1 for p in m["points"])
        assert len(searcher.collection_map(limit=5)["points"]) == 5
    emb = load_embedder(model_file)
    assert emb.embed_texts(["x"]).shape == (1, emb.dim)


def test_an_open_searcher_sees_a_later_indexing_run(model_file: Path, tmp_path: Path) -> None:
    music = tmp_path / "music"
    music.mkdir()
    t = np.arange(2 * SR) / SR
    for i in range(3):
        sf.write(music / f"t{i}.wav", (0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t)).astype(np.float32), SR)
    index_collection(music, tmp_path / "store", model=model_file, workers=0)
    with Searcher.open(tmp_path / "store") as searcher:  # a running server
        assert len(searcher.search("tone", k=10).results) == 3
        token = searcher.calibration().token
        sf.write(music / "t3.wav", (0.3 * np.sin(2 * np.pi * 999 * t)).astype(np.float32), SR)
        index_collection(music, tmp_path / "store", workers=0)
        results = searcher.search("tone", k=10).results
        assert {r.track_id for r in results} == {"t0.wav", "t1.wav", "t2.wav", "t3.wav"}
        assert searcher.calibration().token != token  # recalibrated for the new version
        assert searcher.collection_map()["count"] == 4


def test_same_results_without_the_vector_file(store: Path, tmp_path: Path) -> None:
    """vectors.f32 only makes lookups by id cheap: without it (fallback scans) the results are the same."""
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    (copy / "vectors.f32").unlink()
    with Searcher.open(store) as a, Searcher.open(copy) as b:
        for kwargs in ({"query": "tone, no odd"}, {"like": "t4"}, {"query": "hum", "like": "t1"}):
            ra, rb = a.search(k=6, **kwargs).results, b.search(k=6, **kwargs).results  # type: ignore[arg-type]
            assert [r.id for r in ra] == [r.id for r in rb]
            np.testing.assert_allclose([r.score for r in ra], [r.score for r in rb], atol=1e-5)
            assert [r.segment_start for r in ra] == [r.segment_start for r in rb]


# ------------------------------------------------------------------------------------ hostile input, ~ paths


@pytest.fixture(scope="module")
def open_searcher(store: Path) -> Any:
    with Searcher.open(store) as searcher:
        yield searcher


# (keyword arguments of search(), a fragment of the MusicSearchError message): every one a clear error, never a
# TypeError, OverflowError or UnicodeEncodeError from deeper down
HOSTILE_API_INPUTS: list[tuple[dict[str, Any], str]] = [
    ({"query": "x", "like": 2**63}, "no track with this id"),
    ({"query": "x", "like": -(2**63) - 1}, "no track with this id"),
    ({"like": -1}, "no track with this id"),
    ({"query": "x", "like": 1.5}, "like must be a track id"),
    ({"query": "x", "like": True}, "like must be a track id"),
    ({"query": "x", "like": "\udcff"}, "not an indexed track id or an audio file"),
    ({"query": "x", "like": "a\x00b"}, "NUL byte"),
    ({"query": "x", "like": "y" * 100_000}, "characters"),
    ({"query": "x", "filters": {"year_min": "abc"}}, "'year_min' must be a whole number"),
    ({"query": "x", "filters": {"year_min": 1990.5}}, "'year_min' must be a whole number"),
    ({"query": "x", "filters": {"year_max": True}}, "'year_max' must be a whole number"),
    ({"query": "x", "filters": {"year_min": 2**70}}, "a year between"),
    ({"query": "x", "filters": ["year>=99999999999999999999"]}, "a year between"),
    ({"query": "x", "filters": {"artist": 5}}, "'artist' must be text"),
    ({"query": "x", "filters": {"album": ["a"]}}, "'album' must be text"),
    ({"query": "x", "filters": {"folder": ""}}, "non-empty text"),
    ({"query": "x", "filters": {"duration_max": "300"}}, "'duration_max' must be a number of seconds"),
    ({"query": "x", "filters": {"duration_min": float("nan")}}, "finite"),
    ({"query": "x", "filters": {"tags": 5}}, "'tags' must be a list of tags"),
    ({"query": "x", "filters": {"tags": {"jazz": 1}}}, "'tags' must be a list of tags"),
    ({"query": "x", "filters": {"without_tags": ["jazz", 5]}}, "'without_tags' must be a list of tags"),
    ({"query": "x", "filters": {"tags": ["jazz", ""]}}, "non-empty tags"),
    ({"query": "x", "filters": {"tags": ["\udcff"]}}, "UTF-8"),
    ({"query": "x", "filters": {"bpm": 120}}, "unknown filter field"),
    ({"query": "x", "filters": {5: "x"}}, "unknown filter field"),
    ({"query": "x", "filters": 42}, "filters must be a list of conditions"),
    ({"query": "x", "filters": 4.2}, "filters must be a list of conditions"),
    ({"query": "x", "filters": b"year>=1990"}, "filters must be a list of conditions"),
    ({"query": "x", "filters": [b"year>=1990"]}, "filters must be strings"),
    ({"query": "x", "filters": ["year>=\udcff"]}, "UTF-8"),
    ({"query": "x", "filters": MetadataFilter(year_min="abc")}, "'year_min' must be a whole number"),  # type: ignore[arg-type]
    ({"query": ""}, "empty"),
    ({"query": " \t\n "}, "empty"),
    ({"query": "x" * 10_000_000}, "limit"),
    ({"query": "\udcff"}, "UTF-8"),
    ({"query": "caf\udce9 music"}, "UTF-8"),
    ({"query": "jazz\x1c"}, "control characters"),
    ({"query": "jazz\x00"}, "control characters"),
    ({"query": 5}, "must be a string"),
    ({"query": b"jazz"}, "must be a string"),
    ({"query": "x", "k": 0}, "k must be"),
    ({"query": "x", "k": -1}, "k must be"),
    ({"query": "x", "k": -(2**63)}, "k must be"),
    ({"query": "x", "k": 2**63}, "k must be"),
    ({"query": "x", "k": 1001}, "k must be"),
    ({"query": "x", "k": 2.0}, "k must be"),
    ({"query": "x", "k": True}, "k must be"),
    ({"query": "x", "k": None}, "k must be"),
    ({"query": "x", "like": 0, "text_weight": float("nan")}, "text_weight"),
    ({"query": "x", "text_weight": "0.5"}, "text_weight"),
    ({"query": "x", "text_weight": True}, "text_weight"),
    ({"query": "x", "negative_weight": float("inf")}, "negative_weight"),
    ({"query": "x", "negative_weight": -1}, "negative_weight"),
    ({"query": "x", "model": 5}, "model must be"),
]


@pytest.mark.parametrize(("kwargs", "match"), HOSTILE_API_INPUTS, ids=[str(i) for i in range(len(HOSTILE_API_INPUTS))])
def test_hostile_input_is_a_clear_error(open_searcher: Searcher, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(MusicSearchError, match=match) as info:
        search(open_searcher, **kwargs)
    assert len(str(info.value)) < 400  # one readable line, however big the input


def test_hostile_ids_and_store_paths_are_clear_errors(open_searcher: Searcher, tmp_path: Path) -> None:
    for track in (2**63, -1, "\udcff", "z" * 100_000):
        with pytest.raises(MusicSearchError, match="no track"):
            open_searcher.track(track)
    for store_arg, match in [
        (5, "must be a directory path"),
        (b"store", "must be a directory path"),
        ("", "not a directory path"),
        ("a\x00b", "not a directory path"),
        (tmp_path / "\udcff", "not a musicsearch store"),
    ]:
        with pytest.raises(MusicSearchError, match=match):
            search(store_arg, "x")  # type: ignore[arg-type]


def test_one_string_where_a_list_of_tags_is_expected_is_one_tag(open_searcher: Searcher) -> None:
    assert parse_filters({"tags": "jazz"}) == MetadataFilter(tags=("jazz",))  # not j, a, z, z
    assert parse_filters({"without_tags": "vocals", "tags": None}) == MetadataFilter(without_tags=("vocals",))
    assert parse_filters({"year_min": np.int64(1990), "duration_max": 3}) == MetadataFilter(
        year_min=1990, duration_max=3.0
    )
    as_string = search(open_searcher, "tone", k=12, filters={"tags": "even"})
    as_list = search(open_searcher, "tone", k=12, filters={"tags": ["even"]})
    assert [r.id for r in as_string] == [r.id for r in as_list]
    assert len(as_string) == 6 and all("even" in r.tags for r in as_string)  # the 6 even tracks of 12
    assert search(open_searcher, "tone", k=12, filters={"without_tags": "even"}) == search(
        open_searcher, "tone", k=12, filters=["tag!=even"]
    )


def test_store_and_example_paths_expand_home(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's ``search("~/music.store", ...)``: ``~`` is the user's home in every path the API takes."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copytree(store, home / "music.store")
    t = np.arange(2 * SR) / SR
    sf.write(home / "song.wav", (0.3 * np.sin(2 * np.pi * 250 * t)).astype(np.float32), SR)
    monkeypatch.setenv("HOME", str(home))
    expected = search(store, "tone", k=3)
    got = search("~/music.store", "tone", k=3)
    assert [r.id for r in got] == [r.id for r in expected] and len(got) == 3
    with Searcher.open(Path("~/music.store")) as searcher:
        assert searcher.store.path == home / "music.store"
        by_file = searcher.search(like="~/song.wav", k=2)
        assert by_file.like == "file:~/song.wav" and len(by_file.results) == 2


# ------------------------------------------------------------------------------------------------ determinism

#: docs/determinism.md: outside a repeat in one process, vectors and scores agree within this (absolute).
PROMISED_ATOL = 1e-6
ASSETS = Path(__file__).resolve().parents[2] / "src" / "musicsearch" / "assets" / "librosa_music"


def test_determinism_promise_of_the_default_model() -> None:
    """Bit-identical for a repeat in one process; within 1e-6 across batch sizes and thread counts (the
    cross-process and cross-CPU part of the promise rests on the same float32 arithmetic)."""
    emb = load_embedder("default", batch_size=16)
    windows = decode_track(ASSETS / "kevin-macleod-vibe-ace.ogg", emb.plan()).windows[:5]  # (5, W)
    texts = ["a calm piano piece for a rainy evening", "jazz", "fast energetic rock with electric guitars"]

    def embed(batch_size: int) -> np.ndarray:
        emb.batch_size = batch_size
        return l2_normalize(emb.embed_windows(windows))

    first = embed(16)
    assert np.array_equal(embed(16), first)  # a repeat in one process: bit for bit
    for batch_size in (1, 2, 3):
        np.testing.assert_allclose(embed(batch_size), first, rtol=0, atol=PROMISED_ATOL)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        np.testing.assert_allclose(embed(16), first, rtol=0, atol=PROMISED_ATOL)
    finally:
        torch.set_num_threads(threads)
    together = emb.embed_texts(texts)
    assert np.array_equal(emb.embed_texts(texts), together)
    alone = np.stack([emb.embed_texts([t])[0] for t in texts])  # no padding to the longest text
    np.testing.assert_allclose(alone, together, rtol=0, atol=PROMISED_ATOL)


def test_determinism_promise_of_search(store: Path, tmp_path: Path) -> None:
    """The same query on the same searcher: identical results; on the same collection indexed with another batch
    size: every track's score within 1e-6."""
    rebuilt = tmp_path / "store-batch-3"
    with Searcher.open(store) as searcher:
        model_source = searcher.store.settings.model_source
        first = searcher.search("a bright high tone, no odd", k=12)
        again = searcher.search("a bright high tone, no odd", k=12)
        assert [(r.id, r.score, r.relevance, r.segment_start) for r in again.results] == [
            (r.id, r.score, r.relevance, r.segment_start) for r in first.results
        ]
    index_collection(store.parent / "m.jsonl", rebuilt, model=model_source, workers=0, batch_size=3)
    with Searcher.open(rebuilt) as other:
        scores = {r.track_id: r.score for r in other.search("a bright high tone, no odd", k=12).results}
    assert len(scores) == len(first.results) == 12
    for r in first.results:
        assert abs(scores[r.track_id] - r.score) <= PROMISED_ATOL, r.track_id
