"""Speed of the synthetic corpus generator (``musicsearch synth``): cost of each stage per clip and corpus throughput.

Run::

    .venv/bin/python benchmarks/synth_speed.py [--clips 24] [--seconds 10] [--corpus 48] [--workers 1 2]

Prints three tables:

1. per-clip stages (median over ``--clips`` clips of all styles): compose (plan + notes + MIDI + tags), render with
   libfluidsynth at the render rate, master (mono, soxr to 16 kHz, room, loudness), FLAC encode;
2. render cost by FluidSynth sample rate (16 kHz direct vs. rendering higher and resampling);
3. corpus throughput of ``make_corpus`` (the CLI's engine) for each worker count: clips/s and wall seconds a clip,
   writing audio, MIDI, records, manifest and statistics into a temporary folder.

Timings are wall-clock on a shared machine: rerun for stable numbers.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from musicsearch.data.synth.compose import compose_clip
from musicsearch.data.synth.corpus import describe, make_corpus
from musicsearch.data.synth.render import RENDER_RATE, FluidSynth, encode_flac, find_soundfont, master
from musicsearch.data.synth.styles import STYLES, get_style


def stage_table(n: int, seconds: float) -> None:
    sf2 = find_soundfont()
    t0 = time.perf_counter()
    synth = FluidSynth(sf2)
    init = time.perf_counter() - t0
    rows: dict[str, list[float]] = {"compose": [], "render": [], "master": [], "flac": [], "total": []}
    for i in range(n):
        style = STYLES[i % len(STYLES)].name
        t0 = time.perf_counter()
        comp = compose_clip(0, i, seconds=seconds, style=style)
        describe(comp, 0, i)
        t1 = time.perf_counter()
        stereo = synth.render(comp.midi, seconds)
        t2 = time.perf_counter()
        st = get_style(style)
        audio = master(stereo, in_rate=synth.sample_rate, reverb=st.reverb, rt60=st.rt60, dynamics=comp.plan.dynamics)
        t3 = time.perf_counter()
        encode_flac(audio)
        t4 = time.perf_counter()
        for key, dt in zip(rows, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
            rows[key].append(dt)
    print(f"\nper-clip stages, {n} clips of {seconds:g} s (all {len(STYLES)} styles), soundfont {sf2.name}")
    print(f"synth setup (settings + first soundfont load): {init * 1000:.0f} ms")
    print(f"{'stage':<10}{'median ms':>12}{'max ms':>10}")
    for key, values in rows.items():
        print(f"{key:<10}{statistics.median(values) * 1000:>12.1f}{max(values) * 1000:>10.1f}")
    total = statistics.median(rows["total"])
    print(f"=> {total:.3f} s a clip in one process, {seconds / total:.0f}x real time")


def rate_table(n: int, seconds: float) -> None:
    sf2 = find_soundfont()
    comps = [compose_clip(1, i, seconds=seconds, style=STYLES[i % len(STYLES)].name) for i in range(n)]
    print(f"\nrender cost by FluidSynth sample rate ({n} clips of {seconds:g} s; corpus default {RENDER_RATE} Hz)")
    print(f"{'rate Hz':<10}{'render ms':>12}{'+ master ms':>13}")
    for rate in (16000, 22050, 32000, 44100):
        synth = FluidSynth(sf2, sample_rate=rate)
        r, m = [], []
        for comp in comps:
            t0 = time.perf_counter()
            stereo = synth.render(comp.midi, seconds)
            t1 = time.perf_counter()
            master(stereo, in_rate=rate, dynamics=comp.plan.dynamics)
            r.append(t1 - t0)
            m.append(time.perf_counter() - t1)
        print(f"{rate:<10}{statistics.median(r) * 1000:>12.1f}{statistics.median(m) * 1000:>13.1f}")


def corpus_table(n: int, seconds: float, workers: list[int]) -> None:
    print(f"\ncorpus throughput: make_corpus of {n} clips of {seconds:g} s (audio + MIDI + records + manifest + stats)")
    print(f"{'workers':<9}{'wall s':>9}{'clips/s':>10}{'s a clip':>10}{'5000 clips':>12}")
    for w in workers:
        with tempfile.TemporaryDirectory() as tmp:
            s = make_corpus(tmp, n, seed=123, seconds=seconds, workers=w)
        eta = 5000 / s.clips_per_second / 60 if s.clips_per_second else float("nan")
        print(f"{w:<9}{s.seconds:>9.1f}{s.clips_per_second:>10.2f}{s.seconds / n:>10.3f}{eta:>10.1f} min")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=24, help="clips for the stage and rate tables")
    ap.add_argument("--seconds", type=float, default=10.0, help="clip length")
    ap.add_argument("--corpus", type=int, default=48, help="clips for the corpus throughput table")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to time")
    args = ap.parse_args()
    stage_table(args.clips, args.seconds)
    rate_table(max(4, args.clips // 2), args.seconds)
    corpus_table(args.corpus, args.seconds, args.workers)


if __name__ == "__main__":
    main()
