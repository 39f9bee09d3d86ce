"""The joint UMAP map (the paper's Fig. 3): a PNG is written, the projection is seeded, small N works."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from musicsearch.errors import MusicSearchError
from musicsearch.eval.figures import joint_projection, umap_figure


def _points(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_umap_png_is_written_and_deterministic(tmp_path: Path) -> None:
    audio, tags, captions = _points(30), _points(5, seed=1), _points(8, seed=2)
    path = umap_figure(
        tmp_path / "fig" / "umap.png", audio=audio, tags=tags, tag_names=[f"tag{i}" for i in range(5)],
        captions=captions, title="test map",
    )  # fmt: skip
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    joint = np.concatenate([audio, tags, captions])
    a = joint_projection(joint, random_state=3)
    b = joint_projection(joint, random_state=3)
    assert a.shape == (43, 2) and np.array_equal(a, b)
    small = joint_projection(_points(4), n_neighbors=15)  # n_neighbors capped, random init
    assert small.shape == (4, 2) and np.isfinite(small).all()


def test_tiny_and_bad_inputs(tmp_path: Path) -> None:
    two = joint_projection(_points(2))  # principal components, no UMAP
    assert two.shape == (2, 2) and np.isfinite(two).all() and two[0, 0] == pytest.approx(-two[1, 0])
    assert np.array_equal(joint_projection(_points(1)), np.zeros((1, 2), np.float32))
    path = umap_figure(tmp_path / "two.png", audio=_points(1), tags=_points(1, seed=1), tag_names=["jazz"])
    assert path.is_file()
    with pytest.raises(MusicSearchError):
        umap_figure(tmp_path / "x.png", audio=_points(3, d=8), tags=_points(2), tag_names=["a", "b"])
    with pytest.raises(MusicSearchError):
        umap_figure(tmp_path / "x.png", audio=_points(3), tags=_points(2), tag_names=["a"])
    with pytest.raises(MusicSearchError):
        umap_figure(tmp_path / "x.png", audio=None, tags=None, tag_names=[])
