"""Milvus backend options for a cluster (build parameters, shards, replicas, search consistency): validated, used,
and kept by a save so a reopened store (a serve replica) queries the same way. Runs on Milvus Lite; the server
versions of these paths are in test_milvus_server.py (slow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import gaussian_mixture_vectors
from musicsearch.errors import ConfigError
from musicsearch.index.backends.base import create_backend, open_backend

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

DIM = 16


def test_cluster_options_are_validated(tmp_path: Path) -> None:
    uri = str(tmp_path / "m.db")
    with pytest.raises(ConfigError, match="num_shards"):
        create_backend("milvus", DIM, uri=uri, num_shards=0)
    with pytest.raises(ConfigError, match="replica_number"):
        create_backend("milvus", DIM, uri=uri, replica_number=0)
    with pytest.raises(ConfigError, match="IVF_PQ"):  # the message lists the known types, the cluster ones included
        create_backend("milvus", DIM, uri=uri, index_type="NOPE")


def test_options_survive_save_and_reopen_and_search_stays_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    vectors, centers = gaussian_mixture_vectors(300, DIM, rng=rng, n_clusters=8)
    queries, _ = gaussian_mixture_vectors(5, DIM, rng=rng, centers=centers)
    backend = create_backend(
        "milvus",
        DIM,
        uri=str(tmp_path / "store" / "m.db"),
        index_type="FLAT",
        search_consistency="Strong",
        build_params={},
    )
    backend.add(np.arange(300), vectors)
    backend.save(tmp_path / "store")
    backend.close()
    reopened = open_backend(tmp_path / "store")
    try:
        assert (reopened.search_consistency, reopened.replica_number, reopened.num_shards) == ("Strong", 1, None)  # type: ignore[attr-defined]
        oracle = create_backend("numpy", DIM)
        oracle.add(np.arange(300), vectors)
        np.testing.assert_array_equal(reopened.search(queries, 5)[1], oracle.search(queries, 5)[1])
    finally:
        reopened.close()


def test_hnsw_build_params_override_the_defaults(tmp_path: Path) -> None:
    backend = create_backend("milvus", DIM, uri=str(tmp_path / "store" / "m.db"), build_params={"M": 8})
    try:
        assert backend.build_params == {"M": 8, "efConstruction": 200}  # type: ignore[attr-defined]
        backend.save(tmp_path / "store")
        manifest = (tmp_path / "store" / "backend.json").read_text()
        assert '"M": 8' in manifest and '"efConstruction": 200' in manifest  # a reopened store builds alike
    finally:
        backend.close()
