"""``musicsearch train [CONFIG] [--manifest M --out DIR] [--set key=value ...]``: train any variant of the paper.

Works unchanged under ``torchrun --nproc_per_node N -m musicsearch.cli.main train ...`` (DDP).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from musicsearch.train.config import load_train_config


def add_parser(sub: Any) -> None:
    """Register the ``train`` subcommand."""
    p = sub.add_parser(
        "train",
        help="train a model (CPU, one GPU, or torchrun DDP)",
        description="Train a model. Options come from CONFIG (YAML/JSON), then flags, then --set key=value. "
        "A run resumes from OUT/last.pt when present.",
    )
    p.add_argument("config", nargs="?", help="YAML/JSON training config (see docs/training.md)")
    p.add_argument("--manifest", help="JSONL manifest with train/valid splits")
    p.add_argument("--out", dest="out_dir", help="run folder (checkpoints, log.jsonl)")
    p.add_argument(
        "--preset",
        help="audio tower preset: paper, small, debug, or a pretrained musicnn tower (musicnn-mtt, musicnn-msd, "
        "musicnn-both, musicnn-both-small, musicnn-both-small-residual, ...; docs/adapt.md)",
    )
    p.add_argument("--objective", help="contrastive, triplet or classification")
    p.add_argument("--text-encoder", help="bert, minilm, glove, tiny-bert, a Hugging Face id, or a GloVe .txt file")
    p.add_argument("--text-rep", help="tag, sentence or stochastic")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--num-workers", type=int)
    p.add_argument("--cache-dir", help="decoded-audio cache made by `musicsearch cache`")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train and print where the checkpoints went."""
    from musicsearch.train.loop import train

    keys = (
        "manifest",
        "out_dir",
        "preset",
        "objective",
        "text_encoder",
        "text_rep",
        "epochs",
        "batch_size",
        "lr",
        "seed",
        "max_steps",
        "num_workers",
        "cache_dir",
        "device",
    )
    cfg = load_train_config(args.config, args.overrides, **{k: getattr(args, k) for k in keys})
    result = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"trained {result.global_step} steps over {result.epochs_done} epochs")
        print(f"best model: {result.best_path}")
        print(f"resumable state: {result.last_path}")
    return 0
