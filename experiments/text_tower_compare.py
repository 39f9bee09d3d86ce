"""Issue 13, item 4: text tower candidates, MiniLM against all-mpnet-base-v2, on the same frozen audio side.

Only the text tower differs. The audio side is the shipped ``default`` model's audio tower and projection (frozen):
every clip's track embedding (mean of 3 windows) is computed once (the embedding cache). For each candidate tower
(frozen), the raw mean-pooled sentence embeddings of every text are computed once and cached under ``OUT/cache``;
a projection into the default's 128-d joint space is then trained with the contrastive loss
(:func:`musicsearch.losses.contrastive.info_nce`, learnable temperature) against the frozen audio embeddings of
the train split: each step pairs a clip with one of its captions (half of the draws) or a stochastic tag text
(:func:`musicsearch.text.sampling.sample_stochastic`, a fixed pool of draws a clip); early stopping on the valid
split's text-to-audio MRR. Two heads are tried per tower (``linear``: the project's LayerNorm + Linear projector;
``mlp``: LayerNorm, 512 GELU units, Linear), the better on valid is kept, and it is trained with three seeds.

Candidates:

* ``default (shipped)``: the default model's text side as it is (its tuned MiniLM and its trained projection);
* ``minilm-tuned``: the default's own text tower (all-MiniLM-L6-v2 with its top layer tuned in training), raw,
  with a newly trained projection;
* ``minilm``: stock all-MiniLM-L6-v2, raw, with a newly trained projection;
* ``mpnet``: all-mpnet-base-v2 (``make mpnet``), raw, with a newly trained projection.

Checks: the test split of ``--corpus`` (tag retrieval top-50 / all ROC and PR, sentence retrieval R@1 / R@10,
unseen words from the corpus's held-out synonyms, as :mod:`musicsearch.eval.suites` builds them), the same on
``--small-corpus`` (the shipped 30-clip test split), the eight real recordings of ``distill_compare.QUERIES``
(each candidate's query text against the default's audio embeddings of the recordings; MRR among the eight) and
a synonym check (margin of cosine(anchor, synonym) over cosine(anchor, unrelated) in the joint space).

Cost: one query's text encoding (tokeniser included), 1 intra-op thread, eager torch and ONNX Runtime (export
with ``torch.onnx.export(..., opset_version=17, dynamo=False)``), measured interleaved in one process; model size,
load time, and a cold process (import, load the ONNX session and tokeniser, encode one query) with its peak RSS.

Usage (the numbers in docs/results.md; ``make mpnet`` first)::

    .venv/bin/musicsearch synth --out data/corpus-big --n 648 --seed 1 --workers 1
    .venv/bin/python experiments/text_tower_compare.py --out runs/text_tower

``--towers`` runs a subset (rows of earlier calls in ``OUT/results.json`` are kept); ``--embed-only`` fills a
tower's text cache (it can run beside the audio embedding); ``--cost-only`` re-runs only the cost table (the
trained ``mpnet`` head is read back from ``OUT``); ``--report-only`` rewrites ``OUT/report.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distill_compare import QUERIES

from musicsearch.fileio import atomic_path, write_json

log = logging.getLogger("text_tower_compare")

TOWERS = ("minilm-tuned", "minilm", "mpnet")
HEADS = ("linear", "mlp")
SEEDS = (0, 1, 2)
N_STOCHASTIC = 4  # stochastic tag texts drawn once per train clip (the towers' cost is in embedding the texts)
#: (anchor, synonym or paraphrase, unrelated): written for this check, not taken from any corpus or model tags.
SYNONYMS: tuple[tuple[str, str, str], ...] = (
    ("sad piano ballad", "melancholic piano", "heavy metal"),
    ("fast energetic drum and bass", "high-tempo electronic breakbeat", "slow calm ambient"),
    ("calm relaxing ambient", "peaceful soothing soundscape", "aggressive punk rock"),
    ("happy upbeat pop", "cheerful bright song", "dark gloomy drone"),
    ("acoustic guitar folk", "unplugged folk song with guitar", "techno with synthesizers"),
    ("classical string orchestra", "symphonic violins and cellos", "hip hop beat"),
    ("jazz with saxophone", "sax-led swing jazz", "electronic dance music"),
    ("scary horror soundtrack", "frightening eerie music", "joyful children's song"),
    ("romantic love song", "tender affectionate ballad", "angry thrash metal"),
    ("epic heroic orchestral music", "grand triumphant score", "lo-fi bedroom pop"),
    ("solo piano", "unaccompanied piano", "full brass band"),
    ("slow tempo", "unhurried pace", "very fast tempo"),
)
#: queries timed in the cost table (cycled): the real-recording queries and the synonym texts.
TIMED_QUERIES: tuple[str, ...] = tuple(QUERIES.values()) + tuple(t for row in SYNONYMS for t in row)


def _pct(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * float(x):.1f}"


def _ms(x: float) -> str:
    return f"{1000 * x:.1f}"


# ----------------------------------------------------------------------------------------------------------------
# towers and their cached raw embeddings
# ----------------------------------------------------------------------------------------------------------------
def load_tower(name: str, default: Any) -> Any:
    """A frozen :class:`~musicsearch.text.encoders.TransformerTextEncoder` (mean pooling, 64 tokens) in eval mode."""
    from musicsearch.text.encoders import TransformerTextEncoder

    if name == "minilm-tuned":
        enc = copy.deepcopy(default.text_encoder)
        for p in enc.parameters():
            p.requires_grad_(False)
        return enc.eval()
    alias = {"minilm": "minilm", "mpnet": "mpnet"}[name]
    return TransformerTextEncoder(alias, pooling="mean", max_length=64, trainable=False).eval()


class RawTexts:
    """Raw sentence embeddings of one frozen tower, memoised in memory and in ``folder/<tower>.npz``."""

    def __init__(self, name: str, tower: Any, folder: Path) -> None:
        self.name, self.tower, self.path = name, tower, folder / f"{name}.npz"
        self.vectors: dict[str, np.ndarray] = {}
        self.dirty = False
        if self.path.is_file():
            with np.load(self.path, allow_pickle=False) as z:
                self.vectors = dict(zip([str(t) for t in z["texts"]], z["vectors"]))

    @property
    def dim(self) -> int:
        return int(self.tower.dim)

    def __call__(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """``N`` texts -> ``(N, dim)`` float32 raw (mean-pooled, not normalised) embeddings."""
        todo = sorted({t for t in texts if t not in self.vectors}, key=lambda t: (len(t), t))  # less padding
        if todo:
            t0 = time.perf_counter()
            with torch.no_grad():
                for a in range(0, len(todo), batch_size):
                    out = self.tower(todo[a : a + batch_size]).float().numpy()
                    self.vectors.update(zip(todo[a : a + batch_size], out))
            log.info("%s: embedded %d new texts in %.1f s", self.name, len(todo), time.perf_counter() - t0)
            self.dirty = True
            if len(todo) > 100:
                self.save()
        return np.stack([self.vectors[t] for t in texts]).astype(np.float32) if texts else np.zeros((0, self.dim))

    def save(self) -> None:
        if not self.dirty:
            return
        texts = list(self.vectors)
        with atomic_path(self.path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, texts=np.array(texts), vectors=np.stack([self.vectors[t] for t in texts]))
        self.dirty = False


def make_head(kind: str, d_in: int, d_out: int) -> nn.Module:
    """``linear``: the project's projector (LayerNorm, Linear without bias); ``mlp``: LayerNorm, 512 GELU, Linear."""
    from musicsearch.models.dual_encoder import projector

    if kind == "linear":
        return projector(d_in, d_out)
    return nn.Sequential(nn.LayerNorm(d_in), nn.Linear(d_in, 512), nn.GELU(), nn.Dropout(0.1), nn.Linear(512, d_out))


class CandidateModel(nn.Module):
    """The default model's config (objective, joint space) with a candidate text side: a frozen tower's raw
    embedding, then a trained head. The project's metric functions call its ``encode_text``."""

    def __init__(self, config: Any, raw: RawTexts, head: nn.Module) -> None:
        super().__init__()
        self.config, self.raw, self.head = config, raw, head

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        return self.head(torch.from_numpy(self.raw(list(texts))))  # (N, joint_dim)


# ----------------------------------------------------------------------------------------------------------------
# the audio side (frozen) and the training texts
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Split:
    tracks: list[Any]
    audio: np.ndarray  # (N, 128) unit rows: the default's track embeddings


def audio_splits(default: Any, manifest: str, splits: Sequence[str]) -> dict[str, Split]:
    from musicsearch.data.manifest import read_manifest
    from musicsearch.eval.embeddings import embed_tracks
    from musicsearch.models.inference import normalize

    every = read_manifest(manifest)
    out: dict[str, Split] = {}
    for split in splits:
        tracks = [t for t in every if t.split == split]
        emb = embed_tracks(default, tracks, dataset=f"manifest:{Path(manifest).name}:{split}", n_windows=3)
        ok = emb.ok_indices
        out[split] = Split([tracks[i] for i in ok], normalize(np.asarray(emb.embeddings[ok], dtype=np.float32)))
        log.info("%s %s: %d clips (%.1f s embedding, cached: %s)", manifest, split, ok.size, emb.seconds,
                 emb.from_cache)  # fmt: skip
    return out


def train_texts(tracks: Sequence[Any], n_stochastic: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """Per clip: (``n_stochastic`` stochastic tag texts, its captions), drawn once with ``seed``."""
    from musicsearch.text.sampling import sample_stochastic

    rng = np.random.default_rng(seed)
    return [([sample_stochastic(t.tags, rng) for _ in range(n_stochastic)], list(t.captions)) for t in tracks]


def valid_queries(tracks: Sequence[Any]) -> tuple[list[str], np.ndarray]:
    """Valid queries (each clip's captions and its whole tag sentence) and the clip each belongs to."""
    texts, owner = [], []
    for i, t in enumerate(tracks):
        for q in [*t.captions, ", ".join(t.tags)]:
            texts.append(q)
            owner.append(i)
    return texts, np.array(owner)


def mrr(text: np.ndarray, audio: np.ndarray, owner: np.ndarray) -> float:
    """Mean reciprocal rank of each query's own clip among all clips (cosine; ties pessimistic)."""
    t = text / np.linalg.norm(text, axis=1, keepdims=True)
    sims = t @ audio.T  # (Q, N)
    own = sims[np.arange(len(owner)), owner]
    ranks = (sims >= own[:, None]).sum(1)
    return float(np.mean(1.0 / ranks))


def train_head(
    raw: RawTexts,
    kind: str,
    train: Split,
    valid: Split,
    *,
    seed: int,
    n_stochastic: int = N_STOCHASTIC,
    caption_share: float = 0.5,
    batch_size: int = 64,
    lr: float = 1e-3,
    max_epochs: int = 150,
    patience: int = 15,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train a ``kind`` head from ``raw``'s space to the audio space; early stopping on valid MRR."""
    from musicsearch.losses.contrastive import ContrastiveHead

    pools = train_texts(train.tracks, n_stochastic, seed=1000)  # the same texts for every seed and head
    flat = sorted({q for stoch, caps in pools for q in stoch + caps})
    index = {q: i for i, q in enumerate(flat)}
    feats = torch.from_numpy(raw(flat))  # (M, d)
    stoch_idx = [np.array([index[q] for q in s]) for s, _ in pools]
    cap_idx = [np.array([index[q] for q in c]) for _, c in pools]
    v_texts, v_owner = valid_queries(valid.tracks)
    v_feats = torch.from_numpy(raw(v_texts))
    audio = torch.from_numpy(train.audio)

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    head = make_head(kind, raw.dim, train.audio.shape[1])
    loss_head = ContrastiveHead(init_temperature=0.2)
    opt = torch.optim.AdamW([*head.parameters(), *loss_head.parameters()], lr=lr, weight_decay=0.01)
    best, best_state, best_epoch, history = -1.0, copy.deepcopy(head.state_dict()), 0, []
    n = len(pools)
    t0 = time.perf_counter()
    for epoch in range(1, max_epochs + 1):
        head.train()
        order = rng.permutation(n)
        for a in range(0, n - 1, batch_size):
            clips = order[a : a + batch_size]  # distinct clips: no false negatives inside a batch
            if clips.size < 2:
                continue
            rows = [
                int(rng.choice(cap_idx[c])) if cap_idx[c].size and rng.random() < caption_share
                else int(rng.choice(stoch_idx[c]))
                for c in clips
            ]  # fmt: skip
            text = head(feats[rows])  # (B, 128)
            loss = loss_head(audio[clips], text)
            opt.zero_grad()
            loss.backward()
            opt.step()
        head.eval()
        with torch.no_grad():
            score = mrr(head(v_feats).numpy(), valid.audio, v_owner)
        history.append(score)
        if score > best:
            best, best_state, best_epoch = score, copy.deepcopy(head.state_dict()), epoch
        elif epoch - best_epoch >= patience:
            break
    head.load_state_dict(best_state)
    head.eval()
    info = {"head": kind, "seed": seed, "valid_mrr": best, "best_epoch": best_epoch, "epochs": len(history),
            "temperature": loss_head.temperature(), "train_texts": len(flat),
            "seconds": time.perf_counter() - t0}  # fmt: skip
    log.info("%s/%s seed %d: valid MRR %.3f at epoch %d of %d (%.1f s)", raw.name, kind, seed, best, best_epoch,
             len(history), info["seconds"])  # fmt: skip
    return head, info


# ----------------------------------------------------------------------------------------------------------------
# checks
# ----------------------------------------------------------------------------------------------------------------
def corpus_scores(model: Any, split: Split, manifest: str) -> dict[str, Any]:
    """Tag retrieval (top-50 / all), sentence retrieval and unseen queries, as the ``corpus`` suite runs them."""
    from musicsearch.data.manifest import read_manifest, tag_vocabulary
    from musicsearch.eval.retrieval import (
        evaluate_sentence_retrieval,
        evaluate_tag_retrieval,
        evaluate_unseen_queries,
        select_caption_pairs,
        unseen_queries_from_corpus,
    )

    vocab = tag_vocabulary(read_manifest(manifest))
    tags = [t.tags for t in split.tracks]
    pairs = select_caption_pairs(split.tracks, n=1000, seed=0, policy="random")
    unseen = unseen_queries_from_corpus(Path(manifest).parent / "corpus.json")
    return {
        "n_clips": len(split.tracks),
        "top50": evaluate_tag_retrieval(model, split.audio, tags, vocab[:50]),
        "all": evaluate_tag_retrieval(model, split.audio, tags, vocab),
        "sentence": evaluate_sentence_retrieval(model, split.audio, pairs),
        "unseen": evaluate_unseen_queries(model, split.audio, tags, unseen),
    }


def real_audio(default: Any) -> np.ndarray:
    """``(8, 128)`` unit embeddings of the eight real recordings (8 windows each), in ``sorted(QUERIES)`` order."""
    from musicsearch.assets import librosa_music_dir
    from musicsearch.data.manifest import Track
    from musicsearch.eval.embeddings import embed_tracks
    from musicsearch.models.inference import normalize

    stems = sorted(QUERIES)
    tracks = [Track(s, str(librosa_music_dir() / f"{s}.ogg")) for s in stems]
    emb = embed_tracks(default, tracks, dataset="librosa_music", n_windows=8)
    return normalize(np.asarray(emb.embeddings, dtype=np.float32))


def real_scores(model: Any, audio: np.ndarray) -> dict[str, Any]:
    """Rank of each recording for its query among the eight (as ``distill_compare.librosa_mrr``)."""
    from musicsearch.models.inference import embed_texts, normalize

    stems = sorted(QUERIES)
    sims = normalize(embed_texts(model, [QUERIES[s] for s in stems])) @ audio.T  # (queries, recordings)
    ranks = [int((sims[i] > sims[i, i]).sum()) + 1 for i in range(len(stems))]
    return {"ranks": dict(zip(stems, ranks)), "mrr": float(np.mean([1.0 / r for r in ranks])),
            "top1": float(np.mean([r == 1 for r in ranks]))}  # fmt: skip


def synonym_scores(encode: Callable[[list[str]], np.ndarray]) -> dict[str, Any]:
    """Margins cos(anchor, synonym) - cos(anchor, unrelated) over :data:`SYNONYMS` (unit rows from ``encode``)."""
    from musicsearch.models.inference import normalize

    e = normalize(encode([t for row in SYNONYMS for t in row])).reshape(len(SYNONYMS), 3, -1)
    syn = np.einsum("nd,nd->n", e[:, 0], e[:, 1])
    other = np.einsum("nd,nd->n", e[:, 0], e[:, 2])
    margin = syn - other
    return {"mean_margin": float(margin.mean()), "min_margin": float(margin.min()),
            "positive": int((margin > 0).sum()), "n": len(SYNONYMS), "mean_synonym_cos": float(syn.mean()),
            "mean_unrelated_cos": float(other.mean()), "margins": [float(m) for m in margin]}  # fmt: skip


def evaluate(model: Any, splits: dict[str, tuple[Split, str]], real: np.ndarray) -> dict[str, Any]:
    from musicsearch.models.inference import embed_texts

    out: dict[str, Any] = {name: corpus_scores(model, split, manifest) for name, (split, manifest) in splits.items()}
    out["real"] = real_scores(model, real)
    out["synonyms"] = synonym_scores(lambda texts: embed_texts(model, texts))
    return out


SCORE_KEYS: dict[str, Callable[[dict[str, Any]], float]] = {
    "top50 ROC": lambda c: c["top50"]["roc_auc"],
    "top50 PR": lambda c: c["top50"]["pr_auc"],
    "all ROC": lambda c: c["all"]["roc_auc"],
    "sent R@1": lambda c: c["sentence"]["R@1"],
    "sent R@10": lambda c: c["sentence"]["R@10"],
    "sent MRR": lambda c: c["sentence"]["MRR"],
    "unseen ROC": lambda c: c["unseen"]["roc_auc"],
    "unseen PR": lambda c: c["unseen"]["pr_auc"],
}


def _mean_sd(values: Sequence[float], pct: bool = True) -> str:
    k = 100.0 if pct else 1.0
    if len(values) == 1:
        return f"{k * values[0]:.1f}" if pct else f"{values[0]:.3f}"
    m, s = float(np.mean(values)), float(np.std(values, ddof=1))
    return f"{k * m:.1f} ± {k * s:.1f}" if pct else f"{m:.3f} ± {s:.3f}"


def quality_table(rows: dict[str, list[dict[str, Any]]], corpus: str) -> str:
    head = "| text side | " + " | ".join(SCORE_KEYS) + " | 8 real MRR | real top-1 | synonym margin (pairs > 0) |"
    lines = [head, "|---" * (len(SCORE_KEYS) + 4) + "|"]
    for name, runs in rows.items():
        cells = [_mean_sd([f(r[corpus]) for r in runs]) for f in SCORE_KEYS.values()]
        cells.append(_mean_sd([r["real"]["mrr"] for r in runs], pct=False))
        cells.append(_mean_sd([r["real"]["top1"] for r in runs]))
        syn = [r["synonyms"] for r in runs]
        pos = "/".join(str(s["positive"]) for s in syn)
        cells.append(f"{_mean_sd([s['mean_margin'] for s in syn], pct=False)} ({pos} of {syn[0]['n']})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def raw_synonym_table(rows: dict[str, list[dict[str, Any]]]) -> str:
    """The synonym check in each tower's own (raw, unprojected) space: what the tower brings before training."""
    lines = ["| tower (raw sentence embedding) | mean cos(anchor, synonym) | mean cos(anchor, unrelated) "
             "| mean margin | min margin | pairs > 0 |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, runs in rows.items():
        if "raw_synonyms" not in runs[0]:
            continue
        r = runs[0]["raw_synonyms"]
        lines.append(f"| {name.split()[0]} | {r['mean_synonym_cos']:.3f} | {r['mean_unrelated_cos']:.3f} "
                     f"| {r['mean_margin']:.3f} | {r['min_margin']:.3f} | {r['positive']} of {r['n']} |")  # fmt: skip
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# cost per query
# ----------------------------------------------------------------------------------------------------------------
class _Graph(nn.Module):
    """Tower + mean pooling + head as one module with tensor inputs (what ONNX export needs)."""

    def __init__(self, tower: Any, head: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.hf, self.head, self.names = tower.model, head, list(names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:  # each (N, L) int64 -> (N, D)
        batch = dict(zip(self.names, inputs))
        hidden = self.hf(**batch).last_hidden_state  # (N, L, H)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (N, L, 1)
        return self.head((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0))  # (N, D)


def export_onnx(tower: Any, head: nn.Module, folder: Path) -> tuple[Path, Path, list[str], float]:
    """Export tower + head to ``folder/text.onnx`` and the fast tokeniser to ``folder/tokenizer.json``."""
    import warnings

    folder.mkdir(parents=True, exist_ok=True)
    batch = tower.tokenize(["sad piano ballad", "a"], device=torch.device("cpu"))
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in batch]
    graph = _Graph(tower, head, names).eval()
    onnx_path, tok_path = folder / "text.onnx", folder / "tokenizer.json"
    t0 = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with atomic_path(onnx_path) as tmp:
            torch.onnx.export(graph, tuple(batch[n] for n in names), str(tmp), input_names=names,
                              output_names=["embedding"], opset_version=17, dynamo=False,
                              dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names},
                                            "embedding": {0: "batch"}})  # fmt: skip
    tower.tokenizer.backend_tokenizer.save(str(tok_path))
    return onnx_path, tok_path, names, time.perf_counter() - t0


def quantize_int8(onnx_path: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = onnx_path.with_name("text.int8.onnx")
    if not out.is_file():
        quantize_dynamic(str(onnx_path), str(out), weight_type=QuantType.QInt8)
    return out


def _ort_session(path: Path) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _ort_encoder(sess: Any, tower: Any, names: Sequence[str]) -> Callable[[str], np.ndarray]:
    def encode(text: str) -> np.ndarray:
        batch = tower.tokenizer([text], truncation=True, max_length=tower.max_length, return_tensors="np")
        return sess.run(None, {n: batch[n].astype(np.int64) for n in names})[0]

    return encode


def _torch_encoder(tower: Any, head: nn.Module) -> Callable[[str], np.ndarray]:
    def encode(text: str) -> np.ndarray:
        with torch.no_grad():
            return head(tower([text])).numpy()

    return encode


COLD_PROBE = """
import sys, time
t0 = time.perf_counter()
import numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
sess = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
tok = Tokenizer.from_file(sys.argv[2]); tok.enable_truncation(int(sys.argv[3]))
names = [i.name for i in sess.get_inputs()]
enc = tok.encode("sad piano ballad")
feeds = {"input_ids": [enc.ids], "attention_mask": [enc.attention_mask], "token_type_ids": [enc.type_ids]}
out = sess.run(None, {n: np.asarray(feeds[n], dtype=np.int64) for n in names})[0]
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0].split()[1]
print(time.perf_counter() - t0, int(hwm) / 1024, out.shape[1])
"""
# VmHWM, not ru_maxrss: a child started from this process reports the parent's ru_maxrss high-water mark


def cold_process(onnx_path: Path, tok_path: Path, max_length: int, repeats: int = 3) -> dict[str, float]:
    """A fresh Python process: import onnxruntime + tokenizers, load, encode one query; best of ``repeats``."""
    walls, rss = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        cmd = [sys.executable, "-c", COLD_PROBE, str(onnx_path), str(tok_path), str(max_length)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        walls.append(time.perf_counter() - t0)
        rss.append(float(res.stdout.split()[1]))
    return {"wall_s": min(walls), "peak_rss_mb": min(rss)}


def cost_table(default: Any, heads: dict[str, nn.Module], out: Path, *, rounds: int, per_round: int) -> dict[str, Any]:
    """Per text side: load time, size, one-query latency (eager torch / ONNX fp32 / ONNX int8), cold process."""
    torch.set_num_threads(1)
    sides: dict[str, dict[str, Any]] = {}
    encoders: dict[str, Callable[[str], np.ndarray]] = {}
    for name, head in heads.items():
        t0 = time.perf_counter()  # torch load time: the default's tower has the stock MiniLM's shape and files
        loaded = load_tower("minilm" if name == "default (shipped)" else name, default)
        load_torch = time.perf_counter() - t0
        tower = default.text_encoder if name == "default (shipped)" else loaded
        n_params = sum(p.numel() for p in tower.parameters()) + sum(p.numel() for p in head.parameters())
        onnx_path, tok_path, names, export_s = export_onnx(tower, head, out / "onnx" / name.split()[0])
        int8_path = quantize_int8(onnx_path)
        t0 = time.perf_counter()
        sess = _ort_session(onnx_path)
        load_ort = time.perf_counter() - t0
        sess8 = _ort_session(int8_path)
        e_torch, e_ort, e_int8 = _torch_encoder(tower, head), _ort_encoder(sess, tower, names), _ort_encoder(
            sess8, tower, names)  # fmt: skip
        ref = np.concatenate([e_torch(q) for q in TIMED_QUERIES])
        got = np.concatenate([e_ort(q) for q in TIMED_QUERIES])
        got8 = np.concatenate([e_int8(q) for q in TIMED_QUERIES])
        unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
        sides[name] = {
            "params": int(n_params),
            "onnx_mb": onnx_path.stat().st_size / 1e6,
            "onnx_int8_mb": int8_path.stat().st_size / 1e6,
            "load_torch_s": load_torch,
            "load_ort_s": load_ort,
            "export_s": export_s,
            "ort_max_abs_diff": float(np.abs(ref - got).max()),
            "int8_min_cos": float(np.min(np.sum(unit(ref) * unit(got8), axis=1))),
            "cold": cold_process(onnx_path, tok_path, int(tower.max_length)),
            "cold_int8": cold_process(int8_path, tok_path, int(tower.max_length)),
            "times": {"torch": [], "onnx": [], "onnx int8": []},
        }
        for enc_name, fn in (("torch", e_torch), ("onnx", e_ort), ("onnx int8", e_int8)):
            encoders[f"{name}|{enc_name}"] = fn
            for q in TIMED_QUERIES[:5]:
                fn(q)  # warm-up
    # interleaved rounds: every encoder sees the same load over the run
    for r in range(rounds):
        for key, fn in encoders.items():
            side, kind = key.split("|")
            times = sides[side]["times"][kind]
            for i in range(per_round):
                q = TIMED_QUERIES[(r * per_round + i) % len(TIMED_QUERIES)]
                t0 = time.perf_counter()
                fn(q)
                times.append(time.perf_counter() - t0)
    for s in sides.values():
        s["latency"] = {k: {"p50": statistics.median(v), "p99": float(np.percentile(v, 99)), "n": len(v)}
                        for k, v in s.pop("times").items()}  # fmt: skip
    return sides


def cost_markdown(sides: dict[str, Any]) -> str:
    lines = [
        "| text side | parameters | ONNX fp32 / int8 MB | load: torch / ORT s | one query p50 / p99 ms: torch "
        "| ONNX fp32 | ONNX int8 | int8 min cos to fp32 | cold process, fp32 / int8: s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in sides.items():
        cell = {k: f"{_ms(v['p50'])} / {_ms(v['p99'])}" for k, v in s["latency"].items()}
        lines.append(
            f"| {name} | {s['params'] / 1e6:.1f} M | {s['onnx_mb']:.0f} / {s['onnx_int8_mb']:.0f} "
            f"| {s['load_torch_s']:.2f} / {s['load_ort_s']:.2f} | {cell['torch']} | {cell['onnx']} "
            f"| {cell['onnx int8']} "
            f"| {s['int8_min_cos']:.3f} | {s['cold']['wall_s']:.2f} / {s['cold_int8']['wall_s']:.2f} "
            f"| {s['cold']['peak_rss_mb']:.0f} / {s['cold_int8']['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="data/corpus-big/manifest.jsonl", help="train / valid / test manifest")
    ap.add_argument("--small-corpus", default="data/corpus/manifest.jsonl", help="also scored on its test split")
    ap.add_argument("--towers", default=",".join(TOWERS))
    ap.add_argument("--out", default="runs/text_tower")
    ap.add_argument("--cost-only", action="store_true", help="only the cost table (heads read back from OUT)")
    ap.add_argument("--skip-cost", action="store_true")
    ap.add_argument("--embed-only", action="store_true", help="only embed the train / valid texts into OUT/cache")
    ap.add_argument("--report-only", action="store_true", help="only rewrite OUT/report.md from OUT/results.json")
    ap.add_argument("--max-epochs", type=int, default=150, help="head training: most epochs")
    ap.add_argument("--rounds", type=int, default=10, help="cost: interleaved rounds")
    ap.add_argument("--per-round", type=int, default=20, help="cost: queries per encoder per round")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)  # small ops on a shared 2-core machine: one thread is faster than two contending
    from musicsearch.models.loading import resolve_model

    out = Path(args.out)
    (out / "cache").mkdir(parents=True, exist_ok=True)
    default = resolve_model("default").model.eval()
    towers = [t for t in args.towers.split(",") if t]
    if args.embed_only:  # can run beside the audio embedding: the towers' cost is in these texts
        from musicsearch.data.manifest import read_manifest

        every = read_manifest(args.corpus)
        texts = [q for s, c in train_texts([t for t in every if t.split == "train"], N_STOCHASTIC, 1000) for q in s + c]
        texts += valid_queries([t for t in every if t.split == "valid"])[0]
        for name in towers:
            raw = RawTexts(name, load_tower(name, default), out / "cache")
            raw(texts)
            raw.save()
        return
    results_path = out / "results.json"
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.is_file() else {}

    if not (args.cost_only or args.report_only):
        big = audio_splits(default, args.corpus, ("train", "valid", "test"))
        small = audio_splits(default, args.small_corpus, ("test",))
        eval_splits = {"big": (big["test"], args.corpus), "small": (small["test"], args.small_corpus)}
        real = real_audio(default)
        results["setup"] = {
            "corpus": args.corpus, "small_corpus": args.small_corpus,
            "clips": {k: len(v.tracks) for k, v in big.items()} | {"small test": len(small["test"].tracks)},
            "torch": torch.__version__, "load": os.getloadavg(),
        }  # fmt: skip
        rows: dict[str, list[dict[str, Any]]] = {"default (shipped)": [evaluate(default, eval_splits, real)]}
        rows["default (shipped)"][0]["info"] = {"head": "shipped"}
        for key, runs in results.get("quality", {}).items():  # towers of an earlier call (--towers a subset)
            if key != "default (shipped)" and key.split()[0] not in towers:
                rows[key] = runs
        for name in towers:
            raw = RawTexts(name, load_tower(name, default), out / "cache")
            trials = {
                kind: train_head(raw, kind, big["train"], big["valid"], seed=0, max_epochs=args.max_epochs)
                for kind in HEADS
            }
            kind = max(trials, key=lambda k: trials[k][1]["valid_mrr"])
            runs = []
            for seed in SEEDS:
                head, info = (
                    trials[kind]
                    if seed == 0
                    else train_head(raw, kind, big["train"], big["valid"], seed=seed, max_epochs=args.max_epochs)
                )
                model = CandidateModel(default.config, raw, head).eval()
                res = evaluate(model, eval_splits, real)
                res["info"] = info | {"heads_tried": {k: v[1]["valid_mrr"] for k, v in trials.items()}}
                res["raw_synonyms"] = synonym_scores(raw)
                runs.append(res)
                if seed == 0:
                    with atomic_path(out / f"head-{name}.pt") as tmp:
                        torch.save({"kind": kind, "dim": raw.dim, "state": head.state_dict()}, tmp)
            raw.save()
            for key in [k for k in rows if k.split()[0] == name]:
                del rows[key]
            rows[f"{name} + trained {kind} head"] = runs
            del raw
        results["quality"] = rows
        write_json(results_path, results)

    if not (args.skip_cost or args.report_only):
        heads: dict[str, nn.Module] = {"default (shipped)": default.text_projector}
        for name in [t for t in towers if t == "mpnet"]:  # minilm-tuned / minilm cost what the shipped side costs
            saved = torch.load(out / f"head-{name}.pt", weights_only=True)
            head = make_head(saved["kind"], int(saved["dim"]), int(default.config.joint_dim))
            head.load_state_dict(saved["state"])
            heads[name] = head.eval()
        with torch.no_grad():
            results["cost"] = cost_table(default, heads, out, rounds=args.rounds, per_round=args.per_round)
        results["cost_load"] = os.getloadavg()
        write_json(results_path, results)

    md = []
    if "quality" in results:
        for key, what in (("big", f"{results['setup']['corpus']} test split"),
                          ("small", f"{results['setup']['small_corpus']} test split")):  # fmt: skip
            md.append(f"**{what}** ({results['quality']['default (shipped)'][0][key]['n_clips']} clips)\n")
            md.append(quality_table(results["quality"], key) + "\n")
        md.append(raw_synonym_table(results["quality"]) + "\n")
    if "cost" in results:
        md.append(cost_markdown(results["cost"]) + "\n")
    text = "\n".join(md)
    (out / "report.md").write_text(text, encoding="utf-8")
    print(text)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"load average {os.getloadavg()}; peak RSS of this process {rss:.0f} MB")


if __name__ == "__main__":
    main()
