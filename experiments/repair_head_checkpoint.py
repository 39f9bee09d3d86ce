"""Re-save a head-training checkpoint written before heads.py restored the config's trainable text layers (its
fine-tuned top text layer was left out): rebuild the tower from the base model, load the file's tensors, save.

Usage: .venv/bin/python experiments/repair_head_checkpoint.py runs/soft/res-soft.safetensors [--base default]
"""

from __future__ import annotations

import argparse

from musicsearch.models.checkpoint import read_checkpoint, save_model
from musicsearch.models.loading import resolve_model
from musicsearch.train.heads import build_tower


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--base", default="default")
    args = ap.parse_args()
    ck = read_checkpoint(args.path)
    preset = ck.meta["config"]["preset"]
    model = build_tower(preset, resolve_model(args.base).model)
    assert model.config == ck.config, "the rebuilt tower differs from the checkpoint's config"
    own = model.state_dict()
    for k, v in ck.tensors.items():
        own[k].copy_(v)
    print(save_model(model.eval(), args.path, meta=ck.meta))


if __name__ == "__main__":
    main()
