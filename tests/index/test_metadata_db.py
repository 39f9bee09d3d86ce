"""The SQLite metadata database: tracks, windows, tags, filters, the model check, transactions and shards."""

from __future__ import annotations

import multiprocessing as mp
import os
import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from musicsearch.errors import MusicSearchError
from musicsearch.index.metadata import (
    MetadataDB,
    MetadataFilter,
    StoreInfo,
    TrackInfo,
    TrackRecord,
    merge_metadata,
)

INFO = StoreInfo("paper", "ab" * 32, "mel-v1")

ARTISTS = ["Miles Davis", "Nina Simone", "Björk", None]
TAGS = ["jazz", "piano", "vocals", "Drums", "ambient"]


def fake_track(i: int) -> TrackInfo:
    folder = ["/music/jazz", "/music/jazz/live", "/music/jazzfunk", "rel/dir"][i % 4]
    return TrackInfo(
        track_id=f"t{i:03d}",
        path=f"{folder}/song {i}.flac",
        content_hash=f"h{i % 17}",
        duration=None if i % 9 == 0 else 30.0 + 7 * i,
        title=f"Song {i}",
        artist=ARTISTS[i % 4],
        album=["Kind of Blue", "Pastel Blues", None][i % 3],
        year=None if i % 5 == 0 else 1950 + i,
        tags=tuple(TAGS[j] for j in range(5) if (i >> j) & 1),
    )


@pytest.fixture
def db(tmp_path: Path) -> MetadataDB:
    db = MetadataDB(tmp_path / "meta.sqlite")
    db.set_info(INFO)
    for i in range(40):
        db.add_track(fake_track(i), window_starts=[0.0, 9.91, 19.82][: 1 + i % 3], indexed_at=1000.0 + i)
    return db


def python_filter(tracks: list[TrackRecord], f: MetadataFilter) -> set[int]:
    """The obvious oracle for resolve_filter, one condition at a time."""

    def ok(t: TrackRecord) -> bool:
        tags = {x.casefold() for x in t.tags}
        return (
            (f.artist is None or (t.artist is not None and t.artist.casefold() == f.artist.casefold()))
            and (f.album is None or (t.album is not None and t.album.casefold() == f.album.casefold()))
            and (f.year_min is None or (t.year is not None and t.year >= f.year_min))
            and (f.year_max is None or (t.year is not None and t.year <= f.year_max))
            and (f.duration_min is None or (t.duration is not None and t.duration >= f.duration_min))
            and (f.duration_max is None or (t.duration is not None and t.duration <= f.duration_max))
            and (f.folder is None or t.folder == f.folder or (t.folder or "").startswith(f.folder + "/"))
            and all(x.casefold() in tags for x in f.tags)
            and not any(x.casefold() in tags for x in f.without_tags)
        )

    return {t.id for t in tracks if ok(t)}


def test_schema_wal_and_records(db: MetadataDB) -> None:
    assert db._con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert len(db) == 40
    rec = db.find_track("t005")
    assert rec is not None
    assert (rec.path, rec.folder, rec.artist, rec.year) == (
        "/music/jazz/live/song 5.flac",
        "/music/jazz/live",
        "Nina Simone",
        None,
    )
    assert rec.tags == ("jazz", "vocals") and rec.indexed_at == 1005.0
    assert (rec.model_name, rec.weights_checksum, rec.preprocessing_version) == tuple(vars(INFO).values())
    wins = db.windows(rec.id)
    assert [w.window_index for w in wins] == [0, 1, 2] and [w.start for w in wins] == [0.0, 9.91, 19.82]
    np.testing.assert_array_equal(db.track_vector_ids(rec.id), [rec.vector_id] + [w.vector_id for w in wins])
    assert db.get_tracks([rec.id, 10_000]) == [rec]
    assert {t.track_id for t in db.find_by_content_hash("h5")} == {"t005", "t022", "t039"}
    assert [t.track_id for t in db.find_by_path("rel/dir/song 3.flac")] == ["t003"]
    assert [t.id for t in db.iter_tracks(batch_size=7)] == sorted(t.id for t in db.iter_tracks())


def test_vector_ids_are_unique_and_resolve_back(db: MetadataDB) -> None:
    all_ids = db.vector_ids()
    assert all_ids.size == 40 + sum(1 + i % 3 for i in range(40)) == np.unique(all_ids).size
    assert db.vector_ids(level="track").size == 40
    refs = db.lookup_vectors([-1, int(all_ids[3]), 10**9, int(all_ids[0])])
    assert refs[0] is None and refs[2] is None
    for ref in (refs[1], refs[3]):
        assert ref is not None
        if ref.window_index is None:
            assert ref.track.vector_id == ref.vector_id and ref.start == 0.0
        else:
            assert db.windows(ref.track.id)[ref.window_index].vector_id == ref.vector_id


@pytest.mark.parametrize(
    "flt",
    [
        MetadataFilter(artist="miles davis"),
        MetadataFilter(artist="BJÖRK", tags=("drums",)),
        MetadataFilter(album="PASTEL BLUES", year_min=1960),
        MetadataFilter(year_min=1960, year_max=1975),
        MetadataFilter(duration_min=100.0, duration_max=200.0),
        MetadataFilter(folder="/music/jazz"),
        MetadataFilter(folder="/music/jazz/"),
        MetadataFilter(folder="rel"),
        MetadataFilter(tags=("jazz", "PIANO")),
        MetadataFilter(tags=("drums",), without_tags=("vocals",)),
        MetadataFilter(artist="nobody"),
    ],
)
def test_filters_match_a_python_oracle(db: MetadataDB, flt: MetadataFilter) -> None:
    tracks = list(db.iter_tracks())
    want = python_filter(tracks, replace(flt, folder=None if flt.folder is None else flt.folder.rstrip("/")))
    assert set(db.filter_tracks(flt)) == want
    by_id = {t.id: t for t in tracks}
    want_track_vids = sorted(by_id[t].vector_id for t in want)  # type: ignore[type-var]
    np.testing.assert_array_equal(db.resolve_filter(flt, level="track"), want_track_vids)
    want_window_vids = sorted(w.vector_id for t in want for w in db.windows(t))
    np.testing.assert_array_equal(db.resolve_filter(flt, level="window"), want_window_vids)
    assert db.resolve_filter(flt).size == len(want_track_vids) + len(want_window_vids)  # type: ignore[union-attr]


def random_filter(rng: np.random.Generator) -> MetadataFilter:
    """A seeded random filter over the fixture's fields (conditions combined, some matching nothing)."""
    fields: dict[str, object] = {}
    if rng.random() < 0.4:
        fields["year_min"] = int(rng.integers(1945, 1995))
    if rng.random() < 0.4:
        fields["year_max"] = int(rng.integers(1945, 1995))
    if rng.random() < 0.3:
        fields["duration_min"] = float(rng.uniform(20, 320))
    if rng.random() < 0.3:
        fields["duration_max"] = float(rng.uniform(20, 320))
    if rng.random() < 0.3:
        fields["artist"] = str(rng.choice(["miles davis", "BJÖRK", "Nina Simone", "nobody"]))
    if rng.random() < 0.2:
        fields["album"] = str(rng.choice(["kind of blue", "PASTEL BLUES", "none"]))
    if rng.random() < 0.3:
        fields["folder"] = str(rng.choice(["/music/jazz", "/music", "rel", "/music/jazzfunk"]))
    if rng.random() < 0.4:
        fields["tags"] = tuple(str(x) for x in rng.choice([*TAGS, "PIANO", "none"], int(rng.integers(1, 3))))
    if rng.random() < 0.3:
        fields["without_tags"] = (str(rng.choice(["jazz", "drums", "none"])),)
    return MetadataFilter(**fields)  # type: ignore[arg-type]


def test_random_filters_match_the_python_oracle(db: MetadataDB) -> None:
    """The one filter implementation (NumPy columns, tag index, SQL for names and folders) against a plain loop."""
    tracks = list(db.iter_tracks())
    by_id = {t.id: t for t in tracks}
    rng = np.random.default_rng(0)
    for _ in range(80):
        flt = random_filter(rng)
        want = python_filter(tracks, flt)
        assert db.filter_tracks(flt) == sorted(want), flt
        got = db.resolve_filter(flt, level="track")
        if flt.is_empty():
            assert got is None
        else:
            np.testing.assert_array_equal(got, sorted(by_id[t].vector_id for t in want))  # type: ignore[type-var]


def test_filters_see_every_commit(db: MetadataDB, tmp_path: Path) -> None:
    """The columns filters read are cached per database version: a reader sees another connection's commits, and
    a writer its own."""
    reader = MetadataDB(db.path, readonly=True)
    try:
        flt = MetadataFilter(year_min=2500, tags=("new",))
        assert reader.filter_tracks(flt) == [] and db.filter_tracks(flt) == []
        rec, _ = db.add_track(replace(fake_track(100), track_id="late", year=2600, tags=("NEW",)))
        assert reader.filter_tracks(flt) == [rec.id] and db.filter_tracks(flt) == [rec.id]
        np.testing.assert_array_equal(reader.resolve_filter(flt, level="track"), [rec.vector_id])
        db.remove_track(rec.id)
        assert reader.filter_tracks(flt) == [] and db.filter_tracks(flt) == []
    finally:
        reader.close()


def test_tag_names_are_distinct_up_to_case(db: MetadataDB) -> None:
    assert db.tag_names() == sorted(TAGS)
    db.add_track(replace(fake_track(101), track_id="more", tags=("JAZZ", "Lo-Fi")))
    # "JAZZ" is the tag "jazz" again: one name per tag, its smallest spelling in code-point order
    assert db.tag_names() == sorted(["JAZZ", "Lo-Fi", *(t for t in TAGS if t != "jazz")])


def test_folder_prefix_is_by_path_component(db: MetadataDB) -> None:
    folders = {t.folder for t in db.get_tracks(db.filter_tracks(MetadataFilter(folder="/music/jazz")))}
    assert folders == {"/music/jazz", "/music/jazz/live"}  # not /music/jazzfunk
    assert db.resolve_filter(MetadataFilter()) is None


def test_model_mismatch_is_refused(db: MetadataDB) -> None:
    db.check_model(INFO)
    other = StoreInfo("small", "cd" * 32, "mel-v1")
    with pytest.raises(
        MusicSearchError, match=r"indexed with model paper \(checksum abab.*re-index or pick --model paper"
    ):
        db.check_model(other)
    with pytest.raises(MusicSearchError, match="re-index or pick --model paper"):
        db.set_info(replace(INFO, weights_checksum="ef" * 32))  # same name, other weights
    with pytest.raises(MusicSearchError, match="re-index"):
        db.check_model(replace(INFO, preprocessing_version="mel-v2"))
    assert db.info() == INFO


def test_new_store_needs_a_model_first(tmp_path: Path) -> None:
    db = MetadataDB(tmp_path / "m.sqlite")
    assert db.info() is None
    db.check_model(INFO)  # an empty store accepts any model
    with pytest.raises(MusicSearchError, match="set_info"):
        db.add_track(fake_track(1))


def test_remove_track_cascades_and_ids_are_never_reused(db: MetadataDB) -> None:
    rec = db.find_track("t002")
    assert rec is not None
    owned = db.track_vector_ids(rec.id)
    np.testing.assert_array_equal(db.remove_track(rec.id), owned)
    assert db.find_track("t002") is None and db.windows(rec.id) == []
    assert db._con.execute("SELECT COUNT(*) FROM tags WHERE track = ?", (rec.id,)).fetchone()[0] == 0
    assert not np.isin(owned, db.vector_ids()).any()
    again, wins = db.add_track(fake_track(2), window_starts=[0.0, 5.0])
    assert again.id != rec.id and not np.isin([again.vector_id] + [w.vector_id for w in wins], owned).any()
    with pytest.raises(MusicSearchError, match="already stored"):
        db.add_track(fake_track(2))


def test_failed_transaction_writes_nothing(db: MetadataDB) -> None:
    before = (len(db), db.vector_ids().tolist())
    with pytest.raises(RuntimeError), db.transaction():
        db.add_track(fake_track(100), window_starts=[0.0])
        with db.transaction():  # nested: a savepoint inside the outer transaction
            db.add_track(fake_track(101))
        raise RuntimeError("crash")
    assert (len(db), db.vector_ids().tolist()) == before
    with db.transaction():
        db.add_track(fake_track(102))
        with pytest.raises(MusicSearchError), db.transaction():
            db.add_track(fake_track(102))  # duplicate: only the inner savepoint rolls back
    assert db.find_track("t102") is not None


def _die_mid_transaction(path: str) -> None:
    db = MetadataDB(path)
    with db.transaction():
        db.add_track(fake_track(200), window_starts=[0.0, 1.0])
        assert db.find_track("t200") is not None
        os._exit(17)  # killed before COMMIT


def test_killed_writer_leaves_the_database_intact(db: MetadataDB) -> None:
    before = len(db)
    proc = mp.get_context("spawn").Process(target=_die_mid_transaction, args=(str(db.path),))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 17
    again = MetadataDB(db.path)
    assert len(again) == before and again.find_track("t200") is None
    assert again._con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_shards_have_disjoint_ids_and_merge(tmp_path: Path) -> None:
    paths = [tmp_path / f"shard{r}.sqlite" for r in range(3)]
    for rank, path in enumerate(paths):
        with MetadataDB(path, shard=(rank, 3)) as shard:
            shard.set_info(INFO)
            for i in range(rank, 30, 3):
                shard.add_track(fake_track(i), window_starts=[0.0, 10.0])
            assert (shard.vector_ids() % 3 == rank).all()
    merged = merge_metadata(paths, tmp_path / "merged.sqlite")
    assert len(merged) == 30 and merged.info() == INFO
    vids = merged.vector_ids()
    np.testing.assert_array_equal(vids, np.arange(90))  # dense and disjoint: 30 tracks x (1 + 2 windows)
    rec, _ = merged.add_track(fake_track(99))
    assert rec.vector_id == 90
    with pytest.raises(MusicSearchError, match="clashes"):
        merge_metadata([paths[0], paths[0]], tmp_path / "bad.sqlite")
    assert not (tmp_path / "bad.sqlite").exists()
    with pytest.raises(MusicSearchError, match="exists"):
        merge_metadata(paths, tmp_path / "merged.sqlite")
    other = tmp_path / "other.sqlite"
    with MetadataDB(other, shard=(1, 2)) as shard:
        shard.set_info(replace(INFO, model_name="small"))
    with pytest.raises(MusicSearchError, match="different models"):
        merge_metadata([paths[0], other], tmp_path / "mixed.sqlite")
    with pytest.raises(MusicSearchError, match="rank"):
        MetadataDB(tmp_path / "x.sqlite", shard=(3, 3))


def test_not_a_database(tmp_path: Path) -> None:
    bad = tmp_path / "junk.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(MusicSearchError, match="not a musicsearch metadata database"):
        MetadataDB(bad)
    assert sqlite3.sqlite_version_info >= (3, 8)
