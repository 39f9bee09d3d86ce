"""Cost of an evaluation suite on this CPU, in seconds per 1,000 tracks; prints a table.

    .venv/bin/python benchmarks/eval_suite.py [--presets debug small] [--tracks 48] [--windows 3]

Rows:

* **embedding, model only**: ``embed_windows`` on real music windows cut from the shipped librosa recordings
  (``musicsearch.assets.librosa_music_files()``), ``--windows`` windows per track, batch 32.
* **embedding, pipeline**: ``embed_tracks`` end to end without the cache -- decoding the Ogg files (22,050 Hz ->
  16 kHz), cutting evenly spaced windows, the model, averaging -- on ``--tracks`` 30 s segments of the recordings,
  two decoding threads.
* **cache read**: the same ``embed_tracks`` call answered from the embedding cache.
* **metrics**: with the small preset's text tower (MiniLM) on 1,000 random 128-d track embeddings:
  tag retrieval over 50 and 1,054 tags (text embedding of the tags included), sentence retrieval on 1,000
  captions (caption embedding included) and zero-shot over 10 labels.

Embedding rows time ``--tracks`` tracks and scale to 1,000; times are wall clock, one process, untrained weights
(speed does not depend on training).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from musicsearch.assets import librosa_music_files
from musicsearch.audio.io import audio_info, load_audio
from musicsearch.data.manifest import Track
from musicsearch.data.sources.labels import LabelledDataset
from musicsearch.eval import published
from musicsearch.eval.embeddings import embed_tracks
from musicsearch.eval.retrieval import evaluate_sentence_retrieval, evaluate_tag_retrieval, select_caption_pairs
from musicsearch.eval.zeroshot import evaluate_zeroshot
from musicsearch.models.inference import embed_windows, track_windows
from musicsearch.models.registry import build_model, model_config

SEGMENT_SECONDS = 30.0


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def segments(n: int) -> list[Track]:
    """``n`` 30 s segments of the shipped recordings (cycling through them, consecutive offsets)."""
    files = librosa_music_files()
    durations = [audio_info(f).duration for f in files]
    tracks = []
    for i in range(n):
        f, d = files[i % len(files)], durations[i % len(files)]
        start = float((i // len(files)) * 7.0 % max(1.0, d - SEGMENT_SECONDS))
        end = min(d, start + SEGMENT_SECONDS)
        tracks.append(Track(f"seg{i:04d}", str(f), start=start, end=end))
    return tracks


def music_windows(n_tracks: int, window: int, n_windows: int) -> np.ndarray:
    """``(n_tracks * n_windows, window)`` float32 windows of real music (30 s segments of the recordings)."""
    waves = [load_audio(f) for f in librosa_music_files()]
    out = []
    for i in range(n_tracks):
        wave = waves[i % len(waves)]
        seg = wave[: int(SEGMENT_SECONDS * 16000)]
        w, _ = track_windows(seg, window_samples=window, n_windows=n_windows)
        out.append(w)
    return np.concatenate(out)


def bench_preset(preset: str, tracks: list[Track], n_windows: int) -> list[tuple[str, str, float, float]]:
    """Embedding rows of one model preset."""
    per_k = 1000.0 / len(tracks)
    model = build_model(model_config(preset, objective="contrastive")).eval()
    window = model.config.audio.window_samples
    windows = music_windows(len(tracks), window, n_windows)
    embed_windows(model, windows[:4])  # warm-up
    t, _ = timed(lambda: embed_windows(model, windows, batch_size=32))
    rows = [(f"embedding, model only ({preset})", f"{windows.shape[0]} windows of {window / 16000:g} s", t, t * per_k)]
    with tempfile.TemporaryDirectory() as cache:

        def run() -> Any:
            return embed_tracks(model, tracks, dataset="bench", n_windows=n_windows, cache_dir=cache, num_workers=2)

        t, emb = timed(run)
        assert emb.ok.all() and not emb.from_cache
        rows.append((f"embedding, pipeline ({preset})", f"{len(tracks)} x 30 s Ogg, decode+model", t, t * per_k))
        t, emb = timed(run)
        assert emb.from_cache
        rows.append((f"cache read ({preset})", f"{len(tracks)} tracks", t, t * per_k))
    return rows


def bench_metrics(n: int = 1000) -> list[tuple[str, str, float, float]]:
    """Metric rows (small preset's text tower, random track embeddings)."""
    model = build_model(model_config("small", objective="contrastive")).eval()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, model.config.joint_dim)).astype(np.float32)
    rows = []
    tags: list[tuple[str, ...]] = []
    for k in (50, 1054):
        vocab = published.ecals_tags(k)
        tags = [tuple(str(t) for t in rng.choice(vocab, size=5, replace=False)) for _ in range(n)]
        t, _ = timed(lambda vocab=vocab, tags=tags: evaluate_tag_retrieval(model, x, tags, vocab))
        rows.append((f"tag retrieval, {k} tags", f"{n} tracks, incl. {k} text embeddings", t, t * 1000.0 / n))
    caps = [Track(f"t{i}", "/x", tags=tags[i], captions=(", ".join(tags[i][:3]),)) for i in range(n)]
    pairs = select_caption_pairs(caps, n=n)
    t, _ = timed(lambda: evaluate_sentence_retrieval(model, x, pairs))
    rows.append(("sentence retrieval", f"{n} captions, incl. caption embeddings", t, t * 1000.0 / n))
    names = tuple(f"genre {i}" for i in range(10))
    test = tuple(Track(f"t{i}", "/x", split="test") for i in range(n))
    ds = LabelledDataset("bench", "multiclass", names, test, np.arange(n, dtype=np.int64) % 10, "accuracy")
    t, _ = timed(lambda: evaluate_zeroshot(model, x, ds))
    rows.append(("zero-shot, 10 labels", f"{n} tracks", t, t * 1000.0 / n))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["debug", "small"])
    ap.add_argument("--tracks", type=int, default=48, help="tracks timed per embedding row (scaled to 1,000)")
    ap.add_argument("--windows", type=int, default=3, help="windows per track (the paper: 3 retrieval, 8 transfer)")
    ap.add_argument("--no-metrics", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    rows: list[tuple[str, str, float, float]] = []  # what, detail, seconds, seconds per 1,000 tracks
    tracks = segments(args.tracks)
    for preset in args.presets:
        rows += bench_preset(preset, tracks, args.windows)
    if not args.no_metrics:
        rows += bench_metrics()
    print(f"# eval suite cost: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.windows} windows/track")  # fmt: skip
    print(f"| {'what':<34} | {'detail':<42} | {'seconds':>8} | {'s / 1,000 tracks':>16} |")
    print(f"|{'-' * 36}|{'-' * 44}|{'-' * 10}|{'-' * 18}|")
    for what, detail, t, tk in rows:
        print(f"| {what:<34} | {detail:<42} | {t:>8.2f} | {tk:>16.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
