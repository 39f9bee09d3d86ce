"""Issue 13: the VGMIDI probe (an MLP on frozen track embeddings, the ``probe`` eval suite) over several seeds, to
tell a model's probe from the probe's own seed noise (one piece of the 40-41-piece test split is 2.4-2.5 points).

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

import numpy as np

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
    print("| model | probe Q / V / A, mean over seeds | per seed |\n|---|---|---|")
    for ref in filter(None, args.models.split(",")):
        model = resolve_model(ref).model
        for seed in (int(s) for s in args.seeds.split(",")):
            opts = SuiteOptions(datasets=tuple((d, args.vgmidi) for d in VGMIDI), seed=seed)
            res = run_suite(model, "probe", opts)["results"]["probe"]
            runs.setdefault(ref, []).append({"seed": seed, **{d: res[d]["accuracy"] for d in VGMIDI}})
        means = " / ".join(f"{100 * np.mean([r[d] for r in runs[ref]]):.1f}" for d in VGMIDI)
        each = "; ".join(" / ".join(f"{100 * r[d]:.1f}" for d in VGMIDI) for r in runs[ref])
        print(f"| {ref} | {means} | {each} |", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(runs, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
