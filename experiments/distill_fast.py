"""Issue 13, indexing cost: distil the shipped ``default`` (two musicnn networks + the ``small`` tower) into the
``small`` tower alone, the architecture of ``adapted`` (about 1/5 of the default's indexing cost per window).

1. Teacher targets: the ``default`` model's unit audio embedding of every window of the ``soft_recipe.py`` cache
   (``SOFT/windows.jsonl``: real windows split by recording; ``SOFT/corpus_windows.jsonl``: corpus windows), computed
   from the cached backbone features (the default's head on them; the cache holds every column its
   ``musicnn-both-small-residual`` preset needs). Written to ``OUT/teacher.npy``.
2. The same windows decoded (``musicsearch.train.heads.load_window``) into ``OUT/waves.npy`` (float32, one row a
   window; reused by later runs).
3. The student: ``adapted`` (preset ``small``), with the default's text tower and temperature (identical text
   weights; the temperature differs), audio tower and projection trained by
   :func:`musicsearch.train.distill.distill_audio_tower` on the training windows (cosine to the teacher, optionally
   plus InfoNCE on corpus windows' captions), validated on the validation recordings and corpus windows; the best
   epoch is kept. Written to ``OUT/<name>.safetensors`` and ``OUT/<name>.json`` (log, cosine to the teacher on the
   held-out test recordings before and after).

Usage::

    nice -n 10 .venv/bin/python experiments/distill_fast.py --soft runs/soft2 --out runs/fast --epochs 6
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from musicsearch.data.manifest import read_manifest

log = logging.getLogger("distill_fast")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--soft", default="runs/soft2", help="the soft_recipe.py folder (windows and feature cache)")
    ap.add_argument("--out", default="runs/fast")
    ap.add_argument("--name", default="fast")
    ap.add_argument("--teacher", default="default")
    ap.add_argument("--student", default="adapted", help="the model whose audio tower is the student's start")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--contrastive-weight", type=float, default=0.0, help="InfoNCE on corpus windows' captions")
    ap.add_argument("--max-train", type=int, default=0, help="use at most this many training windows (0: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)

    from musicsearch.models.checkpoint import save_model
    from musicsearch.models.inference import embed_texts, normalize
    from musicsearch.models.loading import resolve_model
    from musicsearch.models.registry import PRESETS
    from musicsearch.train.distill import DistillConfig, distill_audio_tower, embed_windows
    from musicsearch.train.heads import feature_columns, load_features, load_window

    soft, out = Path(args.soft), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    real = read_manifest(soft / "windows.jsonl")
    corpus = read_manifest(soft / "corpus_windows.jsonl")
    windows = [*real, *corpus]
    splits = np.array([w.split or "train" for w in windows])
    teacher_model = resolve_model(args.teacher).model.eval()

    # 1. teacher targets from the cached backbone features
    tfile = out / "teacher.npy"
    if not tfile.is_file():
        feats = np.concatenate([load_features(real, soft / "features" / "real").features,
                                load_features(corpus, soft / "features" / "corpus").features])  # fmt: skip
        source_audio, _ = PRESETS.get("musicnn-both-small")()  # the preset the cache was extracted with
        cols = feature_columns(source_audio, teacher_model.config.audio)
        with torch.inference_mode():
            emb = [teacher_model.joint_from_features(torch.from_numpy(feats[a : a + 256][:, cols])).float().numpy()
                   for a in range(0, len(feats), 256)]  # fmt: skip
        np.save(tfile, normalize(np.concatenate(emb)).astype(np.float32))
    teacher = np.load(tfile)

    # 2. the decoded windows
    wfile = out / "waves.npy"
    n_samples = teacher_model.config.audio.window_samples
    if not wfile.is_file():
        part = out / "waves.partial.npy"
        arr = np.lib.format.open_memmap(part, mode="w+", dtype=np.float32, shape=(len(windows), n_samples))
        t0 = time.perf_counter()
        for i, w in enumerate(windows):
            arr[i] = load_window(w, n_samples)
            if (i + 1) % 500 == 0:
                log.info("decoded %d / %d windows (%.0f s)", i + 1, len(windows), time.perf_counter() - t0)
        arr.flush()
        del arr
        part.rename(wfile)
    waves = np.load(wfile, mmap_mode="r")

    # 3. the student: the small tower of `student`, the teacher's text side and temperature
    student = resolve_model(args.student).model
    if student.config.joint_dim != teacher_model.config.joint_dim:
        raise SystemExit("student and teacher joint spaces differ")
    t_state = teacher_model.state_dict()
    shared = {k: v for k, v in t_state.items() if k.startswith(("text_encoder.", "text_projector.", "logit_scale"))}
    shared.update({k: v for k, v in t_state.items() if k.startswith("head.") and k in student.state_dict()})
    student.load_state_dict({**student.state_dict(), **shared})
    student.config = student.config.replace(name=f"small-distilled-from-{args.teacher}")

    train_idx = np.flatnonzero(splits == "train")
    if args.max_train:
        train_idx = np.sort(np.random.default_rng(args.seed).choice(train_idx, args.max_train, replace=False))
    valid_idx = np.flatnonzero(splits == "valid")
    test_idx = np.flatnonzero(splits == "test")
    text = None
    if args.contrastive_weight > 0:
        rng = np.random.default_rng(args.seed + 3)
        caps = {i: str(w.captions[int(rng.integers(len(w.captions)))]) for i, w in enumerate(windows) if w.captions}
        text = np.zeros_like(teacher)
        order = sorted(caps)
        text[order] = normalize(embed_texts(student, [caps[i] for i in order]))

    def test_cosine(model: torch.nn.Module) -> float:
        return float(np.mean(np.sum(embed_windows(model, waves[test_idx]) * teacher[test_idx], axis=1)))

    before = test_cosine(student)
    log.info("held-out test windows: student cosine to the teacher before training %.4f", before)
    cfg = DistillConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        contrastive_weight=args.contrastive_weight, seed=args.seed)  # fmt: skip
    log.info("training on %d windows, validating on %d", train_idx.size, valid_idx.size)
    result = distill_audio_tower(student, waves, teacher, train_idx=train_idx, valid_idx=valid_idx, cfg=cfg, text=text)
    after = test_cosine(student)
    log.info("held-out test windows: student cosine to the teacher after training %.4f", after)

    listing = [[w.track_id, w.audio_path, w.start, w.split] for w in windows]
    summary = {
        "recipe": "musicsearch.train.distill.distill_audio_tower",
        "train_config": {
            "recipe": "musicsearch.train.distill.distill_audio_tower",
            "teacher": args.teacher,
            "student": args.student,
            "max_train": args.max_train,
            **dataclasses.asdict(cfg),
        },
        # the training data's identity: SHA-256 of the JSON list of [id, file, start, split] of every window
        "manifest_sha256": hashlib.sha256(json.dumps(listing).encode()).hexdigest(),
        "epoch": result.best_epoch,
        "valid_loss": result.best_valid,
        "windows": {s: int((splits == s).sum()) for s in ("train", "valid", "test")},
        "trained_windows": int(train_idx.size),
        "test_cosine_before": before,
        "test_cosine_after": after,
        "history": result.history,
        "seconds": result.seconds,
    }
    path = out / f"{args.name}.safetensors"
    summary["checkpoint"] = str(path)
    summary["sha256"] = save_model(student, path, meta=summary)
    (out / f"{args.name}.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=1))


if __name__ == "__main__":
    main()
