"""Issue 13: weight-space interpolation between a model and a head fine-tuned from it (WiSE-FT: Wortsman et al.,
"Robust fine-tuning of zero-shot models", CVPR 2022).

``--start`` and ``--tuned`` must be the same architecture, the second fine-tuned from the first (e.g. a head of
``experiments/soft_sweep.py`` with ``init_from=default``). Every floating-point weight of the output is
``(1 - alpha) * start + alpha * tuned``. The two models share their frozen parts (backbones, own tower, text side),
so only the trained head, audio projection and temperature actually mix. The checkpoint records both sources
(reference and SHA-256 of the weights), ``alpha`` and the tuned model's training config. Score it like any head
(``soft_sweep.py --score``, ``soft_compare.py``).

Usage::

    .venv/bin/python experiments/interpolate_heads.py --start default --tuned runs/soft6/g5p1c1.safetensors \
        --alpha 0.2 --out runs/soft17/g5p1c1-a20.safetensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch


def interpolate(start: Any, tuned: Any, alpha: float) -> dict[str, torch.Tensor]:
    """The state dict ``(1 - alpha) * start + alpha * tuned`` (floating-point entries; others are ``tuned``'s).

    Raises:
        ValueError: ``alpha`` outside [0, 1], or the two state dicts differ in keys or shapes.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    a, b = start.state_dict(), tuned.state_dict()
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        raise ValueError("the two models differ in architecture: interpolate a model with a head tuned from it")
    return {k: ((1.0 - alpha) * a[k].double() + alpha * v.double()).to(v.dtype) if v.is_floating_point() else v
            for k, v in b.items()}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--start", required=True, help="the model the head was tuned from (name or checkpoint)")
    ap.add_argument("--tuned", required=True, help="the tuned model (name or checkpoint)")
    ap.add_argument("--alpha", type=float, required=True, help="weight of --tuned (0: --start, 1: --tuned)")
    ap.add_argument("--out", required=True, help="the checkpoint to write (.safetensors)")
    args = ap.parse_args()

    from musicsearch.models.checkpoint import save_model
    from musicsearch.models.loading import resolve_model

    start, tuned = resolve_model(args.start), resolve_model(args.tuned)
    model = tuned.model
    model.load_state_dict(interpolate(start.model, model, args.alpha))
    meta = dict(model.checkpoint_meta)
    meta["recipe"] = "experiments/interpolate_heads.py"
    meta["interpolation"] = {
        "alpha": args.alpha,
        "start": {"ref": args.start, "sha256": start.info().get("sha256")},
        "tuned": {"ref": args.tuned, "sha256": tuned.info().get("sha256")},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sha = save_model(model.eval(), args.out, meta=meta)
    print(json.dumps({"out": args.out, "sha256": sha, **meta["interpolation"]}, indent=1))


if __name__ == "__main__":
    main()
