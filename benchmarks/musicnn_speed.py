"""Seconds of CPU time per minute of audio for the PyTorch musicnn taggers (front end + network).

Usage::

    .venv/bin/python benchmarks/musicnn_speed.py [--seconds 60] [--repeats 3] [--threads N] [--batch-size 16]

Prints one row per model: the mel front end and the network separately, in seconds per minute of audio (best of
``--repeats`` runs on a fixed noise-plus-tones signal), and the real-time factor.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from musicsearch.teachers.musicnn import MODEL_NAMES, log_mel, patches
from musicsearch.teachers.tagger import MusicnnTagger


def _signal(seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000.0
    tones = sum(0.1 * np.sin(2 * np.pi * f * t) for f in (110.0, 220.0, 330.0, 440.0))
    return (tones + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def _best(fn: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="audio length (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement, best kept")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--batch-size", type=int, default=16, help="patches per forward pass")
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    wave = _signal(args.seconds, np.random.default_rng(0))
    per_min = 60.0 / args.seconds
    front = _best(lambda: patches(log_mel(wave)), args.repeats)
    n_patches = patches(log_mel(wave)).shape[0]
    print(f"audio: {args.seconds:.0f} s ({n_patches} patches of 3 s), torch threads: {torch.get_num_threads()}")
    print(f"{'model':<12} {'front end s/min':>16} {'network s/min':>14} {'total s/min':>12} {'x real time':>12}")
    for name in args.models:
        tagger = MusicnnTagger.load(name, batch_size=args.batch_size)
        x = patches(log_mel(wave))

        def net(tagger: MusicnnTagger = tagger, x: torch.Tensor = x) -> None:
            with torch.inference_mode():
                for i in range(0, x.shape[0], tagger.batch_size):
                    tagger.model(x[i : i + tagger.batch_size].contiguous())

        network = _best(net, args.repeats)
        total = (front + network) * per_min
        print(f"{name:<12} {front * per_min:>16.3f} {network * per_min:>14.3f} {total:>12.3f} {60.0 / total:>12.1f}")


if __name__ == "__main__":
    main()
