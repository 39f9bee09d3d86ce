"""The collection map's colouring: clusters of the joint space named by their telling tags, and tag families,
checked against planted structure and plain-loop oracles; and the map cache that carries them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.conftest import write_tone_corpus

from musicsearch.errors import MusicSearchError
from musicsearch.index.backends.base import l2_normalize
from musicsearch.index.indexer import index_collection
from musicsearch.models.checkpoint import save_model
from musicsearch.models.registry import build_model, model_config
from musicsearch.search.api import Searcher
from musicsearch.search.collection_map import (
    CLUSTERS,
    MAP_FILE,
    MAP_VERSION,
    closest_texts,
    cluster_count,
    cluster_groups,
    family_groups,
    map_colourings,
    map_coordinates,
    map_families,
    map_view,
    spherical_kmeans,
    tag_family,
    telling_tags,
)

# ------------------------------------------------------------------------------------------ planted clusters


def planted(
    sizes: Sequence[int], *, dim: int = 16, noise: float = 0.05, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors around ``len(sizes)`` random orthogonal directions: ``(vectors (N, D), truth (N,), directions)``,
    shuffled so no cluster sits in one block of ids."""
    rng = np.random.default_rng(seed)
    directions = np.linalg.qr(rng.standard_normal((dim, len(sizes))))[0].T  # (K, D) orthonormal
    truth = np.repeat(np.arange(len(sizes)), sizes)
    x = directions[truth] + noise * rng.standard_normal((truth.size, dim))
    order = rng.permutation(truth.size)
    x, truth = x[order], truth[order]
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), truth, directions


def same_partition(labels: np.ndarray, truth: np.ndarray) -> bool:
    """Whether two labelings split the points the same way (up to renumbering)."""
    pairs = set(zip(labels.tolist(), truth.tolist(), strict=True))
    return len(pairs) == len(set(labels.tolist())) == len(set(truth.tolist()))


@pytest.mark.parametrize(("n", "k"), [(0, 0), (1, 1), (2, 1), (8, 2), (10, 2), (50, 5), (112, 7), (113, 8), (10**6, 8)])
def test_cluster_count_grows_with_the_collection_and_is_capped(n: int, k: int) -> None:
    assert cluster_count(n) == k


def test_kmeans_finds_planted_clusters_numbered_by_size() -> None:
    x, truth, _ = planted([40, 30, 20, 10])
    labels, centroids = spherical_kmeans(x, 4, rng=np.random.default_rng(0))
    assert same_partition(labels, truth)
    assert np.bincount(labels).tolist() == [40, 30, 20, 10]  # largest first, and truth is numbered the same way
    assert np.array_equal(labels, truth)
    assert centroids.shape == (4, 16)
    # the same seed gives the same clustering; any seed finds these well-separated clusters
    again, _ = spherical_kmeans(x, 4, rng=np.random.default_rng(0))
    assert np.array_equal(again, labels)
    for seed in range(1, 6):
        assert np.array_equal(spherical_kmeans(x, 4, rng=np.random.default_rng(seed))[0], truth)


def test_kmeans_result_is_a_fixed_point_of_lloyd_steps() -> None:
    """Oracle on overlapping data: every vector sits with its most similar centroid, and every centroid is the
    normalised mean of its members (float64 arithmetic on float32 inputs: 1e-9 slack)."""
    x = np.random.default_rng(3).standard_normal((300, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels, centroids = spherical_kmeans(x, 5, rng=np.random.default_rng(1), n_init=2)
    x64 = x.astype(np.float64)
    for i in range(len(x)):
        sims = [float(np.dot(x64[i], c)) for c in centroids]
        assert sims[labels[i]] >= max(sims) - 1e-9
    for g, c in enumerate(centroids):
        mean = x64[labels == g].sum(axis=0)
        np.testing.assert_allclose(c, mean / np.linalg.norm(mean), rtol=0, atol=1e-9)
    sizes = np.bincount(labels)
    assert sizes.min() > 0 and list(sizes) == sorted(sizes, reverse=True)


@pytest.mark.parametrize(
    ("shape", "k", "words"), [((5, 4), 0, "1 <= k <= 5"), ((5, 4), 6, "6 clusters"), ((4,), 1, "(N, D)")]
)
def test_kmeans_rejects_impossible_requests(shape: tuple[int, ...], k: int, words: str) -> None:
    with pytest.raises(MusicSearchError, match=words.replace("(", r"\(").replace(")", r"\)")):
        spherical_kmeans(np.ones(shape, np.float32), k, rng=np.random.default_rng(0))


def test_kmeans_of_identical_vectors_keeps_one_cluster() -> None:
    labels, centroids = spherical_kmeans(np.tile([[0.6, 0.8]], (6, 1)), 3, rng=np.random.default_rng(0))
    assert labels.tolist() == [0] * 6 and centroids.shape == (1, 2)


# --------------------------------------------------------------------------------------------------- naming


def lift_oracle(labels: Sequence[int], track_tags: Sequence[Sequence[str]], max_names: int = 3) -> list[list[str]]:
    """Plain-loop frequency lift: share inside minus share outside, best and those >= half of it, ties by name."""
    groups = sorted(set(labels))
    out = []
    for g in groups:
        inside = [{t.lower() for t in tags} for lab, tags in zip(labels, track_tags) if lab == g]
        outside = [{t.lower() for t in tags} for lab, tags in zip(labels, track_tags) if lab != g]
        vocab = sorted({t for tags in inside for t in tags})
        scores = []
        for t in vocab:
            s = sum(t in tags for tags in inside) / len(inside) - (
                sum(t in tags for tags in outside) / len(outside) if outside else 0.0
            )
            if s > 0:
                scores.append((-s, t))
        scores.sort()
        names = [t for s, t in scores[:max_names] if -s >= -scores[0][0] / 2] if scores else []
        out.append(names)
    return out


def test_telling_tags_match_a_plain_loop_on_random_tags() -> None:
    rng = np.random.default_rng(7)
    vocab = [f"tag{i}" for i in range(9)]
    for _ in range(20):
        labels = rng.integers(0, 3, size=40)
        labels[:3] = [0, 1, 2]
        track_tags = [[t for t in vocab if rng.random() < 0.15 + 0.1 * (int(t[3:]) % 3 == lab)] for lab in labels]
        assert telling_tags(labels, track_tags) == lift_oracle(labels.tolist(), track_tags)


def test_telling_tags_name_each_group_by_its_planted_tag_not_by_common_ones() -> None:
    labels = np.array([0] * 5 + [1] * 5 + [2] * 4)
    track_tags = [["music", "Jazz"] if g == 0 else ["music", "rock", "loud"] if g == 1 else ["music"] for g in labels]
    track_tags[2] = ["music", "jazz", "piano"]  # same tag in another case: counted once per track, first spelling
    names = telling_tags(labels, track_tags)
    assert names == [["Jazz"], ["loud", "rock"], []]  # "music" is everywhere; group 2 has nothing of its own


def test_closest_texts_name_centroids_relative_to_the_collection() -> None:
    _, _, directions = planted([5, 5, 5])
    common = directions.mean(axis=0)
    common /= np.linalg.norm(common)
    texts = ["first", "second", "third", "everything"]
    vecs = np.vstack([directions, common])
    names = closest_texts(directions, directions.mean(axis=0), vecs, texts)
    assert [n[0] for n in names] == ["first", "second", "third"]
    assert all("everything" not in n for n in names)  # as near to every group as to the mean: never telling


# --------------------------------------------------------------------------------------------------- clusters


def test_cluster_groups_give_each_planted_cluster_its_group_and_tag() -> None:
    x, truth, _ = planted([30] * 8, dim=24)
    rng = np.random.default_rng(2)
    planted_tags = [f"style{g}" for g in range(8)]
    track_tags = [[planted_tags[g], "music", *(["rare"] if rng.random() < 0.1 else [])] for g in truth]
    labels, groups = cluster_groups(x, track_tags, seed=0)
    assert cluster_count(len(x)) == 8 and same_partition(labels, truth)
    for g, group in enumerate(groups):
        members = truth[labels == g]
        assert group["count"] == members.size
        assert group["name"] == planted_tags[members[0]] and group["named_by"] == "tags"
    assert sorted(g["name"] for g in groups) == sorted(planted_tags)


def test_untagged_clusters_are_named_by_text_similarity_or_numbered() -> None:
    x, truth, directions = planted([8, 8, 8, 8], dim=12, seed=4)  # 32 tracks: 4 clusters
    # clusters 0 and 1 are tagged; 2 and 3 are recordings nobody tagged
    track_tags = [["calm piano"] if g == 0 else ["loud drums"] if g == 1 else [] for g in truth]
    table = {"calm piano": directions[0], "loud drums": directions[1]}
    calls: list[list[str]] = []

    def embed(texts: Sequence[str]) -> np.ndarray:
        calls.append(list(texts))
        return np.stack([table[t] for t in texts])

    labels, groups = cluster_groups(x, track_tags, seed=0, embed_texts=embed)
    by_truth = {int(truth[labels == g][0]): group for g, group in enumerate(groups)}
    assert by_truth[0]["name"] == "calm piano" and by_truth[0]["named_by"] == "tags"
    assert by_truth[1]["name"] == "loud drums" and by_truth[1]["named_by"] == "tags"
    # the untagged ones lean towards neither planted text more than the collection does: no text name
    assert {by_truth[2]["named_by"], by_truth[3]["named_by"]} == {None}
    assert {by_truth[2]["name"], by_truth[3]["name"]} <= {f"group {i}" for i in range(1, 5)}
    assert calls == [["calm piano", "loud drums"]]  # the store's tags, embedded once

    # an untagged cluster that sits on a tag's text is named by it
    table["ambient"] = directions[2]
    track_tags[int(np.flatnonzero(truth == 0)[0])] = ["calm piano", "ambient"]
    labels, groups = cluster_groups(x, track_tags, seed=0, embed_texts=embed)
    by_truth = {int(truth[labels == g][0]): group for g, group in enumerate(groups)}
    assert by_truth[2]["name"] == "ambient" and by_truth[2]["named_by"] == "text"

    def refuse(texts: Sequence[str]) -> np.ndarray:
        raise MusicSearchError("a classification model embeds its own tags only")

    _, groups = cluster_groups(x, track_tags, seed=0, embed_texts=refuse)  # a refusing model: tags only
    assert all(g["named_by"] in ("tags", None) for g in groups)


def test_clusters_whose_tags_tell_nothing_are_named_by_text_similarity() -> None:
    x, truth, directions = planted([4, 4], dim=8, seed=5)  # 8 tracks: 2 clusters
    # each cluster holds both tags equally often: no tag sets either apart
    track_tags = [["music", "calm piano" if i % 2 else "loud drums"] for i in range(8)]
    common = directions.mean(axis=0)
    table = {"calm piano": directions[0], "loud drums": directions[1], "music": common / np.linalg.norm(common)}
    assert telling_tags(truth, track_tags) == [[], []]
    labels, groups = cluster_groups(
        x, track_tags, seed=0, embed_texts=lambda texts: np.stack([table[t] for t in texts])
    )
    by_truth = {int(truth[labels == g][0]): group for g, group in enumerate(groups)}
    assert by_truth[0]["name"] == "calm piano" and by_truth[1]["name"] == "loud drums"
    assert {g["named_by"] for g in groups} == {"text"}
    _, groups = cluster_groups(x, track_tags, seed=0)  # no text tower: numbered
    assert [g["name"] for g in groups] == ["group 1", "group 2"]


# --------------------------------------------------------------------------------------------------- families


def test_tag_family_from_prefix_or_the_shipped_vocabulary() -> None:
    assert tag_family("genre---rock") == "genre"
    assert tag_family("mood/theme---sad") == "mood/theme"
    assert tag_family("Rock") == "genre" and tag_family("piano") == "instrument" and tag_family("fast") == "tempo"
    assert tag_family("calm") == "mood"
    assert tag_family("my road trip mix") is None and tag_family("---rock") is None and tag_family("genre---") is None


def test_families_are_offered_when_they_cover_the_collection() -> None:
    track_tags = [["rock", "piano", "fast"], ["jazz", "piano", "slow"], ["rock", "drums"], ["jazz", "mine"]]
    # genre: 2 tags on 4/4 tracks; instrument: 2 tags on 3/4; tempo: 2 tags on 2/4 (just 50 %)
    assert map_families(track_tags) == ["genre", "instrument", "tempo"]
    assert map_families(track_tags, min_coverage=0.6) == ["genre", "instrument"]
    assert map_families([["rock"], ["rock"]]) == []  # one genre only: nothing to tell apart
    assert map_families([["clusters---a"], ["clusters---b"]]) == []  # cannot shadow the cluster colouring


def test_family_groups_take_the_most_specific_of_the_top_tags() -> None:
    track_tags = [
        ["rock"],
        ["rock", "metal"],  # metal is rarer than rock: the more specific
        ["rock", "metal"],
        ["rock"],
        ["jazz", "piano"],
        ["jazz"],
        ["blues"],  # outside the top 3 (rock 5, jazz 2, metal 2): other genre
        ["piano"],  # no genre tag
        ["Rock"],
    ]
    labels, groups = family_groups(track_tags, "genre", max_groups=3)
    assert [g["name"] for g in groups] == ["rock", "jazz", "metal", "other genre", "no genre tag"]
    assert [g["count"] for g in groups] == [3, 2, 2, 1, 1]
    assert [g["kind"] for g in groups] == ["tag", "tag", "tag", "other", "none"]
    assert labels.tolist() == [0, 2, 2, 0, 1, 1, 3, 4, 0]
    labels, groups = family_groups([["genre---rock"], ["genre---pop"], ["genre---rock"]], "genre")
    assert groups == [
        {"name": "rock", "tags": ["genre---rock"], "count": 2, "kind": "tag"},
        {"name": "pop", "tags": ["genre---pop"], "count": 1, "kind": "tag"},
    ]
    assert labels.tolist() == [0, 1, 0]


def test_map_colourings_hold_clusters_first_then_families() -> None:
    x, truth, _ = planted([6, 6])
    track_tags = [["rock", "fast"] if g == 0 else ["jazz", "slow"] for g in truth]
    col = map_colourings(x, track_tags, seed=0)
    assert list(col) == [CLUSTERS, "genre", "tempo"]
    for c in col.values():
        assert len(c["labels"]) == 12 and sum(g["count"] for g in c["groups"]) == 12
        assert all(0 <= lab < len(c["groups"]) for lab in c["labels"])
    assert sorted(g["name"] for g in col[CLUSTERS]["groups"]) == ["fast · rock", "jazz · slow"]


# ------------------------------------------------------------------------------------------ map and its cache


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of 8 tagged tones (low/mid/high/..., calm/loud/noisy, sine/square) indexed by a debug model."""
    root = tmp_path_factory.mktemp("mapstore")
    torch.manual_seed(0)
    model = build_model(model_config("debug", text_encoder="tiny-bert"), pretrained_text=False)
    save_model(model, root / "debug.safetensors")
    manifest = write_tone_corpus(root)
    index_collection(manifest, root / "store", model=root / "debug.safetensors", workers=0)
    return root / "store"


def test_map_carries_groups_and_a_named_legend_and_is_cached(store: Path) -> None:
    with Searcher.open(store) as searcher:
        m = searcher.collection_map()
        tags = {t for r in searcher.store.db.iter_tracks() for t in r.tags}
        assert m["colour"] == CLUSTERS and m["count"] == 8 and len(m["points"]) == 8
        assert m["colourings"][0]["name"] == CLUSTERS
        assert len(m["groups"]) == cluster_count(8) == 2
        assert sum(g["count"] for g in m["groups"]) == 8
        assert all(set(g["tags"]) <= tags and g["tags"] for g in m["groups"])  # named by the store's own tags
        assert all(0 <= p["group"] < len(m["groups"]) for p in m["points"])
        counts = np.bincount([p["group"] for p in m["points"]], minlength=len(m["groups"])).tolist()
        assert counts == [g["count"] for g in m["groups"]]
        saved = json.loads((store / MAP_FILE).read_text())
        assert saved["version"] == MAP_VERSION and saved["token"] == searcher.store.version_token()
        assert set(saved["colourings"]) == {c["name"] for c in m["colourings"]}
        assert len(searcher.collection_map(limit=3)["points"]) == 3
        with pytest.raises(MusicSearchError, match="cannot be coloured by 'nope'; use one of: clusters"):
            searcher.collection_map(colour="nope")
    # a second searcher reads the saved file: the same legend and groups
    with Searcher.open(store) as searcher:
        again = searcher.collection_map()
        assert again["groups"] == m["groups"] and again["points"] == m["points"]


def test_a_map_saved_before_colourings_is_rebuilt_with_its_method(store: Path) -> None:
    with Searcher.open(store) as searcher:
        token = searcher.store.version_token()
    old = {"token": token, "method": "pca", "total": 8, "points": [{"id": 0, "x": 0, "y": 0, "title": "t", "tag": "a"}]}
    (store / MAP_FILE).write_text(json.dumps(old))
    with Searcher.open(store) as searcher:
        m = searcher.collection_map()
    assert m["count"] == 8 and m["method"] == "pca" and "groups" in m
    assert json.loads((store / MAP_FILE).read_text())["version"] == MAP_VERSION


def test_map_view_samples_points_and_keeps_the_whole_maps_legend() -> None:
    data = {
        "method": "pca",
        "total": 10,
        "points": [{"id": i, "x": 0.1 * i, "y": 0.0, "title": str(i), "artist": None} for i in range(10)],
        "colourings": {
            CLUSTERS: {"label": "clusters", "groups": [{"name": "a", "tags": ["a"], "count": 10}], "labels": [0] * 10},
            "genre": {
                "label": "genre",
                "groups": [
                    {"name": "rock", "tags": ["rock"], "count": 4},
                    {"name": "jazz", "tags": ["jazz"], "count": 6},
                ],
                "labels": [0, 1] * 5,
            },
        },
    }
    view = map_view(data, 4, "genre")
    assert [p["id"] for p in view["points"]] == [0, 2, 5, 7]
    assert [p["group"] for p in view["points"]] == [0, 0, 1, 1]
    assert view["count"] == 10 and view["groups"] == data["colourings"]["genre"]["groups"]
    assert view["colourings"] == [{"name": "clusters", "label": "clusters"}, {"name": "genre", "label": "genre"}]
    assert map_view(data, 20)["colour"] == CLUSTERS


def test_map_coordinates_pca_matches_numpy_oracle() -> None:
    rng = np.random.default_rng(1)
    x = l2_normalize(rng.standard_normal((50, 8)) * np.array([5, 3, 1, 1, 1, 1, 1, 1]))
    xy = map_coordinates(x)
    assert xy.shape == (50, 2) and xy.min() == 0 and xy.max() == 1
    xc = x - x.mean(0)
    _, eigvec = np.linalg.eigh(np.cov(xc.T))
    top = xc @ eigvec[:, ::-1][:, :2]  # projections on the two largest principal axes
    for axis in range(2):
        corr = np.corrcoef(top[:, axis], xy[:, axis])[0, 1]
        assert abs(corr) > 0.9999
    assert np.array_equal(map_coordinates(x), xy)  # deterministic
    assert map_coordinates(x[:1]).tolist() == [[0.0, 0.0]]
