"""Decode + resample cost per 30 s of audio for each format, and the read speed of the decoded-audio cache.

The source is 30 s of a shipped real recording (Brahms, string orchestra), upsampled to 44.1 kHz stereo (48 kHz
for Opus) and written in each format; ``load_audio`` then decodes it back to 16 kHz mono. Run::

    .venv/bin/python benchmarks/decode_throughput.py [--repeats 5]

Prints two tables: per format, median seconds per 30 s (decode only, and decode + mono + soxr HQ resample), and
for 9.91 s training windows, seconds per window read from the cache memmap versus decoded from the file.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from musicsearch.assets import librosa_music_files
from musicsearch.audio.chunking import WINDOW_SAMPLES, WINDOW_SECONDS, random_crop
from musicsearch.audio.io import ffmpeg_available, load_audio, resample
from musicsearch.data.cache import build_audio_cache
from musicsearch.data.manifest import Track

SECONDS = 30.0


def median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (page cache, lazy imports)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def make_files(tmp: Path) -> dict[str, Path]:
    brahms = next(f for f in librosa_music_files() if f.stem.startswith("brahms"))
    mono22 = load_audio(brahms, sample_rate=22050, duration=SECONDS)
    stereo44 = np.stack([resample(mono22, 22050, 44100)] * 2, axis=1) * np.array([1.0, 0.8], dtype=np.float32)
    stereo48 = np.stack([resample(mono22, 22050, 48000)] * 2, axis=1)
    files = {
        "wav (pcm16)": (tmp / "a.wav", stereo44, 44100, "WAV", "PCM_16"),
        "flac": (tmp / "a.flac", stereo44, 44100, "FLAC", "PCM_16"),
        "ogg vorbis": (tmp / "a.ogg", stereo44, 44100, "OGG", "VORBIS"),
        "ogg opus": (tmp / "a.opus", stereo48, 48000, "OGG", "OPUS"),
        "mp3": (tmp / "a.mp3", stereo44, 44100, "MP3", "MPEG_LAYER_III"),
    }
    out: dict[str, Path] = {}
    for name, (path, data, sr, fmt, subtype) in files.items():
        sf.write(path, data, sr, format=fmt, subtype=subtype)
        out[name] = path
    if ffmpeg_available():
        m4a = tmp / "a.m4a"
        cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(tmp / "a.wav"), "-c:a", "aac", str(m4a)]
        subprocess.run(cmd, check=True)
        out["m4a (aac, ffmpeg)"] = m4a
    np.save(tmp / "a.npy", load_audio(tmp / "a.wav"))
    out["npy (16 kHz)"] = tmp / "a.npy"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        files = make_files(tmp)
        print(f"decode of {SECONDS:.0f} s, 44.1 kHz stereo (Opus 48 kHz) -> 16 kHz mono; median of {args.repeats}")
        print(f"| {'format':<18} | {'MB':>5} | {'decode only s':>13} | {'load_audio s':>12} | {'x realtime':>10} |")
        print(f"|{'-' * 20}|{'-' * 7}|{'-' * 15}|{'-' * 14}|{'-' * 12}|")
        for name, path in files.items():
            if path.suffix in (".m4a", ".npy"):
                decode_only = float("nan")
            else:
                decode_only = median_time(lambda p=path: sf.read(p, dtype="float32"), args.repeats)
            full = median_time(lambda p=path: load_audio(p), args.repeats)
            mb = path.stat().st_size / 1e6
            print(f"| {name:<18} | {mb:5.2f} | {decode_only:13.4f} | {full:12.4f} | {SECONDS / full:10.0f} |")

        # training-window reads: cache memmap vs decoding the window from the file
        copies = 20
        tracks = [Track(f"t{i}", str(files["flac"])) for i in range(copies)]
        t0 = time.perf_counter()
        cache = build_audio_cache(tracks, tmp / "cache", workers=2, progress=False)
        build_s = time.perf_counter() - t0
        rng = np.random.default_rng(0)

        def cache_window() -> None:
            random_crop(cache.get(f"t{int(rng.integers(copies))}"), WINDOW_SAMPLES, rng)

        def flac_window() -> None:
            offset = float(rng.uniform(0, SECONDS - WINDOW_SECONDS))
            load_audio(files["flac"], offset=offset, duration=WINDOW_SECONDS)

        reps = max(50, args.repeats * 20)
        cache_s = median_time(cache_window, reps)
        flac_s = median_time(flac_window, args.repeats * 4)
        print()
        print(
            f"cache build: {copies} tracks x 30 s flac, 2 workers: {build_s:.2f} s ({build_s / copies:.3f} s a track)"
        )
        print(f"| {'9.91 s training window':<30} | {'s per window':>12} | {'windows/s':>9} |")
        print(f"|{'-' * 32}|{'-' * 14}|{'-' * 11}|")
        for name, s in (("cache memmap (page cache warm)", cache_s), ("flac decode with offset", flac_s)):
            print(f"| {name:<30} | {s:12.6f} | {1 / s:9.0f} |")


if __name__ == "__main__":
    main()
