"""Issue 15, part 3: what the int8 ONNX export of a model costs in retrieval quality, against its float32 export
and torch, all three measured in one run with the same metric functions.

Each way embeds the same windows and texts: ``torch`` (the model in torch), ``onnx`` (its float32 export),
``int8`` (both towers of the export with ONNX Runtime dynamic int8 quantisation, ``musicsearch export --onnx
--int8``), and each tower alone in int8 (``int8 text``: what a query would run with an int8 text tower beside
float32 indexing); both exports are made here if the ONNX cache does not hold them. Scores, with
:mod:`musicsearch.eval` functions:

* the corpus benchmark (``--corpus``, on ``--splits``): tag retrieval ROC-AUC / PR-AUC over the manifest's 50 most
  frequent tags, sentence retrieval R@1 / R@10 (one caption per track, seeded), unseen-word queries' ROC-AUC
  (from ``corpus.json``); track = mean of 3 evenly placed window embeddings, as ``musicsearch eval`` does;
* the eight real recordings shipped in ``musicsearch/assets/librosa_music``: each the answer to one free-text
  query among the eight, mean reciprocal rank (8 windows a recording; ``experiments/distill_compare.py``'s
  queries).

The torch numbers are also computed by ``run_suite`` (the ``musicsearch eval`` path) and must agree with this
script's torch numbers: that checks the glue the ONNX ways go through.

Usage::

    .venv/bin/python experiments/int8_cost.py --model default --corpus data/corpus/manifest.jsonl --splits test,all
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distill_compare import QUERIES  # the eight recordings' queries, written from their descriptions

from musicsearch.data.manifest import Track, read_manifest, tag_vocabulary
from musicsearch.eval import metrics
from musicsearch.eval.embeddings import WindowPolicy, load_track_audio
from musicsearch.eval.retrieval import label_matrix, select_caption_pairs, unseen_queries_from_corpus
from musicsearch.models.inference import normalize

TEXT_BATCH = 64  # texts per pass, as the eval functions batch them
AUDIO_BATCH = 32  # windows per pass, as embed_tracks does

Embed = Callable[[Any], np.ndarray]


_WINDOWS: dict[tuple[str, str, int, int], np.ndarray] = {}  # decoded once, embedded by every way


def track_embeddings(embed_audio: Embed, tracks: Sequence[Track], policy: WindowPolicy) -> np.ndarray:
    """``(N, D)`` float32: each track's mean raw window embedding (``policy``'s windows), as ``embed_tracks``."""
    out = []
    for t in tracks:
        key = (t.track_id, t.audio_path, policy.n_windows, policy.window_samples)
        if key not in _WINDOWS:
            _WINDOWS[key] = policy.windows(load_track_audio(t, sample_rate=policy.sample_rate))  # (k, T)
        windows = _WINDOWS[key]
        parts = [embed_audio(windows[i : i + AUDIO_BATCH]) for i in range(0, len(windows), AUDIO_BATCH)]
        out.append(np.concatenate(parts).astype(np.float64).mean(axis=0))
    return np.asarray(out, dtype=np.float32)


def text_embeddings(embed_text: Embed, texts: Sequence[str]) -> np.ndarray:
    """``(N, D)`` float32 raw text embeddings, in batches of :data:`TEXT_BATCH`."""
    items = list(texts)
    return np.concatenate([embed_text(items[i : i + TEXT_BATCH]) for i in range(0, len(items), TEXT_BATCH)])


def corpus_scores(
    embed_audio: Embed, embed_text: Embed, manifest: Path, split: str, window_samples: int
) -> dict[str, float]:
    """The corpus benchmark's headline numbers for one way (see the module notes)."""
    every = read_manifest(manifest)
    tracks = every if split == "all" else [t for t in every if t.split == split]
    x = track_embeddings(embed_audio, tracks, WindowPolicy(n_windows=3, window_samples=window_samples))
    xn = normalize(x)
    vocab = tag_vocabulary(every)[:50]
    track_tags = [t.tags for t in tracks]
    tags = metrics.evaluate_tagging(
        label_matrix(track_tags, vocab), xn @ normalize(text_embeddings(embed_text, vocab)).T
    )
    pairs = select_caption_pairs(tracks, n=1000, seed=0, policy="random")
    caps = normalize(text_embeddings(embed_text, [p.caption for p in pairs]))
    sent = metrics.evaluate_retrieval(caps @ xn[[p.index for p in pairs]].T, ties="pessimistic")
    out = {
        "tags_roc": tags["roc_auc"],
        "tags_pr": tags["pr_auc"],
        "sentence_R@1": sent["R@1"],
        "sentence_R@10": sent["R@10"],
        "n_tracks": float(len(tracks)),
    }
    beside = manifest.parent / "corpus.json"
    if beside.is_file():
        unseen = unseen_queries_from_corpus(beside)
        texts = list(unseen)
        sets = [set(t) for t in track_tags]
        y = np.array([[float(any(tag in s for tag in unseen[q])) for q in texts] for s in sets], np.float32)
        u = metrics.evaluate_tagging(y, xn @ normalize(text_embeddings(embed_text, texts)).T)
        out["unseen_roc"] = u["roc_auc"]
    return out


def real_mrr(embed_audio: Embed, embed_text: Embed, window_samples: int) -> dict[str, float]:
    """Mean reciprocal rank (and top-1) of the eight librosa_music recordings for their queries."""
    from musicsearch.assets import librosa_music_dir

    stems = sorted(QUERIES)
    tracks = [Track(s, str(librosa_music_dir() / f"{s}.ogg")) for s in stems]
    audio = normalize(track_embeddings(embed_audio, tracks, WindowPolicy(n_windows=8, window_samples=window_samples)))
    sims = normalize(text_embeddings(embed_text, [QUERIES[s] for s in stems])) @ audio.T
    ranks = [int((sims[i] > sims[i, i]).sum()) + 1 for i in range(len(stems))]
    return {"mrr": float(np.mean([1.0 / r for r in ranks])), "top1": float(np.mean([r == 1 for r in ranks]))}


def ways(model_name: str) -> tuple[Any, dict[str, tuple[Embed, Embed]], dict[str, Any]]:
    """(torch model, way -> (audio, text) embedding functions, notes on the exports)."""
    from musicsearch.models.inference import embed_texts, embed_windows
    from musicsearch.models.loading import resolve_model
    from musicsearch.models.onnx import ExportedModel, export_dir_for, export_onnx

    resolved = resolve_model(model_name)
    model, sha = resolved.model, resolved.sha256
    fns: dict[str, tuple[Embed, Embed]] = {
        "torch": (
            lambda w: embed_windows(model, w, batch_size=AUDIO_BATCH),
            lambda t: embed_texts(model, t, batch_size=TEXT_BATCH),
        )
    }
    notes: dict[str, Any] = {}
    exports = {}
    for name, int8 in (("onnx", False), ("int8", True)):
        folder = export_dir_for(sha, int8=int8)
        if not (folder / "export.json").exists():
            export_onnx(model, folder, weights_sha256=sha, source=model_name, int8=int8)
        exports[name] = ExportedModel.open(folder, weights_sha256=sha, threads=1)
        notes[name] = {
            "folder": str(folder),
            "MB": {f: round((folder / f).stat().st_size / 1e6, 1) for f in ("text.onnx", "audio.onnx")},
        }
    f32, i8 = exports["onnx"], exports["int8"]
    fns["onnx"] = (f32.encode_audio, f32.encode_text)
    fns["int8 text"] = (f32.encode_audio, i8.encode_text)  # what the search path would run: int8 text only
    fns["int8 audio"] = (i8.encode_audio, f32.encode_text)
    fns["int8"] = (i8.encode_audio, i8.encode_text)
    return model, fns, notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--corpus", default="data/corpus/manifest.jsonl")
    ap.add_argument(
        "--splits",
        default="test,all",
        help="comma-separated manifest splits (all: every clip); every way on the first, float32 and int8 text "
        "on the others",
    )
    ap.add_argument("--out", default=None, help="also write the results here as JSON")
    args = ap.parse_args()
    from musicsearch.eval.suites import SuiteOptions, run_suite

    t0 = time.perf_counter()
    model, fns, notes = ways(args.model)
    window_samples = int(model.config.audio.window_samples)
    manifest = Path(args.corpus)
    results: dict[str, dict[str, Any]] = {w: {} for w in fns}
    for n, split in enumerate(s.strip() for s in args.splits.split(",") if s.strip()):
        for w, (audio, text) in fns.items():
            if n > 0 and w not in ("onnx", "int8 text"):
                continue  # later splits: the decision's two ways only (the CPU is shared)
            results[w][split] = corpus_scores(audio, text, manifest, split, window_samples)
            print(f"[{w}] {split}: {results[w][split]}", file=sys.stderr, flush=True)
        if n > 0:
            continue
        # the eval path's own numbers for torch on the first split: the glue above must reproduce them
        suite = run_suite(
            model, "corpus", SuiteOptions(manifest=str(manifest), split=split, n_windows=3, use_cache=False)
        )["results"]["corpus"]
        ref = {
            "tags_roc": suite["tags"]["top50"]["roc_auc"],
            "sentence_R@1": suite["sentence"]["R@1"],
            "unseen_roc": suite.get("unseen", {}).get("roc_auc"),
        }
        for key, want in ref.items():
            got = results["torch"][split].get(key)
            if want is not None and got is not None and abs(got - want) > 1e-4:
                raise SystemExit(f"{split} {key}: this script's torch {got} differs from run_suite's {want}")
        results["torch"][split]["checked_against_run_suite"] = ref
    for w, (audio, text) in fns.items():
        results[w]["librosa8"] = real_mrr(audio, text, window_samples)
    print(f"\nmodel {args.model}; corpus {manifest}; {time.perf_counter() - t0:.0f} s; exports: {json.dumps(notes)}\n")
    print("| way | split | tracks | tags top-50 ROC-AUC | PR-AUC | sentence R@1 | R@10 | unseen ROC-AUC |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for w, by_split in results.items():
        for split, r in by_split.items():
            if split == "librosa8":
                continue
            unseen = f"{100 * r['unseen_roc']:.2f}" if r.get("unseen_roc") is not None else "-"
            print(
                f"| {w} | {split} | {r['n_tracks']:.0f} | {100 * r['tags_roc']:.2f} | {100 * r['tags_pr']:.2f} "
                f"| {100 * r['sentence_R@1']:.2f} | {100 * r['sentence_R@10']:.2f} | {unseen} |"
            )
    print("\n| way | eight real recordings: MRR | top-1 |\n|---|---:|---:|")
    for w, by_split in results.items():
        print(f"| {w} | {by_split['librosa8']['mrr']:.3f} | {by_split['librosa8']['top1']:.3f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"results": results, "exports": notes}, indent=1))


if __name__ == "__main__":
    main()
