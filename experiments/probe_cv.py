"""Issue 13: the VGMIDI probe under repeated cross-validation over all 204 pieces, paired across models.

The paper's probe scores one fixed split: 123 pieces train the head, 40 choose its configuration, 40-41 test it
(one piece = 2.5 points). A small change to an embedding can move which configuration wins on those 40 validation
pieces and so the score by several points, and seeds of the head (``experiments/probe_seeds.py``) do not vary
that split. Here every piece is tested once per repeat: repeated stratified k-fold (fold ``k`` tests, fold
``k + 1`` validates, the rest train), the paper's MLP grid (``musicsearch.eval.probing.run_probe``) and a
deterministic logistic regression (scikit-learn, C = 1) on the L2-normalised embeddings. Every model sees the same
folds and seeds, so the per-fold differences against the first model are paired; the table gives their mean and
standard error.

Usage::

    .venv/bin/python experiments/probe_cv.py --models default,runs/soft17/wise20.safetensors \
        --vgmidi ../shared/data/vgmidi --folds 5 --repeats 2 --out runs/compare6/probe_cv.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distill_compare import VGMIDI


def fold_splits(labels: np.ndarray, *, folds: int, repeats: int, seed: int) -> list[tuple[np.ndarray, ...]]:
    """``(train, valid, test)`` index arrays: for each repeat, a stratified ``folds``-way partition in which fold
    ``k`` tests and fold ``(k + 1) % folds`` validates."""
    from sklearn.model_selection import StratifiedKFold

    out = []
    for r in range(repeats):
        parts = [test for _, test in StratifiedKFold(folds, shuffle=True, random_state=seed + r).split(labels, labels)]
        for k in range(folds):
            valid = parts[(k + 1) % folds]
            train = np.concatenate([parts[j] for j in range(folds) if j not in (k, (k + 1) % folds)])
            out.append((np.sort(train), np.sort(valid), np.sort(parts[k])))
    return out


def score_model(x: np.ndarray, labels: np.ndarray, splits: list[tuple[np.ndarray, ...]]) -> dict[str, list[float]]:
    """Per-fold test accuracy of the paper's MLP probe and of logistic regression."""
    from sklearn.linear_model import LogisticRegression

    from musicsearch.eval.probing import run_probe

    x = x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)
    mlp, logreg = [], []
    for i, (tr, va, te) in enumerate(splits):
        res = run_probe(x[tr], labels[tr], x[va], labels[va], x[te], labels[te], task="multiclass",
                        metric="accuracy", num_outputs=int(labels.max()) + 1, seed=i)  # fmt: skip
        mlp.append(float(res.test_scores["accuracy"]))
        fit = np.concatenate([tr, va])
        clf = LogisticRegression(C=1.0, max_iter=5000).fit(x[fit], labels[fit])
        logreg.append(float(clf.score(x[te], labels[te])))
    return {"mlp": mlp, "logreg": logreg}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, help="comma-separated model names or checkpoints; the first is the "
                    "reference of the paired differences")  # fmt: skip
    ap.add_argument("--vgmidi", required=True, help="the VGMIDI folder")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write every fold's accuracies as JSON here")
    args = ap.parse_args()

    from musicsearch.eval.suites import SuiteOptions, _dataset_embeddings, _load
    from musicsearch.models.loading import resolve_model

    opts = SuiteOptions(datasets=tuple((d, args.vgmidi) for d in VGMIDI))
    datasets = _load(opts)
    splits = {ds.name: fold_splits(ds.labels, folds=args.folds, repeats=args.repeats, seed=args.seed)
              for ds in datasets}  # fmt: skip
    runs: dict[str, dict[str, dict[str, list[float]]]] = {}
    refs = [r for r in args.models.split(",") if r]
    print("| model | MLP probe Q / V / A | vs first (paired, ± s.e.) | logistic Q / V / A | vs first (paired) |")
    print("|---|---|---|---|---|")
    for ref in refs:
        model = resolve_model(ref).model
        runs[ref] = {}
        for ds in datasets:
            x, ok, _ = _dataset_embeddings(model, ds, None, opts)
            if not ok.all():
                raise SystemExit(f"{ref}: {int((~ok).sum())} VGMIDI pieces failed to embed")
            runs[ref][ds.name] = score_model(x, ds.labels, splits[ds.name])
        cells: list[str] = []
        for kind in ("mlp", "logreg"):
            cells.append(" / ".join(f"{100 * np.mean(runs[ref][d][kind]):.1f}" for d in VGMIDI))
            diffs = [100 * (np.array(runs[ref][d][kind]) - np.array(runs[refs[0]][d][kind])) for d in VGMIDI]
            cells.append(" / ".join(f"{v.mean():+.1f} ± {v.std(ddof=1) / np.sqrt(v.size):.1f}" for v in diffs))
        print(f"| {ref} | {' | '.join(cells)} |", flush=True)
    if args.out:
        payload: dict[str, Any] = {"folds": args.folds, "repeats": args.repeats, "seed": args.seed, "runs": runs}
        Path(args.out).write_text(json.dumps(payload, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
