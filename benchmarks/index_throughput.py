"""Indexing throughput on real audio: tracks per minute, share of time decoding vs model, against a naive loop.

The collection: excerpts of the eight recordings shipped with the package
(:func:`musicsearch.assets.librosa_music_files`, Ogg Vorbis, 22 kHz stereo) cut at several offsets and written
back as Ogg Vorbis files, so decoding includes Vorbis decoding and resampling to 16 kHz as with a real library.
The model is each preset's architecture, untrained (its speed is what is measured).

Three ways over the same files, for each preset:

* ``naive``: one file at a time: decode, cut windows, embed that track's windows, next file (what peers do);
* ``batched``: :func:`musicsearch.index.indexer.index_collection` with ``workers=0``: decoding in the main
  process, windows batched across tracks, commits to a real store;
* ``pipeline``: the same with ``--workers`` decoding processes overlapping the model.

``decode`` is hashing + decoding time (CPU-seconds, summed over workers), ``model`` the forward passes; the
share is ``decode / (decode + model)``. Wall time excludes loading the model and includes store creation, the
worker pool's start and every commit.

``--models`` measures trained models (shipped names, run folders or checkpoint files) beside the presets, e.g.
the current and a candidate default in one run; ``--ways`` picks which of the three ways run.

Usage:
    nice -n 19 python benchmarks/index_throughput.py --presets debug,small --tracks 48 --seconds 30
    python benchmarks/index_throughput.py --presets "" --models default,runs/soft/cand.safetensors --ways batched
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from musicsearch.assets import librosa_music_files
from musicsearch.audio.chunking import evenly_spaced_windows
from musicsearch.audio.io import load_audio
from musicsearch.index.embedder import Embedder, WindowPlan
from musicsearch.index.indexer import default_workers, index_collection
from musicsearch.models.inference import embed_windows
from musicsearch.models.registry import build_model, model_config


def write_collection(root: Path, n_tracks: int, seconds: float) -> list[Path]:
    """``n_tracks`` Ogg Vorbis excerpts of ``seconds`` s from the shipped recordings (offsets cycle)."""
    root.mkdir(parents=True, exist_ok=True)
    sources = librosa_music_files()
    files = []
    for i in range(n_tracks):
        src = sources[i % len(sources)]
        info = sf.info(str(src))
        length = int(seconds * info.samplerate)
        usable = max(1, info.frames - length)
        start = (i // len(sources)) * 7919 * info.samplerate // 10 % usable
        data, sr = sf.read(str(src), start=start, frames=length, dtype="float32", always_2d=True)
        path = root / f"{i:03d} {src.stem}.ogg"
        sf.write(path, data, sr, format="OGG", subtype="VORBIS")
        files.append(path)
    return files


@dataclass
class Row:
    preset: str
    way: str
    workers: int
    tracks: int
    windows: int
    wall_s: float
    decode_s: float
    model_s: float

    @property
    def per_minute(self) -> float:
        return 60 * self.tracks / self.wall_s

    @property
    def decode_share(self) -> float:
        return self.decode_s / max(1e-9, self.decode_s + self.model_s)


def naive(files: list[Path], embedder: Embedder, plan: WindowPlan, preset: str) -> Row:
    """One file at a time, no overlap, one forward pass per track."""
    decode_s = model_s = 0.0
    windows = 0
    out = []
    t0 = time.perf_counter()
    for f in files:
        t = time.perf_counter()
        wave = load_audio(f)
        wins, _ = evenly_spaced_windows(wave, plan.n_windows(wave.shape[0]), plan.window_samples)
        decode_s += time.perf_counter() - t
        t = time.perf_counter()
        emb = embed_windows(embedder.model, wins, batch_size=wins.shape[0])
        out.append(emb.mean(axis=0))
        model_s += time.perf_counter() - t
        windows += wins.shape[0]
    return Row(preset, "naive", 0, len(files), windows, time.perf_counter() - t0, decode_s, model_s)


def pipeline(folder: Path, embedder: Embedder, workers: int, preset: str, scratch: Path, way: str) -> Row:
    store = scratch / f"store-{preset}-{way}"
    shutil.rmtree(store, ignore_errors=True)
    rep = index_collection(folder, store, model=embedder, workers=workers, batch_size=embedder.batch_size)
    assert not rep.failed, rep.failed
    shutil.rmtree(store, ignore_errors=True)
    return Row(preset, way, workers, rep.embedded, rep.windows, rep.wall_seconds, rep.decode_seconds, rep.model_seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="debug,small", help="model presets (debug, small, paper)")
    ap.add_argument("--tracks", type=int, default=48, help="tracks in the collection")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each excerpt")
    ap.add_argument("--workers", type=int, default=default_workers(), help="decoding processes of the pipeline")
    ap.add_argument("--batch-size", type=int, default=16, help="windows per forward pass")
    ap.add_argument("--models", default="", help="trained models to measure too (names, run folders, files)")
    ap.add_argument("--ways", default="naive,batched,pipeline", help="which ways to run")
    args = ap.parse_args()
    ways = set(args.ways.split(","))
    scratch = Path(tempfile.mkdtemp(prefix="index_throughput_"))
    try:
        files = write_collection(scratch / "music", args.tracks, args.seconds)
        rows: list[Row] = []
        todo = [("preset", p) for p in args.presets.split(",") if p] + [
            ("model", m) for m in args.models.split(",") if m
        ]
        for kind, preset in todo:
            torch.manual_seed(0)
            if kind == "preset":
                model = build_model(model_config(preset))
            else:
                from musicsearch.models.loading import resolve_model

                model = resolve_model(preset).model
            embedder = Embedder.from_model(model, source=f"{kind} {preset}", batch_size=args.batch_size)
            plan = embedder.plan()
            print(f"[{preset}] {len(files)} tracks of {args.seconds:g} s ...", file=sys.stderr, flush=True)
            embed_windows(model, np.zeros((2, plan.window_samples), np.float32))  # warm-up
            n0 = len(rows)
            if "naive" in ways:
                rows.append(naive(files, embedder, plan, preset))
            if "batched" in ways:
                rows.append(pipeline(scratch / "music", embedder, 0, preset, scratch, "batched"))
            if "pipeline" in ways:
                rows.append(pipeline(scratch / "music", embedder, args.workers, preset, scratch, "pipeline"))
            for r in rows[n0:]:
                print(f"  {r.way}: {r.per_minute:.0f} tracks/min", file=sys.stderr)
        print(
            f"\nindexing throughput: {args.tracks} Ogg Vorbis excerpts of {args.seconds:g} s, batch {args.batch_size} "
            f"windows, torch threads {torch.get_num_threads()}\n"
        )
        print("| preset | way | workers | windows | wall s | tracks/min | decode CPU-s | model s | decode share |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(
                f"| {r.preset} | {r.way} | {r.workers} | {r.windows} | {r.wall_s:.1f} | {r.per_minute:.0f} "
                f"| {r.decode_s:.1f} | {r.model_s:.1f} | {100 * r.decode_share:.0f} % |"
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
