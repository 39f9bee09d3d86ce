"""Issue 13: train several heads on the cached musicnn features and score each on the held-out real recordings
from the cache alone (no audio decoded, no backbone run), to choose what to evaluate in full.

For every configuration (``--configs``, ``NAME:key=value,key=value``; keys of
:class:`musicsearch.train.heads.HeadTrainConfig`), a head is trained by :func:`musicsearch.train.heads.train_head`
on the cache of ``experiments/soft_recipe.py --step features`` and scored on the test recordings' windows:

* genre agreement: the student's top genre word (cosine of the recording's mean window embedding to the text
  embeddings of ``soft_compare.GENRES``) against the teachers' top genre (the merged probabilities averaged over
  the recording's windows), share of recordings;
* tag ROC-AUC / PR-AUC: per merged teacher tag with at least one positive test window (the teachers' calibrated
  confident tags, as ``real_test.jsonl``), the student's cosine to the tag's text ranks the test windows; macro
  mean;
* 4-genre agreement: as genre agreement over ``classical`` / ``rock`` / ``electronic`` / ``pop`` only (the
  teachers' top among those four; the closest visible proxy of the issue's held-out genre test);
* with a corpus cache of ``soft_recipe.py --corpus-per-clip N`` (``--corpus-dir``, holding
  ``corpus_test_windows.jsonl``): the corpus test split scored as the ``corpus`` eval suite scores it (3 windows
  a clip, mean embedding; top-50 tag ROC/PR, sentence R@1 of one caption a clip, unseen-word ROC), from the
  cached features of those windows.

``--mrr`` adds the eight shipped real recordings' MRR (``distill_compare.librosa_mrr``; decodes their audio and
runs the whole tower, about a minute a head). ``--vgmidi DIR`` adds VGMIDI zero-shot accuracy (quadrant, valence,
arousal; the test split, as ``soft_compare.py`` scores it, without the probes; ``--vgmidi-split all`` scores all 204
pieces instead, five times the test split and so less noisy, under ``vgmidi_zeroshot_all``). ``--score NAME=CHECKPOINT``
scores an existing head (e.g. ``r10=runs/soft2/r10.safetensors``) the same way.

Usage::

    .venv/bin/python experiments/soft_sweep.py --soft runs/soft2 \
        --configs "nosoft:soft_weight=0;w03:soft_weight=0.3;w1:soft_weight=1" --preset musicnn-both-small-residual
    # round three: the real cache of runs/soft2, the 4-windows-a-clip corpus cache and the heads in runs/soft3
    .venv/bin/python experiments/soft_sweep.py --soft runs/soft2 --corpus-dir runs/soft3 --out runs/soft3 \
        --score r10=runs/soft2/r10.safetensors --configs "c3:soft_weight=0.3,rank_weight=10,corpus_weight=3"
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soft_compare import GENRES, GENRES4, teacher_genres

log = logging.getLogger("soft_sweep")


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_configs(spec: str) -> dict[str, dict[str, Any]]:
    """``"a:k=v,k=v;b:k=v"`` (configs separated by ``;``) -> ``{name: {key: value}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in filter(None, (s.strip() for s in spec.split(";"))):
        name, _, rest = item.partition(":")
        out[name] = {k: _value(v) for k, _, v in (kv.partition("=") for kv in filter(None, rest.split(",")))}
    return out


def score_cached(model: Any, soft_dir: Path, windows: list[Any], feats: Any, inputs: np.ndarray) -> dict[str, Any]:
    """Genre agreement and teacher-tag ROC/PR on the test windows, from cached features (``inputs``: the head's
    input rows of every window, :func:`musicsearch.train.heads.head_inputs`)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from musicsearch.models.inference import embed_texts, normalize
    from musicsearch.teachers.musicnn import MSD_LABELS, MTT_LABELS
    from musicsearch.teachers.pseudolabel import calibrate_thresholds, merge_probs, merged_vocabulary

    vocab, columns = merged_vocabulary([MSD_LABELS, MTT_LABELS])
    merged = merge_probs([feats.probs[:, :50], feats.probs[:, 50:100]], columns, len(vocab))
    thresholds = calibrate_thresholds(merged, floor=0.2, ceiling=0.5)
    test = np.array([i for i, w in enumerate(windows) if w.split == "test"])
    model.eval()
    with torch.no_grad():
        emb = normalize(model.joint_from_features(torch.from_numpy(inputs[test])).numpy())
    genre_text = normalize(embed_texts(model, list(GENRES)))
    recs, _, teacher_top = teacher_genres(soft_dir)
    _, _, teacher_top4 = teacher_genres(soft_dir, GENRES4)
    g4 = [GENRES.index(g) for g in GENRES4]
    hits, hits4, confusion = [], [], {}
    for r, t_top, t4 in zip(recs, teacher_top, teacher_top4):
        rows = [k for k, i in enumerate(test) if windows[i].metadata["track"] == r]
        sims_g = (normalize(emb[rows].mean(axis=0, keepdims=True)) @ genre_text.T)[0]
        s_top = int(np.argmax(sims_g))
        hits.append(t_top == s_top)
        hits4.append(int(t4) == int(np.argmax(sims_g[g4])))
        key = f"{GENRES[t_top]}->{GENRES[s_top]}"
        confusion[key] = confusion.get(key, 0) + 1
    labels = merged[test] >= thresholds
    tag_text = normalize(embed_texts(model, vocab))
    sims = emb @ tag_text.T
    roc, pr = [], []
    for k in range(len(vocab)):
        y = labels[:, k]
        if 0 < y.sum() < y.size:
            roc.append(roc_auc_score(y, sims[:, k]))
            pr.append(average_precision_score(y, sims[:, k]))
    return {
        "recordings": len(recs),
        "test_windows": int(test.size),
        "genre_agreement": float(np.mean(hits)),
        "genre4_agreement": float(np.mean(hits4)),
        "tag_roc": float(np.mean(roc)),
        "tag_pr": float(np.mean(pr)),
        "tags_scored": len(roc),
        "confusion": dict(sorted(confusion.items(), key=lambda kv: -kv[1])),
    }


def score_corpus_cached(model: Any, test_windows: list[Any], inputs: np.ndarray,
                        manifest: str) -> dict[str, Any]:  # fmt: skip
    """The ``corpus`` eval suite's figures on its test split from cached window features: each clip's embedding
    is the mean of its windows' (the suite's aggregation), then the suite's own metric functions."""
    from musicsearch.data.manifest import read_manifest, tag_vocabulary
    from musicsearch.eval.retrieval import (
        evaluate_sentence_retrieval,
        evaluate_tag_retrieval,
        evaluate_unseen_queries,
        select_caption_pairs,
        unseen_queries_from_corpus,
    )

    every = read_manifest(manifest)
    tracks = [t for t in every if t.split == "test"]
    model.eval()
    with torch.no_grad():
        emb = model.joint_from_features(torch.from_numpy(inputs)).numpy()
    clip_of = [str(w.metadata["clip"]) for w in test_windows]
    x = np.stack([emb[[k for k, c in enumerate(clip_of) if c == t.track_id]].mean(axis=0) for t in tracks])
    top50 = tag_vocabulary(every)[:50]
    tags = evaluate_tag_retrieval(model, x, [t.tags for t in tracks], top50)
    sentence = evaluate_sentence_retrieval(model, x, select_caption_pairs(tracks, n=1000, seed=0))
    unseen_file = Path(manifest).parent / "corpus.json"
    unseen = (evaluate_unseen_queries(model, x, [t.tags for t in tracks], unseen_queries_from_corpus(unseen_file))
              if unseen_file.is_file() else {})  # fmt: skip
    return {
        "corpus_clips": len(tracks),
        "corpus_top50_roc": float(tags["roc_auc"]),
        "corpus_top50_pr": float(tags["pr_auc"]),
        "corpus_r1": float(sentence["R@1"]),
        "corpus_unseen_roc": float(unseen["roc_auc"]) if unseen.get("roc_auc") is not None else None,
    }


def _cell(r: dict[str, Any], key: str) -> str:
    return f"{100 * r[key]:.1f}" if r.get(key) is not None else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--soft", default="runs/soft2", help="the real windows' cache (windows.jsonl, features/real)")
    ap.add_argument("--corpus-dir", default=None, help="the corpus windows' cache (default --soft)")
    ap.add_argument("--out", default=None, help="where heads and sweep.json go (default --soft)")
    ap.add_argument("--corpus", default="data/corpus/manifest.jsonl", help="the corpus manifest (its test split)")
    ap.add_argument("--score", default="", help="comma-separated NAME=CHECKPOINT: existing heads to score too")
    ap.add_argument("--base", default="adapted", help="the model whose text side and own tower the heads keep")
    ap.add_argument("--preset", default="musicnn-both-small-residual")
    ap.add_argument("--feature-preset", default="musicnn-both-small")
    ap.add_argument("--configs", default="nosoft:soft_weight=0;w1:soft_weight=1")
    ap.add_argument("--no-corpus", action="store_true")
    ap.add_argument("--mrr", action="store_true", help="also the eight real recordings' MRR (runs the tower)")
    ap.add_argument("--vgmidi", default=None, help="also VGMIDI zero-shot accuracy (the VGMIDI folder)")
    ap.add_argument("--vgmidi-split", default="test", choices=("test", "all"),
                    help="the VGMIDI pieces zero-shot scores (all: every piece; default: the test split)")  # fmt: skip
    ap.add_argument("--score-base", action="store_true", help="also score the base model's own tower (cached)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from musicsearch.data.manifest import read_manifest
    from musicsearch.models.loading import resolve_model
    from musicsearch.models.registry import PRESETS
    from musicsearch.train.heads import HeadTrainConfig, build_tower, head_inputs, load_features, train_head

    soft = Path(args.soft)
    cdir = Path(args.corpus_dir or args.soft)
    out = Path(args.out or args.soft)
    out.mkdir(parents=True, exist_ok=True)
    base = resolve_model(args.base).model
    real = read_manifest(soft / "windows.jsonl")
    feats = load_features(real, soft / "features" / "real")
    cfile = cdir / "corpus_windows.jsonl"
    corpus = read_manifest(cfile) if cfile.is_file() and not args.no_corpus else []
    c_feats = load_features(corpus, cdir / "features" / "corpus") if corpus else None
    tfile = cdir / "corpus_test_windows.jsonl"
    c_test = read_manifest(tfile) if tfile.is_file() else []
    t_feats = load_features(c_test, cdir / "features" / "corpus_test") if c_test else None
    source_audio, _ = PRESETS.get(args.feature_preset)()

    def score(model: Any) -> dict[str, Any]:
        res = score_cached(model, soft, real, feats, head_inputs(source_audio, model.config.audio, feats))
        if t_feats is not None:
            t_inputs = head_inputs(source_audio, model.config.audio, t_feats)
            res.update(score_corpus_cached(model, c_test, t_inputs, args.corpus))
        if args.mrr:
            from distill_compare import librosa_mrr

            m = librosa_mrr(model)
            res["mrr"], res["mrr_ranks"] = m["mrr"], m["ranks"]
        if args.vgmidi:
            from distill_compare import VGMIDI

            from musicsearch.eval.suites import SuiteOptions, run_suite

            opts = SuiteOptions(datasets=tuple((d, args.vgmidi) for d in VGMIDI), seed=0,
                                zeroshot_split=args.vgmidi_split)  # fmt: skip
            zs = run_suite(model, "zeroshot", opts)["results"]["zeroshot"]
            res[vgmidi_key] = {d: zs[d]["accuracy"] for d in VGMIDI}
        return res

    vgmidi_key = "vgmidi_zeroshot" if args.vgmidi_split == "test" else "vgmidi_zeroshot_all"
    results: dict[str, Any] = {}
    report = out / "sweep.json"
    if report.is_file():
        results = json.loads(report.read_text(encoding="utf-8"))
    if args.score_base and "base-untrained-head" not in results:
        tower = build_tower(args.preset, base)  # zero-initialised head: the base model's own tower alone
        results["base-untrained-head"] = score(tower)
    for item in filter(None, args.score.split(",")):
        name, _, ref = item.partition("=")
        if (
            name not in results
            or (args.mrr and "mrr" not in results[name])
            or (args.vgmidi and vgmidi_key not in results[name])
        ):
            results[name] = {**results.get(name, {}), "checkpoint": ref, **score(resolve_model(ref).model)}
            report.write_text(json.dumps(results, indent=1), encoding="utf-8")
    shared_text: dict[str, torch.Tensor] = {}  # the text side is frozen and the same for every head
    for name, overrides in parse_configs(args.configs).items():
        if name in results:
            log.info("%s: already scored", name)
            continue
        preset = str(overrides.pop("preset", args.preset))
        cfg = HeadTrainConfig(preset=preset, feature_preset=args.feature_preset, **overrides)
        summary = train_head(cfg, base, real, feats, corpus, c_feats, out_dir=out, name=name, text_cache=shared_text)
        model = resolve_model(summary["checkpoint"]).model
        results[name] = {"config": dataclasses.asdict(cfg), **score(model),
                         "best_epoch": summary["best_epoch"], "seconds": summary["seconds"]}  # fmt: skip
        report.write_text(json.dumps(results, indent=1), encoding="utf-8")
        log.info("%s: %s", name, {k: v for k, v in results[name].items() if k != "config"})
    print("| config | recordings | genre agreement | 4-genre agreement | teacher-tag ROC / PR | corpus top-50 "
          "ROC / PR | corpus sentence R@1 | corpus unseen ROC | 8 recordings MRR | train s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        mrr = f"{r['mrr']:.3f}" if "mrr" in r else "-"
        print(f"| {name} | {r['recordings']} | {_cell(r, 'genre_agreement')} | {_cell(r, 'genre4_agreement')} "
              f"| {_cell(r, 'tag_roc')} / {_cell(r, 'tag_pr')} "
              f"| {_cell(r, 'corpus_top50_roc')} / {_cell(r, 'corpus_top50_pr')} | {_cell(r, 'corpus_r1')} "
              f"| {_cell(r, 'corpus_unseen_roc')} | {mrr} | {r.get('seconds', '-')} |")  # fmt: skip


if __name__ == "__main__":
    main()
