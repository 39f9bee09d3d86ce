"""KVT adapter (assumed layout: annotation.csv with tag columns + audio/) on a tiny fake copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from musicsearch.data.sources.kvt import KVT_BENCHMARK_TAGS, load_kvt
from musicsearch.data.sources.labels import natural_label_text
from musicsearch.data.sources.registry import load_dataset
from musicsearch.errors import ManifestError

TABLE = """track_id,split,male,female,breathy,husky/throaty
k001,train,1,0,0.6,0
k002,valid,0,1,0.2,1
k003,test,0,1,0,0
k004,validation,1,0,1,1
"""


def _make_kvt(root: Path, table: str = TABLE) -> None:
    (root / "annotation.csv").write_text(table)
    (root / "audio").mkdir()
    for name in ("k001.wav", "k002.mp3", "k003.npy", "k004.flac"):
        (root / "audio" / name).write_bytes(b"")


def test_reads_tags_splits_and_audio(tmp_path: Path) -> None:
    _make_kvt(tmp_path)
    ds = load_dataset("kvt", tmp_path)
    assert ds.metric == "f1" and ds.task == "multilabel"
    assert ds.label_names == ("male", "female", "breathy", "husky/throaty")
    assert ds.label_texts == ("male", "female", "breathy", "husky or throaty")
    np.testing.assert_array_equal(ds.labels, [[1, 0, 1, 0], [0, 1, 0, 1], [0, 1, 0, 0], [1, 0, 1, 1]])
    assert [t.split for t in ds.tracks] == ["train", "valid", "test", "valid"]
    assert [Path(t.audio_path).name for t in ds.tracks] == ["k001.wav", "k002.mp3", "k003.npy", "k004.flac"]
    sub = load_kvt(tmp_path, tags=["female", "male"])
    assert sub.labels.tolist() == [[0, 1], [1, 0], [1, 0], [0, 1]]
    assert len(KVT_BENCHMARK_TAGS) == 42 and len(set(KVT_BENCHMARK_TAGS)) == 42
    texts = dict(zip(KVT_BENCHMARK_TAGS, map(natural_label_text, KVT_BENCHMARK_TAGS)))
    assert texts["soulful/r&b"] == "soulful or r&b" and texts["robotic/artificial"] == "robotic or artificial"
    assert texts["low-range"] == "low-range" and texts["speech-like"] == "speech-like"


def test_without_split_column_uses_a_seeded_split(tmp_path: Path) -> None:
    table = "\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != 1) for line in TABLE.splitlines())
    _make_kvt(tmp_path, table + "\n")
    a = load_kvt(tmp_path, split_seed=3)
    b = load_kvt(tmp_path, split_seed=3)
    assert [t.split for t in a.tracks] == [t.split for t in b.tracks]
    assert "seeded" in str(a.info["split"])


def test_missing_and_malformed(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"annotation\.csv"):
        load_kvt(tmp_path)
    _make_kvt(tmp_path)
    with pytest.raises(ManifestError, match="falsetto"):
        load_kvt(tmp_path, tags=KVT_BENCHMARK_TAGS)
    (tmp_path / "annotation.csv").write_text(TABLE.replace("k003,test,0,1", "k003,test,x,1"))
    with pytest.raises(ManifestError, match="not a number"):
        load_kvt(tmp_path)
