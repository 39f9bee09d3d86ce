"""Issue 13: why genre agreement stops near 83 % (docs/results.md, "fifth round").

Three measurements on the real-window cache of ``experiments/soft_recipe.py --step features``, all with the
genre-agreement rule of ``soft_compare.py`` (the teachers' top genre word is the argmax of their merged
probabilities averaged over a recording's windows; the student's, the genre word nearest to the recording's mean
window embedding):

* **near ties**: how many recordings' second genre is within 70 / 80 / 90 % of their first, per split;
* **perfect students**: the agreement of an embedding that is the teachers' probability-weighted mixture of the
  text embeddings of all 100 tags, of the merged vocabulary, or of the 20 genre words alone (the issue's
  simulation), with ``--text-model``'s text tower;
* **heads**: the agreement of each ``--heads`` checkpoint on the train, valid and test recordings.

Usage::

    .venv/bin/python experiments/genre_ceiling.py --soft runs/soft2 \
        --heads default,runs/soft11/tg1.safetensors,runs/soft15/pg20p4.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soft_compare import GENRES, GENRES4


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--soft", default="runs/soft2", help="the real windows' cache (windows.jsonl, features/real)")
    ap.add_argument("--heads", default="default", help="comma-separated checkpoints or model names to score")
    ap.add_argument("--text-model", default="default", help="the model whose text tower the perfect students use")
    ap.add_argument("--feature-preset", default="musicnn-both-small", help="the tower the cache was computed with")
    ap.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = ap.parse_args()

    import torch

    from musicsearch.data.manifest import read_manifest
    from musicsearch.models.inference import embed_texts, normalize
    from musicsearch.models.loading import resolve_model
    from musicsearch.models.registry import PRESETS
    from musicsearch.teachers.musicnn import labels_for
    from musicsearch.teachers.pseudolabel import merge_probs, merged_vocabulary
    from musicsearch.teachers.tagtext import teacher_tag_texts
    from musicsearch.train.heads import head_inputs, load_features

    soft = Path(args.soft)
    windows = read_manifest(soft / "windows.jsonl")
    feats = load_features(windows, soft / "features" / "real")
    source, _ = PRESETS.get(args.feature_preset)()
    teachers = [labels_for(t) for t in source.backbones]
    vocab, columns = merged_vocabulary(teachers)
    merged = merge_probs([feats.probs[:, 50 * i : 50 * (i + 1)] for i in range(len(teachers))], columns, len(vocab))
    gcols = [vocab.index(g) for g in GENRES]
    g4 = [GENRES.index(g) for g in GENRES4]
    rows_of: dict[str, dict[str, list[int]]] = {}
    for i, w in enumerate(windows):
        rows_of.setdefault(str(w.split), {}).setdefault(str(w.metadata["track"]), []).append(i)
    teacher = {s: {r: merged[rows][:, gcols].mean(axis=0) for r, rows in recs.items()} for s, recs in rows_of.items()}
    report: dict[str, Any] = {"near_ties": {}, "perfect_students": {}, "heads": {}}

    print("| split | recordings | 2nd genre within 70 % | within 80 % | within 90 % |\n|---|---:|---:|---:|---:|")
    for split in ("train", "valid", "test"):
        p = np.sort(np.stack(list(teacher[split].values())), axis=1)
        ratio = p[:, -2] / p[:, -1]
        ties = {f"{int(100 * t)}": int((ratio > t).sum()) for t in (0.7, 0.8, 0.9)}
        report["near_ties"][split] = {"recordings": len(ratio), **ties}
        print(f"| {split} | {len(ratio)} | {ties['70']} | {ties['80']} | {ties['90']} |")

    text_model = resolve_model(args.text_model).model

    def text(words: list[str]) -> np.ndarray:
        return normalize(np.asarray(embed_texts(text_model, words), dtype=np.float32))

    genre_text = text(list(GENRES))
    mixtures = {
        "all 100 tags": (feats.probs, text(teacher_tag_texts(teachers))),
        "merged vocabulary": (merged, text(list(vocab))),
        "20 genre words": (merged[:, gcols], genre_text),
    }

    def agreement(emb: np.ndarray, split: str, g_text: np.ndarray) -> tuple[float, float]:
        hits, hits4 = [], []
        for r, rows in rows_of[split].items():
            sims = g_text @ normalize(emb[rows].mean(axis=0, keepdims=True))[0]
            want = teacher[split][r]
            hits.append(int(np.argmax(sims)) == int(np.argmax(want)))
            hits4.append(int(np.argmax(sims[g4])) == int(np.argmax(want[g4])))
        return 100 * float(np.mean(hits)), 100 * float(np.mean(hits4))

    print("\n| perfect student (test) | genre agreement | 4-genre |\n|---|---:|---:|")
    for name, (weights, tag_text) in mixtures.items():
        g, g4a = agreement(normalize(weights @ tag_text), "test", genre_text)
        report["perfect_students"][name] = {"genre": g, "genre4": g4a}
        print(f"| {name} | {g:.1f} | {g4a:.1f} |")

    print("\n| head | train | valid | test |\n|---|---:|---:|---:|")
    for ref in filter(None, args.heads.split(",")):
        model = resolve_model(ref).model.eval()
        with torch.no_grad():
            x = torch.from_numpy(head_inputs(source, model.config.audio, feats))
            emb = normalize(model.joint_from_features(x).numpy())
        g_text = normalize(np.asarray(embed_texts(model, list(GENRES)), dtype=np.float32))
        row = {split: agreement(emb, split, g_text)[0] for split in ("train", "valid", "test")}
        report["heads"][ref] = row
        print(f"| {ref} | {row['train']:.1f} | {row['valid']:.1f} | {row['test']:.1f} |")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
