"""Tag retrieval, sentence retrieval and unseen queries against obvious oracles; the classification path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from musicsearch.data.manifest import Track
from musicsearch.errors import ConfigError, ManifestError, MusicSearchError
from musicsearch.eval import metrics
from musicsearch.eval.retrieval import (
    apply_prompt,
    classifier_logits,
    classifier_thresholds,
    evaluate_sentence_retrieval,
    evaluate_tag_retrieval,
    evaluate_unseen_queries,
    label_matrix,
    query_scores,
    select_caption_pairs,
    unseen_queries_from_corpus,
    vocabulary_index,
    word_overlap_scores,
    words,
)
from musicsearch.models.inference import embed_texts
from musicsearch.models.registry import build_model, model_config

TAGS = ["rock", "jazz", "calm", "loud", "piano", "hip hop"]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(model_config("debug", objective="contrastive", text_encoder="tiny-bert"))


@pytest.fixture(scope="module")
def classifier() -> torch.nn.Module:
    """A classification model whose tag j has classifier row e_j (so track e_i scores tag i only)."""
    torch.manual_seed(0)
    m = build_model(model_config("debug", objective="classification", tags=TAGS))
    with torch.no_grad():
        w = torch.zeros_like(m.head.fc_cls.weight)
        w[torch.arange(len(TAGS)), torch.arange(len(TAGS))] = 1.0
        m.head.fc_cls.weight.copy_(w)
    return m.eval()


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros((a.shape[0], b.shape[0]))
    for i in range(a.shape[0]):
        for j in range(b.shape[0]):
            out[i, j] = a[i] @ b[j] / (np.linalg.norm(a[i]) * np.linalg.norm(b[j]))
    return out


def test_query_scores_are_cosines(model: torch.nn.Module) -> None:
    x = np.random.default_rng(0).normal(size=(5, model.config.joint_dim)).astype(np.float32)
    scores, covered = query_scores(model, x, ["rock", "calm piano"])
    t = embed_texts(model, ["rock", "calm piano"])
    np.testing.assert_allclose(scores, _cos(x, t), rtol=1e-4, atol=1e-5)
    assert covered.all()
    prompted, _ = query_scores(model, x, ["rock"], prompt="a {} song")
    np.testing.assert_allclose(prompted, _cos(x, embed_texts(model, ["a rock song"])), rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError):
        apply_prompt(["rock"], "no slot")


def test_tag_retrieval_equals_metrics_on_the_cosine_matrix(model: torch.nn.Module) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, model.config.joint_dim)).astype(np.float32)
    track_tags = [tuple(t for t in TAGS if rng.random() < 0.4) or ("rock",) for _ in range(12)]
    vocab = [*TAGS, "never used"]
    got = evaluate_tag_retrieval(model, x, track_tags, vocab, vocabulary_name="test")
    y = label_matrix(track_tags, vocab)
    want = metrics.evaluate_tagging(y, _cos(x, embed_texts(model, vocab)), label_names=vocab)
    assert got["roc_auc"] == pytest.approx(want["roc_auc"], abs=1e-6)
    assert got["pr_auc"] == pytest.approx(want["pr_auc"], abs=1e-6)
    assert got["skipped_labels"] == ["never used"] and got["coverage"] == 1.0
    assert got["scoring"] == "cosine(track, tag text)" and got["vocabulary"] == "test"


def test_label_matrix_and_vocabulary_index() -> None:
    y = label_matrix([("rock", "x"), (), ("jazz", "rock")], ["rock", "jazz"])
    assert y.tolist() == [[1, 0], [0, 0], [1, 1]]
    assert vocabulary_index(["hip hop", "rnb", "jazz"], ["Hip-Hop", "hiphop", "R&B", "jazz", "blues"]) == [
        0,
        0,
        1,
        2,
        None,
    ]


def test_caption_pairs_are_deterministic_and_follow_the_policy() -> None:
    tracks = [
        Track(f"t{i}", "/x.wav", tags=("rock", f"tag{i}"), captions=(f"cap{i}a", f"cap{i}b") if i % 3 else ())
        for i in range(30)
    ]
    tracks.append(Track("bare", "/x.wav"))  # neither captions nor tags: never a candidate
    a = select_caption_pairs(tracks, n=10, seed=3)
    assert a == select_caption_pairs(tracks, n=10, seed=3)
    assert a != select_caption_pairs(tracks, n=10, seed=4)
    assert len(a) == 10 and [p.index for p in a] == sorted(p.index for p in a)
    for p in a:
        t = tracks[p.index]
        assert (p.caption in t.captions) if t.captions else p.caption == ", ".join(t.tags)
        assert p.source == ("caption" if t.captions else "tags")
    first = select_caption_pairs(tracks, n=100, policy="first")
    assert len(first) == 30 and first[1].caption == "cap1a" and first[0].caption == "rock, tag0"
    assert all(p.source == "tags" for p in select_caption_pairs(tracks, n=100, policy="tags"))
    only = select_caption_pairs(tracks, n=100, require_captions=True)
    assert len(only) == 20 and all(p.source == "caption" for p in only)
    with pytest.raises(MusicSearchError):
        select_caption_pairs([tracks[-1]])


def test_word_overlap_against_brute_force() -> None:
    captions = ["A calm Piano piece", "loud rock, hip-hop", "nothing shared", ""]
    predicted = [["calm", "piano"], ["hip hop", "rock"], [], ["rock"]]
    got = word_overlap_scores(captions, predicted)
    for q, c in enumerate(captions):
        for n, tags in enumerate(predicted):
            shared = words(c) & set(w for t in tags for w in t.lower().split())
            assert got[q, n] == len(shared)
    assert got[0, 0] == 2 and got[1, 1] == 3  # {calm, piano}; {rock, hip, hop}


def test_sentence_retrieval_equals_metrics_on_the_cosine_matrix(model: torch.nn.Module) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(8, model.config.joint_dim)).astype(np.float32)
    tracks = [Track(f"t{i}", "/x.wav", tags=(TAGS[i % 6],), captions=(f"a {TAGS[i % 6]} song number {i}",))
              for i in range(8)]  # fmt: skip
    pairs = select_caption_pairs(tracks, n=5, seed=0, policy="first")
    got = evaluate_sentence_retrieval(model, x, pairs)
    scores = _cos(embed_texts(model, [p.caption for p in pairs]), x[[p.index for p in pairs]])
    want = metrics.evaluate_retrieval(scores)
    for k in ("R@1", "R@5", "R@10", "mAP@10", "MRR", "median_rank_1based", "median_rank_0based"):
        assert got[k] == pytest.approx(want[k])
    assert got["median_rank_0based"] == got["median_rank_1based"] - 1
    assert got["n_pairs"] == 5 and got["caption_sources"] == {"caption": 5, "tags": 0}


def test_classification_path(classifier: torch.nn.Module) -> None:
    d = classifier.config.joint_dim
    x = np.zeros((len(TAGS), d), dtype=np.float32)
    x[np.arange(len(TAGS)), np.arange(len(TAGS))] = 3.0  # track i points at tag i
    track_tags = [(t,) for t in TAGS]
    logits = classifier_logits(classifier, x)
    np.testing.assert_allclose(logits, np.eye(len(TAGS)), atol=1e-6)
    # tag retrieval: classifier logits; tags outside the vocabulary are reported, not scored
    res = evaluate_tag_retrieval(classifier, x, track_tags, [*TAGS, "bossa nova"])
    assert res["scoring"] == "classifier logits" and res["roc_auc"] == pytest.approx(1.0)
    assert res["unscored_by_model"] == ["bossa nova"] and res["coverage"] == pytest.approx(6 / 7)
    # thresholds at best F1 -> each track predicts exactly its tag -> captions (tag texts) retrieve perfectly
    thr = classifier_thresholds(classifier, x, track_tags)
    assert np.allclose(thr, 1.0, atol=1e-6)
    tracks = [Track(f"t{i}", "/x.wav", tags=(t,), captions=(f"some {t} music",)) for i, t in enumerate(TAGS)]
    pairs = select_caption_pairs(tracks, policy="first")
    sent = evaluate_sentence_retrieval(classifier, x, pairs, thresholds=thr, threshold_source="test")
    assert sent["R@1"] == 1.0 and sent["median_rank_1based"] == 1.0
    assert sent["threshold_source"] == "test" and sent["mean_predicted_tags"] == 1.0
    assert set(sent["tie_variants"]) == {"optimistic", "mean", "stable"}
    # without thresholds: an error; free text: not scorable
    with pytest.raises(MusicSearchError):
        evaluate_sentence_retrieval(classifier, x, pairs)
    assert "skipped" in evaluate_unseen_queries(classifier, x, track_tags, {"guitar-driven": ["rock"]})


def test_classification_ties_are_ranked_by_the_rule(classifier: torch.nn.Module) -> None:
    d = classifier.config.joint_dim
    x = np.zeros((3, d), dtype=np.float32)
    x[:, 0] = 1.0  # all three tracks predict "rock" only: every caption ties across tracks
    pairs = select_caption_pairs([Track(f"t{i}", "/x.wav", tags=("rock",)) for i in range(3)])
    thr = np.full(len(TAGS), np.inf)
    thr[0] = 0.5
    res = evaluate_sentence_retrieval(classifier, x, pairs, thresholds=thr)
    assert res["tie_rule"] == "pessimistic" and res["R@1"] == 0.0 and res["median_rank_1based"] == 3.0
    assert res["tie_variants"]["optimistic"]["R@1"] == 1.0
    assert res["tie_variants"]["stable"]["median_rank_1based"] == 2.0


def test_unseen_queries(model: torch.nn.Module, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.json"
    corpus.write_text(json.dumps({"heldout_synonyms": {"rock": ["guitar-driven", "shared"], "jazz": ["shared"]}}))
    q = unseen_queries_from_corpus(tmp_path)
    assert q == {"guitar-driven": ["rock"], "shared": ["rock", "jazz"]}
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, model.config.joint_dim)).astype(np.float32)
    track_tags = [("rock",), ("jazz",), ("calm",), ("rock", "loud"), ("piano",), ("jazz",)]
    res = evaluate_unseen_queries(model, x, track_tags, q)
    y = np.array([[1, 1], [0, 1], [0, 0], [1, 1], [0, 0], [0, 1]], dtype=np.float32)
    want = metrics.evaluate_tagging(y, _cos(x, embed_texts(model, ["guitar-driven", "shared"])))
    assert res["roc_auc"] == pytest.approx(want["roc_auc"], abs=1e-6)
    assert res["relevant_tags"] == q and set(res["seen_tags"]) >= {"roc_auc", "pr_auc"}
    with pytest.raises(ManifestError):
        unseen_queries_from_corpus(tmp_path / "missing.json")
