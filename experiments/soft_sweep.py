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
  mean.

Usage::

    .venv/bin/python experiments/soft_sweep.py --soft runs/soft2 \
        --configs "nosoft:soft_weight=0;w03:soft_weight=0.3;w1:soft_weight=1" --preset musicnn-both-small-residual
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
from soft_compare import GENRES, teacher_genres

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


def score_cached(model: Any, soft_dir: Path, windows: list[Any], feats: Any, cols: np.ndarray) -> dict[str, Any]:
    """Genre agreement and teacher-tag ROC/PR on the test windows, from cached features."""
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
        emb = normalize(model.joint_from_features(torch.from_numpy(feats.features[test][:, cols])).numpy())
    genre_text = normalize(embed_texts(model, list(GENRES)))
    recs, _, teacher_top = teacher_genres(soft_dir)
    hits, confusion = [], {}
    for r, t_top in zip(recs, teacher_top):
        rows = [k for k, i in enumerate(test) if windows[i].metadata["track"] == r]
        s_top = int(np.argmax(normalize(emb[rows].mean(axis=0, keepdims=True)) @ genre_text.T))
        hits.append(t_top == s_top)
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
        "tag_roc": float(np.mean(roc)),
        "tag_pr": float(np.mean(pr)),
        "tags_scored": len(roc),
        "confusion": dict(sorted(confusion.items(), key=lambda kv: -kv[1])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--soft", default="runs/soft2")
    ap.add_argument("--base", default="default")
    ap.add_argument("--preset", default="musicnn-both-small-residual")
    ap.add_argument("--feature-preset", default="musicnn-both-small")
    ap.add_argument("--configs", default="nosoft:soft_weight=0;w1:soft_weight=1")
    ap.add_argument("--no-corpus", action="store_true")
    ap.add_argument("--score-base", action="store_true", help="also score the base model's own tower (cached)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from musicsearch.data.manifest import read_manifest
    from musicsearch.models.loading import resolve_model
    from musicsearch.models.registry import PRESETS
    from musicsearch.train.heads import HeadTrainConfig, build_tower, feature_columns, load_features, train_head

    soft = Path(args.soft)
    base = resolve_model(args.base).model
    real = read_manifest(soft / "windows.jsonl")
    feats = load_features(real, soft / "features" / "real")
    cfile = soft / "corpus_windows.jsonl"
    corpus = read_manifest(cfile) if cfile.is_file() and not args.no_corpus else []
    c_feats = load_features(corpus, soft / "features" / "corpus") if corpus else None
    source_audio, _ = PRESETS.get(args.feature_preset)()
    results: dict[str, Any] = {}
    report = soft / "sweep.json"
    if report.is_file():
        results = json.loads(report.read_text(encoding="utf-8"))
    if args.score_base and "base-untrained-head" not in results:
        tower = build_tower(args.preset, base)  # zero-initialised head: the base model's own tower alone
        cols = feature_columns(source_audio, tower.config.audio)
        results["base-untrained-head"] = score_cached(tower, soft, real, feats, cols)
    shared_text: dict[str, torch.Tensor] = {}  # the text side is frozen and the same for every head
    for name, overrides in parse_configs(args.configs).items():
        if name in results:
            log.info("%s: already scored", name)
            continue
        preset = str(overrides.pop("preset", args.preset))
        cfg = HeadTrainConfig(preset=preset, feature_preset=args.feature_preset, **overrides)
        summary = train_head(cfg, base, real, feats, corpus, c_feats, out_dir=soft, name=name, text_cache=shared_text)
        model = resolve_model(summary["checkpoint"]).model
        cols = feature_columns(source_audio, model.config.audio)
        results[name] = {"config": dataclasses.asdict(cfg), **score_cached(model, soft, real, feats, cols),
                         "best_epoch": summary["best_epoch"], "seconds": summary["seconds"]}  # fmt: skip
        report.write_text(json.dumps(results, indent=1), encoding="utf-8")
        log.info("%s: %s", name, {k: v for k, v in results[name].items() if k != "config"})
    print("| config | recordings | genre agreement | teacher-tag ROC / PR |")
    print("|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['recordings']} | {100 * r['genre_agreement']:.1f} "
              f"| {100 * r['tag_roc']:.1f} / {100 * r['tag_pr']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
