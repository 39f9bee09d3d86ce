"""Ship a trained run as the package's default model: half-precision weights in src/musicsearch/assets/models/,
with its config, training facts, manifest hash, metrics, the exact command, its checksum, and a reference
embedding of a known clip that tests/models/test_default_model.py checks.

Usage::

    .venv/bin/python experiments/ship_default.py --run runs/default --manifest data/corpus/manifest.jsonl \
        --command "musicsearch train ..."
    # a head trained on cached features (experiments/soft_recipe.py), keeping the model it replaces by a name:
    .venv/bin/python experiments/ship_default.py --checkpoint runs/soft2/r1.safetensors --keep-previous adapted \
        --manifest data/corpus/manifest.jsonl --command "python experiments/soft_recipe.py ..."
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from musicsearch.assets import librosa_music_dir
from musicsearch.audio.chunking import pad_to
from musicsearch.audio.io import load_audio
from musicsearch.eval.suites import SuiteOptions, run_suite
from musicsearch.fileio import sha256_file, write_json
from musicsearch.models.checkpoint import load_model_file, save_model
from musicsearch.models.dual_encoder import TextToMusic
from musicsearch.models.loading import SHIPPED_DIR

REFERENCE_CLIP = "sorohanro-solo-trumpet.ogg"
REFERENCE_TEXTS = ["jazz", "solo trumpet", "a calm piano piece for a rainy evening"]


def reference_embeddings(model: TextToMusic) -> dict[str, list[list[float]]]:
    """Embeddings of the first window of the shipped trumpet clip and of a few texts."""
    wave = load_audio(librosa_music_dir() / REFERENCE_CLIP)
    win = model.config.audio.window_samples
    with torch.inference_mode():
        audio = model.encode_audio(torch.from_numpy(pad_to(wave[:win], win))[None])
        text = model.encode_text(REFERENCE_TEXTS)
    return {"audio": audio.tolist(), "text": text.tolist()}


def summarize(results: dict[str, Any]) -> dict[str, float]:
    """The headline numbers of a ``corpus`` suite result (fractions)."""
    corpus = results["results"]["corpus"]
    out: dict[str, float] = {}
    for vocab, r in corpus["tags"].items():
        out[f"tags_{vocab}_roc_auc"] = r["roc_auc"]
        out[f"tags_{vocab}_pr_auc"] = r["pr_auc"]
    for key in ("R@1", "R@5", "R@10", "mAP@10", "median_rank_1based"):
        out[f"sentence_{key}"] = corpus["sentence"][key]
    if "unseen" in corpus:
        for key in ("roc_auc", "pr_auc"):
            if key in corpus["unseen"]:
                out[f"unseen_{key}"] = corpus["unseen"][key]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="a training run folder (its best.safetensors ships)")
    src.add_argument("--checkpoint", help="a checkpoint file to ship")
    ap.add_argument("--keep-previous", default=None, help="first rename the model shipped as --name to this name")
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--command", required=True, help="the training command, recorded verbatim")
    ap.add_argument("--name", default="default")
    args = ap.parse_args()

    trained = load_model_file(Path(args.checkpoint) if args.checkpoint else Path(args.run) / "best.safetensors")
    out = SHIPPED_DIR / f"{args.name}.safetensors"
    index_path = SHIPPED_DIR / "models.json"
    index = json.loads(index_path.read_text(encoding="utf-8")) if index_path.is_file() else {"models": {}}
    if args.keep_previous and args.name in index["models"]:
        # the earlier model stays loadable by its new name: same weights file content, renamed
        old = index["models"].pop(args.name)
        kept = SHIPPED_DIR / f"{args.keep_previous}.safetensors"
        os.replace(SHIPPED_DIR / old["file"], kept)
        index["models"][args.keep_previous] = {**old, "file": kept.name}
        write_json(index_path, index)
    meta = dict(trained.checkpoint_meta)
    meta["command"] = args.command
    save_model(trained, out, meta=meta, half=True)
    shipped = load_model_file(out)  # evaluate what ships (float16 weights), not the float32 original
    results = run_suite(
        shipped,
        "corpus",
        SuiteOptions(manifest=args.manifest, split="test", n_windows=3, seed=0),
        model_info={"name": args.name, "path": str(out)},
    )
    drift = float(
        np.abs(
            np.asarray(reference_embeddings(shipped)["audio"]) - np.asarray(reference_embeddings(trained)["audio"])
        ).max()
    )
    index["models"][args.name] = {
        "file": out.name,
        "sha256": sha256_file(out),
        "bytes": out.stat().st_size,
        "config_name": shipped.config.name,
        "command": args.command,
        "ship_command": "python experiments/ship_default.py "
        + " ".join(f"--{k} {json.dumps(v)}" for k, v in vars(args).items()),
        "manifest_sha256": meta.get("manifest_sha256"),
        "train_config": meta.get("train_config"),
        "epoch": meta.get("epoch"),
        "valid_loss": meta.get("valid_loss"),
        "half_precision_max_abs_drift": drift,
        "metrics": summarize(results),
        "reference": {"clip": REFERENCE_CLIP, "texts": REFERENCE_TEXTS, **reference_embeddings(shipped)},
    }
    write_json(index_path, index)
    print(json.dumps({k: v for k, v in index["models"][args.name].items() if k != "reference"}, indent=2)[:4000])


if __name__ == "__main__":
    main()
