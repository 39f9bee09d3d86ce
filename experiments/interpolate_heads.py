"""Issue 13: weight-space interpolation between a model and a head fine-tuned from it (WiSE-FT: Wortsman et al.,
"Robust fine-tuning of zero-shot models", CVPR 2022).

``--start`` and ``--tuned`` must be the same architecture, the second fine-tuned from the first (e.g. a head of
``experiments/soft_sweep.py`` with ``init_from=default``). Every floating-point weight of the output is
``(1 - alpha) * start + alpha * tuned``. The two models share their frozen parts (backbones, own tower, text side),
so only the trained head, audio projection and temperature actually mix. The checkpoint records both sources
(reference and SHA-256 of the weights), ``alpha`` and the tuned model's training config. Score it like any head
(``soft_sweep.py --score``, ``soft_compare.py``). The arithmetic is :mod:`musicsearch.models.merge`'s.

``--tuned`` may list several heads tuned from the same start (e.g. one recipe with different seeds): their uniform
average (a "model soup": Wortsman et al., ICML 2022) is the tuned side. Heads of one start stay in one basin, and the
average cancels part of each seed's own noise.

Usage::

    .venv/bin/python experiments/interpolate_heads.py --start default --tuned runs/soft6/g5p1c1.safetensors \
        --alpha 0.2 --out runs/soft17/g5p1c1-a20.safetensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--start", required=True, help="the model the head was tuned from (name or checkpoint)")
    ap.add_argument("--tuned", required=True,
                    help="the tuned model (name or checkpoint), or several, comma-separated: averaged")  # fmt: skip
    ap.add_argument("--alpha", type=float, required=True, help="weight of --tuned (0: --start, 1: --tuned)")
    ap.add_argument("--out", required=True, help="the checkpoint to write (.safetensors)")
    args = ap.parse_args()

    from musicsearch.models.checkpoint import save_model
    from musicsearch.models.loading import resolve_model
    from musicsearch.models.merge import average_states, interpolate_states

    start = resolve_model(args.start)
    refs = [r for r in args.tuned.split(",") if r]
    tuned = [resolve_model(r) for r in refs]
    model = tuned[0].model
    model.load_state_dict(average_states([t.model.state_dict() for t in tuned]))
    model.load_state_dict(interpolate_states(start.model.state_dict(), model.state_dict(), args.alpha))
    meta = dict(model.checkpoint_meta)
    meta["recipe"] = "experiments/interpolate_heads.py"
    meta["interpolation"] = {
        "alpha": args.alpha,
        "start": {"ref": args.start, "sha256": start.info().get("sha256")},
        "tuned": [{"ref": r, "sha256": t.info().get("sha256")} for r, t in zip(refs, tuned)],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sha = save_model(model.eval(), args.out, meta=meta)
    print(json.dumps({"out": args.out, "sha256": sha, **meta["interpolation"]}, indent=1))


if __name__ == "__main__":
    main()
