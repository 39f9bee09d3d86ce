"""Training throughput on this machine: samples/s for the debug, small and paper presets, with audio read from
compressed files (FLAC / Ogg Vorbis, decoded and resampled per sample) and from the decoded-audio cache.

Usage::

    .venv/bin/python benchmarks/train_throughput.py [--presets debug,small,paper] [--steps 6] [--batch-size 16]

Prints one table row per (preset, data source): data loading alone (samples/s) and full training steps
(forward + backward + Adam, samples/s). Tracks are excerpts of the eight real recordings the package ships.
The paper preset uses the offline MiniLM text encoder here (bert-base-uncased needs a download).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import soundfile as sf
import torch

from musicsearch.assets import librosa_music_files
from musicsearch.audio.io import load_audio
from musicsearch.data.cache import build_audio_cache
from musicsearch.data.manifest import Track, write_manifest
from musicsearch.train.config import TrainConfig
from musicsearch.train.loop import Trainer

TAGS = ["classical", "orchestra", "jazz", "piano", "waltz", "drums", "trumpet", "pop"]


def make_corpus(root: Path, n: int, fmt: str) -> Path:
    """``n`` 30 s excerpts of the shipped recordings, written as ``fmt`` at 44.1 kHz stereo, and a manifest."""
    sources = [load_audio(p, sample_rate=44100) for p in librosa_music_files()]
    tracks = []
    for i in range(n):
        src = sources[i % len(sources)]
        wave = torch.from_numpy(src).repeat(1 + 30 * 44100 // max(1, len(src)))[: 30 * 44100].numpy()
        path = root / f"t{i}.{fmt}"
        sf.write(path, wave.reshape(-1, 1).repeat(2, axis=1), 44100)
        tags = (TAGS[i % len(TAGS)], TAGS[(i * 3 + 1) % len(TAGS)])
        tracks.append(Track(f"t{i}", str(path), tags=tags, split="train", metadata={"duration": 30.0}))
    manifest = root / "manifest.jsonl"
    write_manifest(manifest, tracks)
    return manifest


def measure(
    preset: str, manifest: Path, out: Path, *, cache: str | None, steps: int, batch: int
) -> tuple[float, float]:
    """(loading samples/s, training samples/s) over ``steps`` steps after one warm-up step."""
    text = "tiny-bert" if preset == "debug" else "minilm"
    cfg = TrainConfig(
        manifest=str(manifest),
        out_dir=str(out),
        preset=preset,
        text_encoder=text,
        epochs=1000,
        warmup_epochs=1,
        batch_size=batch,
        cache_dir=cache,
        log_every=10**9,
        max_steps=steps + 1,
    )
    trainer = Trainer(cfg)
    it = iter(trainer.loader)
    t0 = time.perf_counter()
    for _ in range(steps):
        next(it)
    load = steps * batch / (time.perf_counter() - t0)
    batch0 = next(iter(trainer.loader))
    model = trainer.model.train()
    gen = torch.Generator().manual_seed(0)
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        out_ = model(batch0["wave"], batch0["text"], batch0["tags"], generator=gen)
        trainer.optimizer.zero_grad()
        out_.loss.backward()
        trainer.optimizer.step()
        if i:
            times.append(time.perf_counter() - t)
    compute = batch / (sum(times) / len(times))
    # a full step pays for loading and compute in sequence when num_workers=0
    return load, 1.0 / (1.0 / load + 1.0 / compute)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="debug,small,paper")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--tracks", type=int, default=64)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rows = []
        for fmt in ("flac", "ogg"):
            (root / fmt).mkdir()
            manifest = make_corpus(root / fmt, args.tracks, fmt)
            sources = [(f"{fmt} files", None)]
            if fmt == "flac":
                from musicsearch.data.manifest import read_manifest

                build_audio_cache(read_manifest(manifest), root / "cache", workers=2, progress=False)
                sources.append(("cache (memmap)", str(root / "cache")))
            for preset in args.presets.split(","):
                for label, cache in sources:
                    batch = args.batch_size if preset != "paper" else max(2, args.batch_size // 4)
                    load, step = measure(
                        preset,
                        manifest,
                        root / f"run-{preset}-{fmt}-{cache is not None}",
                        cache=cache,
                        steps=args.steps,
                        batch=batch,
                    )
                    rows.append((preset, label, batch, load, step))
        print("| preset | audio from | batch | loading samples/s | training samples/s |")
        print("|---|---|---|---|---|")
        for preset, label, batch, load, step in rows:
            print(f"| {preset} | {label} | {batch} | {load:.1f} | {step:.2f} |")


if __name__ == "__main__":
    main()
