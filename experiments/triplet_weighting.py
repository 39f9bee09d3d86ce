"""Triplet negative weighting: one triplet model per registered weighting rule, on the same corpus, seed and budget.

The comparison in docs/results.md ("Triplet negative weighting") set the release's rule (``official``) against
this project's earlier ``exp-share`` rule, which it removed afterwards; commit dc75b86 still has both. Trains the
same triplet model once per seed and weighting (``TrainConfig.triplet_weighting``) -- same corpus, seed, budget
and everything else -- evaluates each with the ``corpus`` suite on the test split, and
prints one table in the layout of experiments/table2.py (tag retrieval, sentence retrieval, unseen words) with the
training minutes. Finished runs (``result.json``) are skipped, so the script resumes.

Usage::

    musicsearch synth --out /tmp/corpus --n 600 --seed 0 --workers 1
    nice -n 10 .venv/bin/python experiments/triplet_weighting.py --corpus /tmp/corpus --out runs/triplet_weighting \
        --preset debug --epochs 4 --seeds 0,1
    .venv/bin/python experiments/triplet_weighting.py --corpus /tmp/corpus --out runs/triplet_weighting --report-only
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from table2 import COLUMNS, _f

from musicsearch.fileio import write_json
from musicsearch.losses.triplet import NEGATIVE_WEIGHTINGS

log = logging.getLogger("triplet_weighting")

WEIGHTINGS = tuple(NEGATIVE_WEIGHTINGS)


def table(results: list[dict[str, Any]]) -> str:
    """One row per (weighting, seed), then one per weighting with the mean over seeds."""
    head = ["weighting", "seed", *(c[0] for c in COLUMNS), "steps", "train min"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cells(runs: list[dict[str, Any]]) -> list[str]:
        out = []
        for _, path, scale in COLUMNS:
            vals = [v for v in (_f(r["results"]["corpus"], *path) for r in runs) if v is not None]
            fmt = "{:.0f}" if scale == 1.0 else "{:.1f}"
            out.append(fmt.format(scale * sum(vals) / len(vals)) if vals else "-")
        out.append(str(runs[0]["training"]["steps"]))
        out.append(f"{sum(r['training']['seconds'] for r in runs) / len(runs) / 60:.1f}")
        return out

    for w in WEIGHTINGS:
        runs = sorted((r for r in results if r["training"]["config"]["triplet_weighting"] == w),
                      key=lambda r: r["training"]["config"]["seed"])  # fmt: skip
        for r in runs:
            lines.append("| " + " | ".join([w, str(r["training"]["config"]["seed"]), *cells([r])]) + " |")
        if len(runs) > 1:
            lines.append("| " + " | ".join([f"**{w}**", "mean", *cells(runs)]) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="a corpus folder made with musicsearch synth")
    ap.add_argument("--out", default="runs/triplet_weighting")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--text-encoder", default="minilm")
    ap.add_argument("--text-rep", default="stochastic")
    ap.add_argument("--text-trainable-layers", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--eval-windows", type=int, default=3)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from musicsearch.data.cache import build_audio_cache
    from musicsearch.data.manifest import read_manifest
    from musicsearch.eval.suites import SuiteOptions, run_suite
    from musicsearch.models.loading import resolve_model
    from musicsearch.train.config import TrainConfig
    from musicsearch.train.loop import train

    out = Path(args.out)
    if args.report_only:
        print(table([json.loads(p.read_text(encoding="utf-8")) for p in sorted(out.glob("*/result.json"))]))
        return
    manifest = Path(args.corpus) / "manifest.jsonl"
    cache = Path(args.corpus) / "cache"
    build_audio_cache(read_manifest(manifest), cache, workers=1, progress=False)
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for weighting in WEIGHTINGS:
            run = out / f"triplet-{weighting}-seed{seed}"
            result_path = run / "result.json"
            if result_path.is_file():
                results.append(json.loads(result_path.read_text(encoding="utf-8")))
                continue
            cfg = TrainConfig(
                manifest=str(manifest),
                out_dir=str(run),
                preset=args.preset,
                objective="triplet",
                text_encoder=args.text_encoder,
                text_rep=args.text_rep,
                epochs=args.epochs,
                warmup_epochs=1,
                batch_size=args.batch_size,
                lr=args.lr,
                seed=seed,
                cache_dir=str(cache),
                log_every=10,
                text_trainable_layers=args.text_trainable_layers,
                triplet_weighting=weighting,
            )
            t0 = time.perf_counter()
            trained = train(cfg)
            seconds = time.perf_counter() - t0
            resolved = resolve_model(run)
            res = run_suite(
                resolved.model,
                "corpus",
                SuiteOptions(manifest=str(manifest), split="test", n_windows=args.eval_windows, seed=seed),
                model_info={**resolved.info(), "name": f"triplet {weighting} (seed {seed})"},
            )
            res["training"] = {
                "seconds": seconds,
                "steps": trained.global_step,
                "epochs": trained.epochs_done,
                "config": cfg.to_dict(),
            }
            write_json(result_path, res)
            results.append(res)
            log.info("%s seed %d done in %.1f min", weighting, seed, seconds / 60)
    print(table(results))


if __name__ == "__main__":
    main()
