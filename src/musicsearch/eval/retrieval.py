"""Retrieval evaluation of a model on track embeddings: tag retrieval, sentence retrieval, unseen queries.

The paper's protocol (section 9 of ``shared/docs/paper.md``):

* **Tag retrieval**: score(track, tag) = cosine(track embedding, tag text embedding); macro ROC-AUC and PR-AUC
  over the tag columns (:func:`evaluate_tag_retrieval`).
* **Sentence retrieval**: N (track, caption) pairs; each caption ranks the N tracks by cosine; R@1/5/10, mAP@10,
  MRR and the median rank, counted from 1 and from 0 (:func:`evaluate_sentence_retrieval`).
* **Classification models** have no text tower: tag retrieval scores with the classifier logits (its rows are
  the tag embeddings); sentence retrieval predicts tags at per-tag best-F1 thresholds and ranks tracks by the
  word overlap of the caption with each track's predicted tags, with an explicit tie rule.
* **Unseen queries**: words never seen in training (the synthetic corpus's held-out synonyms), each relevant to
  one or more tags; scored like tags, against the union of those tags' labels (:func:`evaluate_unseen_queries`).

Track embeddings come in as ``(N, D)`` arrays (not normalised; :mod:`musicsearch.eval.embeddings` makes them).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from musicsearch.data.manifest import Track
from musicsearch.data.sources.ecals import normalize_tag
from musicsearch.data.sources.labels import multi_hot
from musicsearch.errors import ConfigError, ManifestError, MusicSearchError
from musicsearch.eval import metrics
from musicsearch.eval.metrics import TieRule
from musicsearch.losses.registry import objective
from musicsearch.models.inference import embed_texts, eval_mode, model_device, normalize

__all__ = [
    "CaptionPair",
    "CaptionPolicy",
    "apply_prompt",
    "classifier_logits",
    "classifier_thresholds",
    "evaluate_sentence_retrieval",
    "evaluate_tag_retrieval",
    "evaluate_unseen_queries",
    "is_classification",
    "label_matrix",
    "query_scores",
    "select_caption_pairs",
    "unseen_queries_from_corpus",
    "vocabulary_index",
    "word_overlap_scores",
    "words",
]

CaptionPolicy = Literal["random", "first", "tags"]
_WORD = re.compile(r"[a-z0-9]+")
_TIE_RULES: tuple[TieRule, ...] = ("pessimistic", "optimistic", "mean", "stable")


# ----------------------------------------------------------------------------------------------------------------
# scoring texts against tracks
# ----------------------------------------------------------------------------------------------------------------
def is_classification(model: Any) -> bool:
    """Whether the model is a classification model (no text tower; tags are classifier rows)."""
    return not objective(str(model.config.objective)).text_tower


def apply_prompt(texts: Sequence[str], prompt: str | None) -> list[str]:
    """Texts put into a prompt template such as ``"a {} song"`` (``None``: the bare texts).

    Raises:
        ConfigError: if the template has no ``{}`` slot.
    """
    if prompt is None:
        return list(texts)
    if "{}" not in prompt:
        raise ConfigError(f"prompt template {prompt!r} needs a '{{}}' where the label goes, e.g. 'a {{}} song'")
    return [prompt.replace("{}", t) for t in texts]


def _match_key(tag: str) -> str:
    return normalize_tag(tag).replace(" ", "")


def vocabulary_index(vocabulary: Sequence[str], names: Sequence[str]) -> list[int | None]:
    """Position of each name in a model's tag vocabulary, or ``None`` when it is not there.

    A name matches a vocabulary tag when they are equal, else when they are equal after ECALS tag normalisation
    with spaces removed (``"Hip-Hop"``, ``"hip hop"`` and ``"hiphop"`` match).
    """
    exact = {t: i for i, t in enumerate(vocabulary)}
    loose: dict[str, int] = {}
    for i, t in enumerate(vocabulary):
        loose.setdefault(_match_key(t), i)
    return [exact.get(n, loose.get(_match_key(n))) for n in names]


def classifier_logits(model: Any, track_emb: Any) -> np.ndarray:
    """``(N, D)`` track embeddings -> ``(N, n_tags)`` float32 logits of a classification model's head.

    The head L2-normalises the embedding before its linear layer, so this is the model's own tag score.
    """
    if not is_classification(model):
        raise ConfigError("classifier_logits needs a classification model")
    x = torch.as_tensor(np.asarray(track_emb, dtype=np.float32))
    with eval_mode(model):
        out = model.head.logits(x.to(model_device(model))).float().cpu().numpy()
    return np.asarray(out, dtype=np.float32)


def query_scores(
    model: Any,
    track_emb: Any,
    texts: Sequence[str],
    *,
    prompt: str | None = None,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores of N tracks for C text queries (tags, labels, free text), and which queries the model can score.

    * Contrastive / triplet models: cosine(track embedding, text embedding of the (prompted) text).
    * Classification models: the classifier logit of the tag the text names (:func:`vocabulary_index`); a
      text outside the model's vocabulary cannot be scored (its column is 0 and ``covered`` is False).

    Args:
        model: the model.
        track_emb: ``(N, D)`` track embeddings (not necessarily normalised).
        texts: C query texts.
        prompt: optional template (``"a {} song"``); ignored by classification models.
        batch_size: texts per text-encoder pass.

    Returns:
        ``(scores, covered)``: ``(N, C)`` float32 and ``(C,)`` bool.
    """
    x = np.asarray(track_emb, dtype=np.float32)
    if x.ndim != 2:
        raise MusicSearchError(f"track embeddings must be (N, D), got shape {x.shape}")
    names = list(texts)
    if is_classification(model):
        idx = vocabulary_index(model.config.tags, names)
        covered = np.array([i is not None for i in idx], dtype=bool)
        scores = np.zeros((x.shape[0], len(names)), dtype=np.float32)
        if covered.any():
            logits = classifier_logits(model, x)  # (N, V)
            cols = np.array([i for i in idx if i is not None], dtype=np.int64)
            scores[:, covered] = logits[:, cols]
        return scores, covered
    t = embed_texts(model, apply_prompt(names, prompt), batch_size=batch_size)  # (C, D)
    return normalize(x) @ normalize(t).T, np.ones(len(names), dtype=bool)


def label_matrix(track_tags: Sequence[Sequence[str]], vocabulary: Sequence[str]) -> np.ndarray:
    """``(N, C)`` float32 0/1: track n has tag c (tags outside the vocabulary are ignored)."""
    return multi_hot(track_tags, vocabulary)


def _scored_tagging(
    y: np.ndarray, scores: np.ndarray, covered: np.ndarray, names: Sequence[str], *, with_f1: bool = False
) -> dict[str, Any]:
    """evaluate_tagging on the covered columns, plus the coverage counts."""
    names = list(names)
    unscored = [n for n, c in zip(names, covered) if not c]
    if not covered.any():
        out: dict[str, Any] = {"roc_auc": None, "pr_auc": None, "n_tracks": int(y.shape[0]), "n_labels": 0}
    else:
        out = metrics.evaluate_tagging(
            y[:, covered], scores[:, covered], label_names=[n for n, c in zip(names, covered) if c], with_f1=with_f1
        )
        for key in ("roc_auc", "pr_auc", "f1_best_threshold"):
            if key in out and isinstance(out[key], float) and np.isnan(out[key]):
                out[key] = None
    out["n_vocabulary"] = len(names)
    out["coverage"] = float(covered.mean()) if len(names) else 0.0
    out["unscored_by_model"] = unscored
    return out


# ----------------------------------------------------------------------------------------------------------------
# tag retrieval
# ----------------------------------------------------------------------------------------------------------------
def evaluate_tag_retrieval(
    model: Any,
    track_emb: Any,
    track_tags: Sequence[Sequence[str]],
    vocabulary: Sequence[str],
    *,
    vocabulary_name: str = "",
    prompt: str | None = None,
) -> dict[str, Any]:
    """Tag retrieval over a tag vocabulary: macro ROC-AUC / PR-AUC of the (tracks x tags) score matrix.

    Args:
        model: the model.
        track_emb: ``(N, D)`` track embeddings.
        track_tags: the N tracks' tags (labels: a track is relevant to a tag it carries).
        vocabulary: the C tags to score (e.g. the ECALS 50 or 1,054 lists, or a corpus vocabulary).
        vocabulary_name: a description for the report.
        prompt: optional template for the tag texts.

    Returns:
        :func:`musicsearch.eval.metrics.evaluate_tagging`'s dict (``roc_auc``, ``pr_auc``, counts of skipped
        tags, ``per_label``) plus ``vocabulary``, ``scoring``, ``n_vocabulary``, ``coverage`` and
        ``unscored_by_model`` (tags a classification model does not know; left out of the means).
    """
    vocab = list(dict.fromkeys(vocabulary))
    y = label_matrix(track_tags, vocab)
    scores, covered = query_scores(model, track_emb, vocab, prompt=prompt)
    out = _scored_tagging(y, scores, covered, vocab)
    out["vocabulary"] = vocabulary_name
    out["scoring"] = "classifier logits" if is_classification(model) else "cosine(track, tag text)"
    out["prompt"] = prompt
    return out


# ----------------------------------------------------------------------------------------------------------------
# sentence retrieval
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CaptionPair:
    """One (track, caption) pair of the sentence-retrieval test.

    Attributes:
        index: the track's position in the evaluated track list.
        track_id: its id.
        caption: the query text.
        source: ``"caption"`` (one of the track's captions) or ``"tags"`` (its tags joined with ", ").
    """

    index: int
    track_id: str
    caption: str
    source: str


def select_caption_pairs(
    tracks: Sequence[Track],
    *,
    n: int = 1000,
    seed: int = 0,
    policy: CaptionPolicy = "random",
    require_captions: bool = False,
) -> list[CaptionPair]:
    """Choose up to ``n`` (track, caption) pairs, deterministically for a seed.

    Candidates are the tracks with captions (``require_captions=True``), or with captions or tags. When there
    are more than ``n``, ``n`` are drawn without replacement (kept in track order). Each chosen track's caption:
    ``"random"`` -- one of its captions drawn with the same generator; ``"first"`` -- its first caption;
    ``"tags"`` -- its tags joined with ", " (the ECALS caption form). A track without captions always gets
    its tags joined with ", ".

    Args:
        tracks: the evaluated tracks.
        n: the number of pairs wanted (the paper: 1,000).
        seed: seed of the ``numpy.random.Generator`` that draws the tracks and captions.
        policy: caption choice, as above.
        require_captions: only tracks that have captions.

    Returns:
        The pairs, in track order.

    Raises:
        MusicSearchError: if ``n < 1``, the policy is unknown, or no track qualifies.
    """
    if n < 1:
        raise MusicSearchError(f"the number of caption pairs must be >= 1, got {n}")
    if policy not in ("random", "first", "tags"):
        raise MusicSearchError(f"unknown caption policy {policy!r}; use random, first or tags")
    rng = np.random.default_rng(seed)
    cand = [i for i, t in enumerate(tracks) if t.captions or (not require_captions and t.tags)]
    if not cand:
        need = "captions" if require_captions else "captions or tags"
        raise MusicSearchError(f"no track has {need}; sentence retrieval needs (track, caption) pairs")
    if len(cand) > n:
        pick = np.sort(rng.choice(len(cand), size=n, replace=False))
        cand = [cand[int(j)] for j in pick]
    pairs = []
    for i in cand:
        t = tracks[i]
        if t.captions and policy != "tags":
            caption = t.captions[int(rng.integers(len(t.captions)))] if policy == "random" else t.captions[0]
            pairs.append(CaptionPair(i, t.track_id, caption, "caption"))
        else:
            pairs.append(CaptionPair(i, t.track_id, ", ".join(t.tags), "tags"))
    return pairs


def words(text: str) -> set[str]:
    """The set of lower-case alphanumeric words of a text (``"Hip-Hop, 90s"`` -> ``{"hip", "hop", "90s"}``)."""
    return set(_WORD.findall(text.lower()))


def word_overlap_scores(captions: Sequence[str], predicted_tags: Sequence[Sequence[str]]) -> np.ndarray:
    """``(Q, N)`` float64: the number of distinct words caption q shares with the predicted tags of track n.

    The classification model's sentence-retrieval score (the paper: "sentences are ranked by word overlap").
    Words are those of :func:`words`; a track with no predicted tag scores 0 for every caption.
    """
    track_words: list[set[str]] = [set().union(*(words(t) for t in tags)) for tags in predicted_tags]
    vocab = {w: i for i, w in enumerate(sorted(set().union(*track_words)))}
    a = np.zeros((len(captions), len(vocab)), dtype=np.float64)  # captions x words
    for q, c in enumerate(captions):
        for w in words(c):
            j = vocab.get(w)
            if j is not None:
                a[q, j] = 1.0
    b = np.zeros((len(track_words), len(vocab)), dtype=np.float64)  # tracks x words
    for n, ws in enumerate(track_words):
        for w in ws:
            b[n, vocab[w]] = 1.0
    return a @ b.T


def classifier_thresholds(model: Any, track_emb: Any, track_tags: Sequence[Sequence[str]]) -> np.ndarray:
    """Per-tag best-F1 thresholds of a classification model's logits, chosen on the given (validation) tracks.

    Returns:
        ``(n_tags,)`` float64 in ``config.tags`` order; ``+inf`` (never predicted) for a tag without a positive.
    """
    vocab = list(model.config.tags)
    y = label_matrix(track_tags, vocab)
    thr, _ = metrics.best_f1_thresholds(y, classifier_logits(model, track_emb))
    return thr


def evaluate_sentence_retrieval(
    model: Any,
    track_emb: Any,
    pairs: Sequence[CaptionPair],
    *,
    ties: TieRule = "pessimistic",
    thresholds: Any = None,
    threshold_source: str = "",
    batch_size: int = 64,
) -> dict[str, Any]:
    """Text -> audio retrieval within the tracks of ``pairs``: each caption ranks those tracks.

    Args:
        model: the model.
        track_emb: ``(N, D)`` embeddings of the evaluated tracks (``pair.index`` points into them).
        pairs: the (track, caption) pairs (:func:`select_caption_pairs`); track ``i`` of the pairs is the one
            relevant item of caption ``i``.
        ties: tie rule of the ranks (:func:`musicsearch.eval.metrics.rank_of_relevant`); irrelevant for cosine
            scores, decisive for the classification model's word-overlap counts.
        thresholds: classification models: ``(n_tags,)`` per-tag thresholds on the logits (tags with
            ``logit >= threshold`` are predicted), e.g. :func:`classifier_thresholds` on a validation split.
        threshold_source: where the thresholds were chosen (for the report).
        batch_size: captions per text-encoder pass.

    Returns:
        :func:`musicsearch.eval.metrics.evaluate_retrieval`'s dict (``R@1``, ``R@5``, ``R@10``, ``mAP@10``,
        ``MRR``, ``median_rank_1based``, ``median_rank_0based``, ...) plus ``n_pairs``, ``scoring``,
        ``caption_sources``; for classification models also ``threshold_source``, ``mean_predicted_tags`` and
        ``tie_variants`` (the same numbers under the other tie rules).

    Raises:
        MusicSearchError: no pairs, or a classification model without thresholds.
    """
    if not pairs:
        raise MusicSearchError("sentence retrieval needs at least one (track, caption) pair")
    x = np.asarray(track_emb, dtype=np.float32)[[p.index for p in pairs]]  # (Q, D)
    captions = [p.caption for p in pairs]
    extra: dict[str, Any] = {}
    if is_classification(model):
        if thresholds is None:
            raise MusicSearchError("sentence retrieval with a classification model needs per-tag thresholds")
        thr = np.asarray(thresholds, dtype=np.float64).reshape(-1)
        vocab = list(model.config.tags)
        if thr.shape[0] != len(vocab):
            raise MusicSearchError(f"{thr.shape[0]} thresholds for a vocabulary of {len(vocab)} tags")
        pred = classifier_logits(model, x) >= thr[None, :]  # (Q, V)
        predicted = [[vocab[j] for j in np.flatnonzero(row)] for row in pred]
        scores = word_overlap_scores(captions, predicted)
        scoring = "word overlap of caption and predicted tags (per-tag best-F1 thresholds)"
        extra["threshold_source"] = threshold_source
        extra["mean_predicted_tags"] = float(pred.sum(axis=1).mean())
        extra["tie_variants"] = {
            rule: {k: v for k, v in metrics.evaluate_retrieval(scores, ties=rule).items() if k != "tie_rule"}
            for rule in _TIE_RULES
            if rule != ties
        }
    else:
        t = embed_texts(model, captions, batch_size=batch_size)  # (Q, D)
        scores = normalize(t) @ normalize(x).T  # (Q captions, Q tracks)
        scoring = "cosine(caption text, track)"
    out = metrics.evaluate_retrieval(scores, ties=ties)
    out["n_pairs"] = len(pairs)
    out["scoring"] = scoring
    out["caption_sources"] = {s: sum(p.source == s for p in pairs) for s in ("caption", "tags")}
    out.update(extra)
    return out


# ----------------------------------------------------------------------------------------------------------------
# unseen queries
# ----------------------------------------------------------------------------------------------------------------
def unseen_queries_from_corpus(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Unseen queries of a synthetic corpus: its ``corpus.json`` held-out synonyms, inverted.

    Args:
        path: ``corpus.json`` (or the corpus folder holding it), whose ``heldout_synonyms`` maps a tag to the
            synonyms and paraphrases that never appear in the corpus.

    Returns:
        ``{query text: [relevant tags]}`` (a synonym listed under several tags is relevant to all of them).

    Raises:
        ManifestError: if the file is missing or has no ``heldout_synonyms`` object.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "corpus.json"
    if not p.is_file():
        raise ManifestError(f"{p} does not exist; unseen queries come from a synthetic corpus's corpus.json")
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{p} is not valid JSON ({exc})") from None
    syn = obj.get("heldout_synonyms") if isinstance(obj, dict) else None
    if not isinstance(syn, dict):
        raise ManifestError(f"{p} has no 'heldout_synonyms' object {{tag: [synonyms]}}")
    out: dict[str, list[str]] = {}
    for tag, texts in syn.items():
        for text in [texts] if isinstance(texts, str) else texts:
            out.setdefault(str(text), [])
            if tag not in out[str(text)]:
                out[str(text)].append(str(tag))
    return out


def evaluate_unseen_queries(
    model: Any,
    track_emb: Any,
    track_tags: Sequence[Sequence[str]],
    queries: Mapping[str, Sequence[str] | str],
    *,
    prompt: str | None = None,
) -> dict[str, Any]:
    """Retrieval with queries never seen in training, each relevant to the tracks carrying one of its tags.

    Args:
        model: the model (classification models cannot embed free text: the result says so).
        track_emb: ``(N, D)`` track embeddings.
        track_tags: the N tracks' tags.
        queries: ``{query text: relevant tag or tags}``, e.g. :func:`unseen_queries_from_corpus`.
        prompt: optional template for the query texts.

    Returns:
        :func:`musicsearch.eval.metrics.evaluate_tagging`'s dict over the query columns (queries whose tags no
        evaluated track carries are skipped and counted), plus ``relevant_tags`` and ``seen_tags`` -- the same
        numbers for the relevant tags' own texts on the same tracks, the reference an unseen word is measured
        against. For a classification model: ``{"skipped": reason}``.
    """
    if is_classification(model):
        return {"skipped": "a classification model scores only its own tags; it cannot embed unseen words"}
    q = {str(k): [v] if isinstance(v, str) else [str(t) for t in v] for k, v in queries.items()}
    if not q:
        raise MusicSearchError("no unseen queries given")
    texts = list(q)
    sets = [set(tags) for tags in track_tags]
    y = np.array([[float(any(t in s for t in q[text])) for text in texts] for s in sets], dtype=np.float32)
    scores, covered = query_scores(model, track_emb, texts, prompt=prompt)
    out = _scored_tagging(y.reshape(len(sets), len(texts)), scores, covered, texts)
    out["relevant_tags"] = q
    out["prompt"] = prompt
    tags = sorted({t for v in q.values() for t in v})
    seen_scores, seen_cov = query_scores(model, track_emb, tags, prompt=prompt)
    seen = _scored_tagging(label_matrix(track_tags, tags), seen_scores, seen_cov, tags)
    out["seen_tags"] = {k: seen[k] for k in ("roc_auc", "pr_auc", "n_labels_scored_roc", "n_labels_scored_pr")}
    return out
