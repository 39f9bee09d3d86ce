"""Reproduce the paper's Table 2 comparison on the procedural corpus, and pick the default model.

Trains the ten variants (classification; triplet with word vectors and with a transformer, each with tag /
sentence / stochastic text; contrastive with a transformer, each with tag / sentence / stochastic text) with the
same audio tower, budget and seed policy, evaluates each with the ``corpus`` suite (tag retrieval on the whole
vocabulary and its 50 most frequent tags, sentence retrieval, unseen queries), and writes one report.

Every step is resumable: a finished run (``best.safetensors`` + ``result.json``) is skipped; a killed training
continues from its ``last.pt``.

Usage::

    make reproduce      # = .venv/bin/python experiments/table2.py [--vgmidi ../shared/data/vgmidi]
    .venv/bin/python experiments/table2.py --corpus data/corpus --n 3000 --epochs 4 --seeds 0 --extra-seeds 1 \
        --top 2 --vgmidi ../shared/data/vgmidi --out runs/table2
    .venv/bin/python experiments/table2.py --report-only --out runs/table2      # tabulate what is finished

Every variant trains with seed 0; the two best of them (mean of top-50 tag ROC-AUC and sentence R@10) train again
with seed 1, and the table reports the mean and half the range. ``--vgmidi`` adds zero-shot and probing on
VGMIDI's human mood labels (rendered MIDI) for every run.

On this 2-core CPU the ``small`` preset trains at roughly 10-20 samples/s (benchmarks/train_throughput.py), so the
default budget (4 epochs of the 2,410-clip training split, batch 64) costs about 8-15 minutes a variant. On a GPU pass
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


VGMIDI = ("vgmidi-quadrant", "vgmidi-valence", "vgmidi-arousal")


def transfer(run: Path, root: str | None, seed: int, have: dict[str, Any]) -> dict[str, Any]:
    """Real-music scores of a finished run, adding to ``have`` what it lacks: the eight shipped real recordings
    (mean reciprocal rank of each for a query written from its description, see experiments/distill_compare.py)
    and, with a VGMIDI ``root``, zero-shot and MLP-probing accuracy on its human mood labels (rendered MIDI)."""
    from distill_compare import librosa_mrr

    from musicsearch.eval.suites import SuiteOptions, run_suite
    from musicsearch.models.loading import resolve_model

    model = resolve_model(run).model
    out: dict[str, Any] = dict(have)
    if "librosa" not in out:
        if model.config.objective == "classification":
            out["librosa"] = {"mrr": None, "skipped": "a classifier scores its own tags only, not free-text queries"}
        else:
            out["librosa"] = librosa_mrr(model)
    if root is None or "zeroshot" in out:
        return out
    opts = SuiteOptions(datasets=tuple((d, root) for d in VGMIDI), seed=seed)
    for suite in ("probe", "zeroshot"):  # probe first: it embeds whole datasets, zero-shot reuses them
        res = run_suite(model, suite, opts)["results"][suite]
        out[suite] = {d: res[d].get("accuracy") for d in VGMIDI}
    return out


def _f(res: dict[str, Any], *path: str) -> float | None:
    cur: Any = res
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return None
        cur = cur[key]
    return None if cur is None else float(cur)


#: (label, path into a corpus result, scale) of each column of our half of the table.
COLUMNS: list[tuple[str, tuple[str, ...], float]] = [
    ("top-50 ROC", ("tags", "top50", "roc_auc"), 100.0),
    ("top-50 PR", ("tags", "top50", "pr_auc"), 100.0),
    ("all ROC", ("tags", "all", "roc_auc"), 100.0),
    ("all PR", ("tags", "all", "pr_auc"), 100.0),
    ("R@1", ("sentence", "R@1"), 100.0),
    ("R@5", ("sentence", "R@5"), 100.0),
    ("R@10", ("sentence", "R@10"), 100.0),
    ("mAP@10", ("sentence", "mAP@10"), 100.0),
    ("MedR", ("sentence", "median_rank_0based"), 1.0),
    ("unseen ROC", ("unseen", "roc_auc"), 100.0),
    ("unseen PR", ("unseen", "pr_auc"), 100.0),
]
#: VGMIDI columns: (label, suite) -> quadrant / valence / arousal accuracies.
TRANSFER_COLUMNS: list[tuple[str, str]] = [("VGMIDI zero-shot Q/V/A", "zeroshot"), ("VGMIDI probe Q/V/A", "probe")]


def top_variants(results: list[dict[str, Any]], k: int) -> list[str]:
    """The ``k`` best variants (run-folder names without the seed) by the mean of top-50 tag ROC-AUC and sentence
    R@10, over the runs given (their first seed each)."""
    best: dict[str, float] = {}
    for res in results:
        name = Path(res["training"]["config"]["out_dir"]).name.rsplit("-seed", 1)[0]
        c = res["results"]["corpus"]
        best.setdefault(name, (c["tags"]["top50"]["roc_auc"] + c["sentence"]["R@10"]) / 2)
    return sorted(best, key=lambda n: -best[n])[:k]


def paper_layout(results: list[dict[str, Any]]) -> str:
    """Table 2's layout: one row per variant, our corpus numbers (mean, and +- half the range over seeds when
    there are several) beside the paper's ECALS numbers, and the training minutes."""
    from musicsearch.eval.published import table2_row

    by_variant: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for res in results:
        cfg = res["training"]["config"]
        key = (cfg["objective"], cfg["text_encoder"] or "none", cfg["text_rep"])
        by_variant.setdefault(key, []).append(res)
    head = ["objective", "text", "rep", "seeds", *(c[0] for c in COLUMNS), "8 real MRR",
            *(c[0] for c in TRANSFER_COLUMNS),
            "train min",
            "paper 50 ROC/PR", "paper 1054 ROC/PR", "paper R@1/5/10", "paper mAP@10", "paper MedR"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    family = {"none": "binary", "glove": "glove"}
    for objective, slot, rep in VARIANTS:
        found = [(k, v) for k, v in by_variant.items() if k[0] == objective and k[2] == rep
                 and (k[1] == "none") == (slot == "none") and (k[1] == "glove") == (slot == "words")]  # fmt: skip
        if not found:
            continue
        (_, enc, _), runs = found[0]
        cells = [objective, enc, rep, str(len(runs))]
        for _, path, scale in COLUMNS:
            vals = [v for v in (_f(r["results"]["corpus"], *path) for r in runs) if v is not None]
            if not vals:
                cells.append("-")
                continue
            mean = scale * sum(vals) / len(vals)
            spread = scale * (max(vals) - min(vals)) / 2
            fmt = "{:.0f}" if scale == 1.0 else "{:.1f}"
            cells.append(fmt.format(mean) + (f" ± {fmt.format(spread)}" if len(vals) > 1 else ""))
        mrr = [r["transfer"]["librosa"]["mrr"] for r in runs if r.get("transfer", {}).get("librosa", {}).get("mrr")]
        cells.append(f"{sum(mrr) / len(mrr):.2f}" if mrr else "-")
        for _, suite in TRANSFER_COLUMNS:
            accs = [[r["transfer"][suite][d] for r in runs if suite in r.get("transfer", {})] for d in VGMIDI]
            cells.append(" / ".join(f"{100 * sum(a) / len(a):.1f}" if a else "-" for a in accs))
        cells.append(f"{sum(r['training']['seconds'] for r in runs) / len(runs) / 60:.1f}")
        p = table2_row(objective, family.get(enc, "bert"), rep).as_dict()
        ps = p["sentence"]
        cells += [
            f"{100 * p['tag50']['roc_auc']:.1f} / {100 * p['tag50']['pr_auc']:.1f}",
            f"{100 * p['tag1054']['roc_auc']:.1f} / {100 * p['tag1054']['pr_auc']:.1f}",
            f"{100 * ps['R@1']:.1f} / {100 * ps['R@5']:.1f} / {100 * ps['R@10']:.1f}",
            f"{100 * ps['mAP@10']:.1f}",
            f"{ps['median_rank_0based']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="data/corpus", help="corpus folder (made with musicsearch synth if missing)")
    ap.add_argument("--n", type=int, default=3000, help="clips in the corpus")
    ap.add_argument("--out", default="runs/table2")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--text-encoder", default="minilm", help="the transformer slot (paper: bert)")
    ap.add_argument("--word-vectors", default="glove", help="the word-vector slot (paper: GloVe 300-d)")
    ap.add_argument("--text-trainable-layers", type=int, default=1, help="top transformer layers fine-tuned")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-4, help="lr of the contrastive/triplet runs")
    ap.add_argument("--lr-classification", type=float, default=1e-3)
    ap.add_argument("--seeds", default="0", help="seeds of every variant")
    ap.add_argument("--extra-seeds", default="1", help="more seeds for the --top variants ('' for none)")
    ap.add_argument("--top", type=int, default=2, help="how many of the best variants get --extra-seeds")
    ap.add_argument("--variants", default="all", help="comma-separated run names, or all")
    ap.add_argument("--eval-windows", type=int, default=3)
    ap.add_argument("--report-only", action="store_true", help="only tabulate the finished runs under --out")
    ap.add_argument("--vgmidi", help="VGMIDI folder: also score zero-shot and probing on its mood labels")
    ap.add_argument("--no-train", action="store_true", help="only evaluate finished runs (e.g. add --vgmidi to them)")
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

    if args.report_only:
        done = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(Path(args.out).glob("*/result.json"))]
        print(paper_layout(done))
        return
    corpus = Path(args.corpus)
    manifest = corpus / "manifest.jsonl"
    if not manifest.is_file() or len(read_manifest(manifest)) < args.n:
        log.info("making the corpus: %d clips in %s", args.n, corpus)
        make_corpus(corpus, args.n, seed=0)
    cache = corpus / "cache"
    build_audio_cache(read_manifest(manifest), cache, workers=2, progress=False)

    slots = {"none": "none", "words": args.word_vectors, "lm": args.text_encoder}
    out = Path(args.out)

    def run_one(seed: int, objective: str, slot: str, rep: str) -> dict[str, Any] | None:
        name = variant_name(objective, slots[slot], rep)
        run = out / f"{name}-seed{seed}"
        result_path = run / "result.json"
        if result_path.is_file():
            res: dict[str, Any] = json.loads(result_path.read_text(encoding="utf-8"))
            have = res.get("transfer", {})
            if "librosa" not in have or (args.vgmidi and "zeroshot" not in have):
                res["transfer"] = transfer(run, args.vgmidi, seed, have)
                write_json(result_path, res)
            return res
        if args.no_train:
            return None
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
        res["transfer"] = transfer(run, args.vgmidi, seed, {})
        write_json(result_path, res)
        return res

    def run_pass(seeds: list[int], wanted: set[str] | None) -> list[dict[str, Any]]:
        done = []
        for seed in seeds:
            for objective, slot, rep in VARIANTS:
                if wanted is not None and variant_name(objective, slots[slot], rep) not in wanted:
                    continue
                res = run_one(seed, objective, slot, rep)
                if res is not None:
                    done.append(res)
        return done

    results = run_pass([int(s) for s in args.seeds.split(",")], None if args.variants == "all" else
                       set(args.variants.split(",")))  # fmt: skip
    if args.extra_seeds:
        top = top_variants(results, args.top)
        log.info("extra seeds %s for the top %d: %s", args.extra_seeds, args.top, ", ".join(top))
        results += run_pass([int(s) for s in args.extra_seeds.split(",")], set(top))
    json_path, md_path = write_report(results, out / "report")
    layout = paper_layout(results)
    (out / "report" / "table2.md").write_text(layout + "\n", encoding="utf-8")
    print(layout)
    print(f"report: {json_path}, {md_path} and {out / 'report' / 'table2.md'}")


if __name__ == "__main__":
    main()
