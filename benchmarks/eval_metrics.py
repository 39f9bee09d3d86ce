"""Cost of the evaluation metrics and of probing on this CPU, per 1,000 tracks; prints a table.

    .venv/bin/python benchmarks/eval_metrics.py [--tracks 1000] [--repeats 3] [--no-grid]

Rows: macro ROC-AUC + PR-AUC over 50 and 1,054 tags (ours, and scikit-learn for reference), best-threshold F1
over 1,054 tags, sentence-retrieval ranks and summaries on a tracks x tracks score matrix, probing epochs per batch
size on (tracks x 128) embeddings, and one full paper grid (12 MLP configs, early stopping) on separable data.
Times are the best of ``--repeats`` runs (wall clock, one process).
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from musicsearch.eval import metrics
from musicsearch.eval.probing import ProbeConfig, paper_grid, run_probe, train_probe


def best_of(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-grid", action="store_true", help="skip the full probing grid")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n = args.tracks
    rng = np.random.default_rng(args.seed)
    per_k = 1000.0 / n
    rows: list[tuple[str, str, float, float]] = []  # name, shape, seconds, seconds per 1,000 tracks

    from sklearn.metrics import average_precision_score, roc_auc_score

    for c in (50, 1054):
        y = (rng.random((n, c)) < 0.05).astype(np.int64)
        y[0] = 1  # every column has a positive and (almost surely) a negative
        s = rng.normal(size=(n, c)) + y
        t = best_of(lambda y=y, s=s: (metrics.macro_roc_auc(y, s), metrics.macro_pr_auc(y, s)), args.repeats)
        rows.append((f"tag ROC-AUC + PR-AUC, {c} tags", f"{n}x{c}", t, t * per_k))
        t = best_of(
            lambda y=y, s=s: (roc_auc_score(y, s, average="macro"), average_precision_score(y, s, average="macro")),
            1,
        )
        rows.append((f"  (scikit-learn, same, {c} tags)", f"{n}x{c}", t, t * per_k))
    t = best_of(lambda y=y, s=s: metrics.macro_best_f1(y, s), args.repeats)
    rows.append(("best-threshold F1, 1054 tags", f"{n}x1054", t, t * per_k))

    q = rng.normal(size=(n, 128)).astype(np.float32)
    a = (q + rng.normal(size=(n, 128)).astype(np.float32) * 3).astype(np.float32)
    sim = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (a / np.linalg.norm(a, axis=1, keepdims=True)).T
    t = best_of(lambda: metrics.evaluate_retrieval(sim), args.repeats)
    rows.append(("retrieval ranks + R@K/mAP/MedR", f"{n}x{n}", t, t * per_k))
    t = best_of(lambda: metrics.evaluate_retrieval(sim, ties="stable"), args.repeats)
    rows.append(("  (tie rule 'stable')", f"{n}x{n}", t, t * per_k))

    # probing: (n x 128) embeddings, 10 classes, 60/20/20
    centres = rng.normal(size=(10, 128)) * 0.15
    labels = rng.integers(0, 10, size=n)
    x = (centres[labels] + rng.normal(size=(n, 128)) * 0.1).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    tr, va = int(0.6 * n), int(0.8 * n)
    epochs = 20
    for bs in (16, 64, 512):
        cfg = ProbeConfig(head="mlp", lr=1e-3, batch_size=bs, dropout=0.25)

        def fit(cfg: ProbeConfig = cfg) -> None:
            train_probe(cfg, x[:tr], labels[:tr], x[tr:va], labels[tr:va], task="multiclass",
                        metric="accuracy", max_epochs=epochs, patience=epochs)  # fmt: skip

        t = best_of(fit, 1) / epochs
        rows.append((f"probe MLP epoch, batch {bs}", f"{tr}x128 train", t, t * per_k))
    if not args.no_grid:
        t0 = time.perf_counter()
        res = run_probe(x[:tr], labels[:tr], x[tr:va], labels[tr:va], x[va:], labels[va:],
                        task="multiclass", metric="accuracy", grid=paper_grid("mlp"))  # fmt: skip
        t = time.perf_counter() - t0
        epochs_run = sum(tr_.epochs_run for tr_ in res.trials)
        rows.append((f"probe paper grid (12 MLP, {epochs_run} epochs)", f"{n}x128", t, t * per_k))

    print(f"# eval metrics benchmark: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"numpy {np.__version__}, {n} tracks, best of {args.repeats}")  # fmt: skip
    print(f"| {'what':<44} | {'shape':<14} | {'seconds':>9} | {'s / 1,000 tracks':>16} |")
    print(f"|{'-' * 46}|{'-' * 16}|{'-' * 11}|{'-' * 18}|")
    for name, shape, sec, per in rows:
        print(f"| {name:<44} | {shape:<14} | {sec:>9.4f} | {per:>16.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
