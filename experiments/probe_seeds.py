"""Issue 13: the VGMIDI probe (an MLP on frozen track embeddings, the ``probe`` eval suite) over several seeds, to
tell a model's probe from the probe's own seed noise (one piece of the 40-41-piece test split is 2.4-2.5 points).
The suite does the runs (``SuiteOptions.probe_seeds``, ``musicsearch eval --probe-seeds``); this prints them as a
table. The seeds vary the head, not the split: ``experiments/probe_cv.py`` varies both.

Usage::

    .venv/bin/python experiments/probe_seeds.py --models default,runs/soft17/wise20.safetensors \
        --vgmidi ../shared/data/vgmidi --seeds 0,1,2,3,4 --out runs/compare5/probe_seeds.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distill_compare import VGMIDI


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, help="comma-separated model names or checkpoints")
    ap.add_argument("--vgmidi", required=True, help="the VGMIDI folder")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--out", default=None, help="also write every run's accuracies as JSON here")
    args = ap.parse_args()

    from musicsearch.eval.suites import SuiteOptions, run_suite
    from musicsearch.models.loading import resolve_model

    runs: dict[str, list[dict[str, Any]]] = {}
    seeds = [int(x) for x in args.seeds.split(",")]
    if seeds != list(range(seeds[0], seeds[0] + len(seeds))):
        raise SystemExit(f"--seeds must be consecutive (the suite runs seed, seed + 1, ...), got {seeds}")
    print("| model | probe Q / V / A, mean over seeds | per seed |\n|---|---|---|")
    for ref in filter(None, args.models.split(",")):
        model = resolve_model(ref).model
        opts = SuiteOptions(datasets=tuple((d, args.vgmidi) for d in VGMIDI), seed=seeds[0], probe_seeds=len(seeds))
        res = run_suite(model, "probe", opts)["results"]["probe"]
        per_seed = [res[d].get("per_seed", [{"accuracy": res[d]["accuracy"]}]) for d in VGMIDI]
        runs[ref] = [{"seed": seed, **{d: per_seed[j][i]["accuracy"] for j, d in enumerate(VGMIDI)}}
                     for i, seed in enumerate(seeds)]  # fmt: skip
        means = " / ".join(f"{100 * res[d]['accuracy']:.1f}" for d in VGMIDI)
        each = "; ".join(" / ".join(f"{100 * r[d]:.1f}" for d in VGMIDI) for r in runs[ref])
        print(f"| {ref} | {means} | {each} |", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(runs, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
