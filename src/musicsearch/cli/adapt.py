"""``musicsearch adapt DIR``: teacher-student adaptation of a model to a music collection (no labels needed)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tqdm import tqdm


def add_parser(subparsers: Any) -> None:
    """Register ``adapt``."""
    p = subparsers.add_parser(
        "adapt",
        help="adapt a model to your recordings with musicnn teachers (pseudo-labels, no labels needed)",
        description=(
            "Pseudo-label windows of the recordings in DIR (or a manifest) with the two pretrained musicnn taggers "
            "(MagnaTagATune and Million Song Dataset tags, thresholds calibrated per tag on the collection), then "
            "fine-tune the model on them together with procedural-corpus clips and their true tags. Every step "
            "resumes from what a previous run left in --out. Use the result with --model OUT/run."
        ),
    )
    p.add_argument("audio", metavar="DIR", help="folder of recordings (scanned recursively) or a JSONL manifest")
    p.add_argument("--out", required=True, help="adaptation folder (labels, manifests, cache, run)")
    p.add_argument("--model", default="default", help="model to start from (default: %(default)s)")
    p.add_argument("--corpus", help="procedural corpus (folder or manifest); default: synthesize --corpus-size clips")
    p.add_argument("--corpus-size", type=int, default=1500, help="clips to synthesize without --corpus")
    p.add_argument("--max-corpus", type=int, default=1500, help="corpus training clips mixed in (default: %(default)s)")
    p.add_argument("--hop", type=float, default=9.0, help="seconds between labelled windows (default: %(default)s)")
    p.add_argument("--floor", type=float, default=0.2, help="lowest per-tag threshold (default: %(default)s)")
    p.add_argument("--ceiling", type=float, default=0.5, help="highest per-tag threshold (default: %(default)s)")
    p.add_argument("--max-tags", type=int, default=10, help="most pseudo-tags a window keeps")
    p.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="decoding processes")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--recipe", choices=("finetune", "soft"), default="finetune",
                   help="finetune: the whole student on thresholded pseudo-tags; soft: a pretrained musicnn tower's "
                        "head on cached features with the teachers' soft targets (docs/adapt.md)")  # fmt: skip
    p.add_argument("--tower", default="musicnn-both-small", help="musicnn tower preset of --recipe soft")
    p.add_argument("--soft-weight", type=float, default=1.0, help="weight of the soft-target loss (--recipe soft)")
    p.add_argument("--rank-weight", type=float, default=0.0,
                   help="weight of the teachers' tag-ranking loss (--recipe soft; default used 10)")  # fmt: skip
    p.add_argument("--init-from", default="",
                   help="checkpoint or model of the same --tower to start the head from (--recipe soft; default: "
                        "--model itself when it is that tower, e.g. the shipped default)")  # fmt: skip
    p.add_argument("--anchor-weight", type=float, default=0.0,
                   help="keep every window's embedding near the starting model's, so adapting forgets less "
                        "(--recipe soft; e.g. 30)")  # fmt: skip
    p.add_argument("--wise", type=float, default=1.0,
                   help="weight of the trained head against its start in the saved model (WiSE-FT; --recipe soft; "
                        "1: the trained head, 0.2: mostly the start)")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run :func:`musicsearch.train.adapt.adapt` and print what it made."""
    from musicsearch.train.adapt import AdaptConfig, adapt

    cfg = AdaptConfig(
        audio=args.audio,
        out_dir=args.out,
        model=args.model,
        corpus=args.corpus,
        corpus_size=args.corpus_size,
        max_corpus=args.max_corpus,
        hop_seconds=args.hop,
        floor=args.floor,
        ceiling=args.ceiling,
        max_tags=args.max_tags,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        workers=args.workers,
        device=args.device,
        recipe=args.recipe,
        tower=args.tower,
        soft_weight=args.soft_weight,
        rank_weight=args.rank_weight,
        init_from=args.init_from,
        anchor_weight=args.anchor_weight,
        wise=args.wise,
    )
    bar: Any = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="pseudo-labelling", unit="recording", file=sys.stderr)
        bar.update(done - bar.n)
        if done == total:
            bar.close()

    result = adapt(cfg, progress=progress)
    print(f"labelled {result.hours:.2f} h of audio; windows: {result.n_windows}; corpus clips: {result.n_corpus}")
    for track_id, reason in result.failed:
        print(f"skipped {track_id}: {reason}")
    if result.tag_counts:  # the finetune recipe's thresholded tags (the soft recipe trains on probabilities)
        top = ", ".join(f"{t} ({n})" for t, n in list(result.tag_counts.items())[:12])
        print(f"most frequent pseudo-tags: {top}")
    print(f"adapted model: {result.checkpoint}")
    print(f"held-out windows: {result.real_test} (musicsearch eval --model {result.checkpoint.parent} --suite corpus "
          f"--manifest {result.real_test} --split test)")  # fmt: skip
    return 0
