"""Issue 13's recipe end to end: musicnn tower features (cached), head training with soft teacher targets, and the
held-out real windows for evaluation.

Steps (each resumable; ``--step all`` runs them in order)::

    .venv/bin/python experiments/soft_recipe.py --step features --real data/debian-music/manifest.jsonl \
        --corpus data/corpus/manifest.jsonl --out runs/soft
    .venv/bin/python experiments/soft_recipe.py --step train --out runs/soft --preset musicnn-both-small \
        --name both-small

Writes ``OUT/features/{real,corpus}/`` (feature chunks), ``OUT/windows.jsonl`` (the real windows with their
split), ``OUT/real_test.jsonl`` (held-out recordings' windows with the teachers' calibrated tags, for
``experiments/distill_compare.py``) and ``OUT/<name>.safetensors`` per trained candidate.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np

from musicsearch.data.manifest import Track, read_manifest, write_manifest

log = logging.getLogger("soft_recipe")


def real_windows(manifest: str, *, hop: float, window: float, seed: int) -> list[Track]:
    from musicsearch.data.datasets import file_duration
    from musicsearch.train.adapt import split_recordings

    tracks = read_manifest(manifest)
    splits = split_recordings([t.track_id for t in tracks], valid=0.1, test=0.1, seed=seed)
    out = []
    for t in tracks:
        dur = file_duration(t)
        starts = [0.0] if dur <= window else np.arange(0.0, dur - window + 1e-9, hop)
        for s in starts:
            out.append(Track(f"real:{t.track_id}@{s:.2f}", t.audio_path, split=splits[t.track_id],
                             start=float(s), end=float(s) + window, metadata={"track": t.track_id}))  # fmt: skip
    return out


def corpus_windows(manifest: str, *, window: float, seed: int, limit: int, per_clip: int = 0) -> list[Track]:
    """Training windows of the corpus' train/valid clips (the first ``limit``): one at a random start per clip
    (``per_clip=0``, rounds one and two), or ``per_clip`` evenly spaced windows per clip (first at 0 s, last
    ending at the clip's end), ids ``corpus:<clip>`` or ``corpus:<clip>@<start>``."""
    tracks = [t for t in read_manifest(manifest) if t.split in ("train", "valid")][:limit]
    rng = np.random.default_rng(seed)
    out = []
    for t in tracks:
        dur = float(t.metadata.get("duration", 10.0))
        if per_clip <= 0:
            s = float(rng.uniform(0.0, max(0.0, dur - window)))
            out.append(dataclasses.replace(t, track_id=f"corpus:{t.track_id}", start=s, end=s + window))
            continue
        for s in np.linspace(0.0, max(0.0, dur - window), per_clip) if dur > window else [0.0]:
            out.append(dataclasses.replace(t, track_id=f"corpus:{t.track_id}@{s:.2f}", start=float(s),
                                           end=float(s) + window))  # fmt: skip
    return out


def corpus_test_windows(manifest: str, *, window: float, n_windows: int = 3) -> list[Track]:
    """The corpus' test clips at the windows the ``corpus`` eval suite embeds (``n_windows`` evenly spaced,
    :func:`musicsearch.audio.chunking.evenly_spaced_starts` on the decoded length): split ``test``, never trained
    on; ``metadata["clip"]`` names the clip, so its windows' embeddings can be averaged into the suite's track
    embedding (``experiments/soft_sweep.py``)."""
    from musicsearch.audio.chunking import evenly_spaced_starts
    from musicsearch.data.datasets import file_duration

    rate = 16000
    out = []
    for t in read_manifest(manifest):
        if t.split != "test":
            continue
        n = round(file_duration(t) * rate)
        for s in evenly_spaced_starts(n, int(window * rate), n_windows) / rate:
            out.append(dataclasses.replace(t, track_id=f"corpus-test:{t.track_id}@{s:.3f}", start=float(s),
                                           end=float(s) + window, split="test",
                                           metadata={**t.metadata, "clip": t.track_id}))  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--step", choices=("features", "train"), required=True)
    ap.add_argument("--real", default="data/debian-music/manifest.jsonl")
    ap.add_argument("--corpus", default="data/corpus/manifest.jsonl")
    ap.add_argument("--out", default="runs/soft")
    ap.add_argument("--base", default="default")
    ap.add_argument("--feature-preset", default="musicnn-both-small", help="the tower whose features are cached")
    ap.add_argument("--hop", type=float, default=30.0)
    ap.add_argument("--max-corpus", type=int, default=1000)
    ap.add_argument("--corpus-per-clip", type=int, default=0,
                    help="evenly spaced windows per corpus clip (0: one random window, rounds one and two); also "
                         "caches the corpus test clips' eval windows (corpus_test_windows.jsonl)")  # fmt: skip
    ap.add_argument("--real-from", default=None,
                    help="folder holding the real windows.jsonl (default --out); with --only corpus, another "
                         "round's real cache is reused as it is")  # fmt: skip
    ap.add_argument("--only", choices=("real", "corpus", "both"), default="both")
    ap.add_argument("--preset", default="musicnn-both-small")
    ap.add_argument("--name", default="both-small")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--soft-weight", type=float, default=1.0)
    ap.add_argument("--no-corpus", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    from musicsearch.models.loading import resolve_model
    from musicsearch.train.heads import build_tower, extract_features

    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = resolve_model(args.base).model
    window = 3.0
    wfile = Path(args.real_from or out) / "windows.jsonl"
    if not wfile.is_file():
        write_manifest(wfile, real_windows(args.real, hop=args.hop, window=window, seed=args.seed))
    real = read_manifest(wfile)
    cfile = out / "corpus_windows.jsonl"
    if args.step == "features":
        tower = build_tower(args.feature_preset, base)
        t0 = time.perf_counter()
        if args.only in ("real", "both"):
            extract_features(tower, real, out / "features" / "real",
                             progress=lambda d, n: log.info("real %d / %d (%.0f s)", d, n,
                                                            time.perf_counter() - t0))  # fmt: skip
        if args.only in ("corpus", "both"):
            if not cfile.is_file():
                write_manifest(cfile, corpus_windows(args.corpus, window=window, seed=args.seed, limit=args.max_corpus,
                                                     per_clip=args.corpus_per_clip))  # fmt: skip
            corpus = read_manifest(cfile)
            extract_features(tower, corpus, out / "features" / "corpus",
                             progress=lambda d, n: log.info("corpus %d / %d (%.0f s)", d, n,
                                                            time.perf_counter() - t0))  # fmt: skip
            if args.corpus_per_clip > 0:
                tfile = out / "corpus_test_windows.jsonl"
                if not tfile.is_file():
                    write_manifest(tfile, corpus_test_windows(args.corpus, window=window))
                extract_features(tower, read_manifest(tfile), out / "features" / "corpus_test")
        return
    from musicsearch.train.heads import HeadTrainConfig, load_features, train_head

    feats_real = load_features(real, out / "features" / "real")
    corpus = read_manifest(cfile) if cfile.is_file() and not args.no_corpus else []
    feats_corpus = load_features(corpus, out / "features" / "corpus") if corpus else None
    cfg = HeadTrainConfig(preset=args.preset, feature_preset=args.feature_preset, epochs=args.epochs,
                          soft_weight=args.soft_weight, seed=args.seed)  # fmt: skip
    result = train_head(cfg, base, real, feats_real, corpus, feats_corpus, out_dir=out, name=args.name)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
