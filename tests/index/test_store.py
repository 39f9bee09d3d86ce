"""The store directory's parts (:mod:`musicsearch.index.store`) on their own (whole stores are exercised by the
indexer and search tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from musicsearch.index.backends.base import l2_normalize
from musicsearch.index.store import VectorFile


def test_vector_file_rows(tmp_path: Path) -> None:
    vf = VectorFile(tmp_path / "v.f32", 4)
    assert not vf.read(np.array([0, 3]))[1].any()  # no file yet
    rows = l2_normalize(np.random.default_rng(0).standard_normal((3, 4)))
    vf.write(np.array([5, 1, 9]), rows)
    got, ok = vf.read(np.array([1, 5, 9, 0, 7, 100, -1]))
    assert ok.tolist() == [True, True, True, False, False, False, False]
    np.testing.assert_array_equal(got[:3], rows[[1, 0, 2]])
    vf.write(np.array([100]), rows[:1])  # grows; an open reader sees it
    assert vf.read(np.array([100]))[1].all()
