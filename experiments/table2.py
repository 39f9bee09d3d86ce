"""Reproduce the paper's Table 2 comparison on the procedural corpus, and pick the default model.

Trains the ten variants (classification; triplet with word vectors and with a transformer, each with tag /
sentence / stochastic text; contrastive with a transformer, each with tag / sentence / stochastic text) with the
same audio tower, budget and seed policy, evaluates each with the ``corpus`` suite (tag retrieval on the whole
vocabulary and its 50 most frequent tags, sentence retrieval, unseen queries), and writes one report.

Every step is resumable: a finished run (``best.safetensors`` + ``result.json``) is skipped; a killed training
continues from its ``last.pt``.

Usage::

    make reproduce                       # = .venv/bin/python experiments/table2.py
    .venv/bin/python experiments/table2.py --corpus data/corpus --n 3000 --epochs 8 --seeds 0,1 \
        --variants contrastive-minilm-stochastic,triplet-minilm-stochastic --out runs/table2

On this 2-core CPU the ``small`` preset trains at roughly 10-20 samples/s (benchmarks/train_throughput.py), so the
default budget (8 epochs of the 2,400-clip training split, batch 64) costs 15-30 minutes a variant. On a GPU pass
``--preset paper --text-encoder bert`` for the paper's exact towers.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from musicsearch.fileio import write_json

log = logging.getLogger("table2")

#: The ten rows of Table 2 as (objective, text encoder slot, text representation).
VARIANTS: list[tuple[str, str, str]] = [
    ("classification", "none", "tag"),
    *[("triplet", "words", rep) for rep in ("tag", "sentence", "stochastic")],
    *[("triplet", "lm", rep) for rep in ("tag", "sentence", "stochastic")],
    *[("contrastive", "lm", rep) for rep in ("tag", "sentence", "stochastic")],
]


def variant_name(objective: str, text: str, rep: str) -> str:
    """Run-folder name, e.g. ``contrastive-minilm-stochastic``."""
    return f"{objective}-{'binary' if objective == 'classification' else text}-{rep}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="data/corpus", help="corpus folder (made with musicsearch synth if missing)")
    ap.add_argument("--n", type=int, default=3000, help="clips in the corpus")
    ap.add_argument("--out", default="runs/table2")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--text-encoder", default="minilm", help="the transformer slot (paper: bert)")
    ap.add_argument("--word-vectors", default="glove", help="the word-vector slot (paper: GloVe 300-d)")
    ap.add_argument("--text-trainable-layers", type=int, default=1, help="top transformer layers fine-tuned")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-4, help="lr of the contrastive/triplet runs")
    ap.add_argument("--lr-classification", type=float, default=1e-3)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--variants", default="all", help="comma-separated run names, or all")
    ap.add_argument("--eval-windows", type=int, default=3)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from musicsearch.data.cache import build_audio_cache
    from musicsearch.data.manifest import read_manifest
    from musicsearch.data.synth.corpus import make_corpus
    from musicsearch.eval.report import write_report
    from musicsearch.eval.suites import SuiteOptions, run_suite
    from musicsearch.models.loading import resolve_model
    from musicsearch.train.config import TrainConfig
    from musicsearch.train.loop import train

    corpus = Path(args.corpus)
    manifest = corpus / "manifest.jsonl"
    if not manifest.is_file() or len(read_manifest(manifest)) < args.n:
        log.info("making the corpus: %d clips in %s", args.n, corpus)
        make_corpus(corpus, args.n, seed=0)
    cache = corpus / "cache"
    build_audio_cache(read_manifest(manifest), cache, workers=2, progress=False)

    slots = {"none": "none", "words": args.word_vectors, "lm": args.text_encoder}
    wanted = None if args.variants == "all" else set(args.variants.split(","))
    out = Path(args.out)
    results: list[dict[str, Any]] = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for objective, slot, rep in VARIANTS:
            name = variant_name(objective, slots[slot], rep)
            if wanted is not None and name not in wanted:
                continue
            run = out / f"{name}-seed{seed}"
            result_path = run / "result.json"
            if result_path.is_file():
                results.append(json.loads(result_path.read_text(encoding="utf-8")))
                continue
            cfg = TrainConfig(
                manifest=str(manifest),
                out_dir=str(run),
                preset=args.preset,
                objective=objective,
                text_encoder=None if slot == "none" else slots[slot],
                text_rep=rep,
                epochs=args.epochs,
                warmup_epochs=1,
                batch_size=args.batch_size,
                seed=seed,
                cache_dir=str(cache),
                log_every=10,
                lr=args.lr_classification if objective == "classification" else args.lr,
                text_trainable_layers=args.text_trainable_layers if slot == "lm" else None,
            )
            t0 = time.perf_counter()
            trained = train(cfg)
            train_s = time.perf_counter() - t0
            resolved = resolve_model(run)
            t1 = time.perf_counter()
            res = run_suite(
                resolved.model,
                "corpus",
                SuiteOptions(manifest=str(manifest), split="test", n_windows=args.eval_windows, seed=seed),
                model_info={**resolved.info(), "name": f"{name} (seed {seed})"},
            )
            res["training"] = {
                "seconds": train_s,
                "eval_seconds": time.perf_counter() - t1,
                "steps": trained.global_step,
                "epochs": trained.epochs_done,
                "config": cfg.to_dict(),
            }
            write_json(result_path, res)
            results.append(res)
    json_path, md_path = write_report(results, out / "report")
    print(md_path.read_text(encoding="utf-8"))
    print(f"report: {json_path} and {md_path}")


if __name__ == "__main__":
    main()
