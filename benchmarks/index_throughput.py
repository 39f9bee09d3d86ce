"""Indexing throughput on real audio, torch against ONNX Runtime: tracks per minute, CPU time, context switches.

The collection: excerpts of the eight recordings shipped with the package
(:func:`musicsearch.assets.librosa_music_files`, Ogg Vorbis, 22 kHz stereo) cut at several offsets and written
back as Ogg Vorbis files, so decoding includes Vorbis decoding and resampling to 16 kHz as with a real library.
``--models`` measures trained models (``default``: the shipped one); ``--presets`` untrained architectures.
``--files DIR --file-tracks N`` adds a collection of real files: a fixed sample (``--file-seed``) of ``N`` tracks of
``DIR/manifest.jsonl`` (or of the audio files under ``DIR``), indexed whole (long tracks are decoded window by
window, :func:`~musicsearch.index.embedder.decode_track`).

The ways over the same files, for each model, collection and runtime:

* ``naive``: one file at a time: decode (:func:`~musicsearch.index.embedder.decode_track`, the indexer's own),
  embed that track's windows on every core, next file (no store);
* ``batched``: :func:`musicsearch.index.indexer.index_collection` with ``workers=0``: decoding in the main
  process, windows batched across tracks, commits to a real store;
* ``pipeline``: the same with ``--workers`` decoding processes overlapping the model, each forward pass on the
  cores the decoders running then leave (the indexer's rule, round 2);
* ``pipeline-fixed`` (round 1's rule): the model on the cores the workers leave, for the whole run;
* ``pipeline-all`` (only when asked for): the model on every core for the whole run, the decoders beside it.

**The bound.** Before the ways run, ``D`` (CPU seconds to decode a track, one thread) and ``M`` (CPU seconds of the
model for its windows on every core, with ``Mw`` its wall seconds) are measured per collection and runtime. The
naive loop takes ``D + Mw`` a track; a perfect overlap on ``C`` cores ``(D + M) / C``; their ratio is the most
any pipeline can gain over the naive loop on this machine: ``(2D + M) / (D + M)`` on 2 cores when the model
scales perfectly (so 1.5x needs ``D >= M``).

Runtimes (``--runtimes``):

* ``before``: the indexer as it was before the ONNX work (commit 044db8e), torch only: batch 16, the model on
  torch's default threads (one per core) and decoding workers on their libraries' default thread counts,
  whatever the workers take (the pool's initializer swapped back; naive is the same as ``torch``'s, not re-run);
* ``torch``: torch now: its tuned batch, the model on the cores the decoding workers leave
  (:func:`~musicsearch.index.embedder.model_threads`), workers on one thread;
* ``onnx``: the same with the ONNX Runtime session of the model's export (made on first use for a shipped
  model, into ``$MUSICSEARCH_CACHE/onnx``; into a scratch folder for a preset).

``user``/``sys`` are CPU seconds of this process and its children, decoding workers included (the fork server is
stopped after each way so its workers' time is counted); ``vcs``/``ics`` are voluntary/involuntary context
switches over the same processes: threads fighting over cores show as system time and context switches. ``decode``
is hashing + decoding time (seconds summed over jobs), ``model`` the forward passes. Wall time excludes loading the
model and includes store creation, the worker pool's start and every commit. ``--rounds`` repeats every way,
interleaved, and reports the median.

``--batch-sweep 1,2,4,8,16`` first times the model alone (ms per window, best of 3 over 32 windows of the
collection) for each runtime, batch size and thread count (all cores; the cores the pipeline's workers leave).

Usage (each a single command; say the load average, ``uptime``, with the figures):
    python benchmarks/index_throughput.py --presets "" --models default --seconds 6,30 --tracks 48
    python benchmarks/index_throughput.py --presets "" --models default --seconds 30 --tracks 8 --ways "" \
        --batch-sweep 1,2,4,8,16,32
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing import forkserver
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from musicsearch.assets import librosa_music_files
from musicsearch.audio.io import AUDIO_EXTENSIONS
from musicsearch.index import indexer
from musicsearch.index.embedder import (
    DEFAULT_BATCH_TORCH,
    Embedder,
    OnnxAudioEmbedder,
    WindowPlan,
    available_cores,
    decode_track,
    load_embedder,
    model_threads,
    open_index_embedder,
    state_checksum,
)
from musicsearch.index.indexer import default_workers, index_collection
from musicsearch.models.onnx import ExportedModel, export_onnx

# No torch (nor anything importing it) at module level: decoding workers import this script as their __mp_main__
# (multiprocessing's spawn preparation), and torch there would cost each pipeline run seconds of start-up.

#: The batch the indexer used before it was tuned (index_collection's and the CLI's default then).
BEFORE_BATCH = 16


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


def sample_files(source: Path, n: int, seed: int, out: Path) -> tuple[Path, list[Path]]:
    """A fixed sample of ``n`` real tracks of ``source`` (its ``manifest.jsonl``, else its audio files), written
    as a manifest ``out`` of absolute paths (the indexer's source) with the files."""
    listing = source / "manifest.jsonl" if source.is_dir() else source
    if listing.is_file():
        rows = [json.loads(line) for line in listing.read_text().splitlines() if line.strip()]
        paths = sorted(str((listing.parent / r["audio_path"]).resolve()) for r in rows)
    else:
        paths = sorted(str(p.resolve()) for p in source.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    if len(paths) < n:
        raise SystemExit(f"{source} has {len(paths)} audio files, fewer than --file-tracks {n}")
    chosen = [Path(p) for p in random.Random(seed).sample(paths, n)]
    out.write_text(
        "".join(json.dumps({"track_id": f"{i:03d}", "audio_path": str(p)}) + "\n" for i, p in enumerate(chosen))
    )
    return out, chosen


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all its threads)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


@dataclass
class Cost:
    """Per track: ``decode`` CPU s (one thread), the model's CPU s ``model`` and wall s ``model_wall`` on every
    core, for one collection and runtime."""

    decode: float
    model: float
    model_wall: float

    def bound(self, cores: int) -> float:
        """Naive loop time over a perfect overlap's: ``(D + Mw) / ((D + M) / cores)``."""
        return (self.decode + self.model_wall) * cores / (self.decode + self.model)


def measure_cost(files: list[Path], embedder: Embedder, plan: WindowPlan) -> Cost:
    """``D``, ``M`` and ``Mw`` per track (the decoded windows kept in memory between the two)."""
    c0 = cpu_seconds()
    decoded = [decode_track(f, plan) for f in files]
    d = cpu_seconds() - c0
    with embedder.using_threads(model_threads(0)):
        embedder.embed_windows(decoded[0].windows[:1])  # the session for this thread count
        c0, t0 = cpu_seconds(), time.perf_counter()
        for dec in decoded:
            embedder.embed_windows(dec.windows)
        m, mw = cpu_seconds() - c0, time.perf_counter() - t0
    n = len(files)
    return Cost(d / n, m / n, mw / n)


@dataclass
class Usage:
    """CPU seconds and context switches of this process and its waited-for children."""

    user: float
    sys: float
    vcs: int
    ics: int

    @classmethod
    def now(cls) -> Usage:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(
            me.ru_utime + kids.ru_utime, me.ru_stime + kids.ru_stime, me.ru_nvcsw + kids.ru_nvcsw,
            me.ru_nivcsw + kids.ru_nivcsw,
        )  # fmt: skip

    def __sub__(self, other: Usage) -> Usage:
        return Usage(self.user - other.user, self.sys - other.sys, self.vcs - other.vcs, self.ics - other.ics)


@dataclass
class Row:
    model: str
    seconds: str  # the collection: "6 s", "30 s", "real"
    runtime: str
    way: str
    workers: int
    threads: int
    batch: int
    tracks: int = 0
    windows: int = 0
    walls: list[float] = field(default_factory=list)
    usages: list[Usage] = field(default_factory=list)
    decode_s: float = 0.0
    model_s: float = 0.0

    @property
    def wall_s(self) -> float:
        return statistics.median(self.walls)

    @property
    def per_minute(self) -> float:
        return 60 * self.tracks / self.wall_s

    def usage(self) -> Usage:
        """The median round's usage (by wall time)."""
        order = sorted(range(len(self.walls)), key=lambda i: self.walls[i])
        return self.usages[order[len(order) // 2]]


def _stop_fork_server() -> None:
    """Stop this process's fork server (if running), so that it and the workers it forked are waited for and
    their CPU time shows in ``RUSAGE_CHILDREN``; the next pool starts a new one."""
    server: Any = getattr(forkserver, "_forkserver", None)
    if server is not None and getattr(server, "_forkserver_pid", None) is not None:
        server._stop()


class _Before(Embedder):
    """The torch model with the indexer's thread handling as it was: ``using_threads`` leaves torch's threads
    at the process default."""

    @contextlib.contextmanager
    def using_threads(self, threads: int) -> Iterator[None]:
        yield


@contextlib.contextmanager
def _pool_as_before() -> Iterator[None]:
    """The decoding pool as it was: workers keep their libraries' default thread counts."""
    original = indexer._pool

    def pool(workers: int) -> Any:
        p = original(workers)
        p._initializer = indexer._watch_parent  # type: ignore[attr-defined]  # before: no thread limits
        return p

    indexer._pool = pool  # type: ignore[assignment]
    try:
        yield
    finally:
        indexer._pool = original  # type: ignore[assignment]


@contextlib.contextmanager
def _model_threads_fixed(threads: int) -> Iterator[None]:
    """The indexer gives the model ``threads`` threads for the whole run, whatever decodes beside it (round 1's
    rule with ``threads = cores - workers``; ``pipeline-all`` with every core; the ``before`` runtime)."""
    cores, left, running = indexer.available_cores, indexer.model_threads, indexer._Decoding.running
    indexer.available_cores = lambda: threads  # type: ignore[assignment]
    indexer.model_threads = lambda workers, cores=None: threads  # type: ignore[assignment]
    indexer._Decoding.running = lambda self: 0  # type: ignore[method-assign]
    try:
        yield
    finally:
        indexer.available_cores, indexer.model_threads = cores, left  # type: ignore[assignment]
        indexer._Decoding.running = running  # type: ignore[method-assign]


def naive(files: list[Path], embedder: Embedder, plan: WindowPlan, row: Row) -> None:
    """One file at a time, no overlap, one model call per track, the model on every core."""
    decode_s = model_s = 0.0
    windows = 0
    one_call = copy.copy(embedder)
    one_call.batch_size = plan.max_windows
    t0 = time.perf_counter()
    with one_call.using_threads(model_threads(0)):
        for f in files:
            t = time.perf_counter()
            wins = decode_track(f, plan).windows
            decode_s += time.perf_counter() - t
            t = time.perf_counter()
            one_call.embed_windows(wins).mean(axis=0)
            model_s += time.perf_counter() - t
            windows += wins.shape[0]
    row.walls.append(time.perf_counter() - t0)
    row.tracks, row.windows, row.decode_s, row.model_s = len(files), windows, decode_s, model_s


def indexed(folder: Path, embedder: Embedder, row: Row, scratch: Path, *, before: bool) -> None:
    store = scratch / "store"
    shutil.rmtree(store, ignore_errors=True)
    with contextlib.ExitStack() as stack:
        if before:
            stack.enter_context(_pool_as_before())
        if before or row.way in ("pipeline-all", "pipeline-fixed"):
            stack.enter_context(_model_threads_fixed(row.threads))
        rep = index_collection(folder, store, model=embedder, workers=row.workers, batch_size=row.batch)
    assert not rep.failed, rep.failed
    shutil.rmtree(store, ignore_errors=True)
    row.walls.append(rep.wall_seconds)
    row.tracks, row.windows, row.decode_s, row.model_s = (
        rep.embedded,
        rep.windows,
        rep.decode_seconds,
        rep.model_seconds,
    )


def embedders(kind: str, name: str, scratch: Path, runtimes: list[str]) -> dict[str, Embedder]:
    """The model ``name`` on each runtime asked for."""
    out: dict[str, Embedder] = {}
    if kind == "model":
        torch_emb = load_embedder(name)
    else:
        import torch

        from musicsearch.models.registry import build_model, model_config

        torch.manual_seed(0)
        torch_emb = Embedder.from_model(build_model(model_config(name)), source=f"preset {name}")
    for runtime in runtimes:
        if runtime == "before":
            e = _Before(torch_emb.model, name=torch_emb.name, checksum=torch_emb.checksum, source=torch_emb.source)
            e.batch_size = BEFORE_BATCH
        elif runtime == "torch":
            e = copy.copy(torch_emb)
            e.batch_size = DEFAULT_BATCH_TORCH
        elif kind == "model":
            e = open_index_embedder(name, onnx=True)
            if not isinstance(e, OnnxAudioEmbedder):
                raise SystemExit(f"model {name} has no usable ONNX export (see the warnings above)")
        else:
            sha = state_checksum(torch_emb.model)
            folder = export_onnx(torch_emb.model, scratch / f"onnx-{name}", weights_sha256=sha, source=name)
            e = OnnxAudioEmbedder(ExportedModel.open(folder, weights_sha256=sha), source=name)
        out[runtime] = e
    return out


def batch_sweep(emb: dict[str, Embedder], files: list[Path], sizes: list[int], workers: int) -> list[str]:
    """Model-only ms per window for each runtime, thread count and batch size (best of 3 over 32 windows)."""
    some = next(iter(emb.values()))
    plan = some.plan()
    wins = np.concatenate([decode_track(f, plan).windows for f in files])
    while wins.shape[0] < 32:
        wins = np.concatenate([wins, wins])
    wins = wins[:32]
    lines = []
    for threads in sorted({model_threads(0), model_threads(workers)}, reverse=True):
        for runtime, e in emb.items():
            if runtime == "before":
                continue
            cells = []
            with e.using_threads(threads):
                for b in sizes:
                    trial = copy.copy(e)
                    trial.batch_size = b
                    trial.embed_windows(wins[:b])  # warm-up (and the session for this thread count)
                    best = min(_timed(trial, wins) for _ in range(3))
                    cells.append(f"{1000 * best / wins.shape[0]:.1f}")
            lines.append(f"| {runtime} | {threads} | " + " | ".join(cells) + " |")
            print(f"  sweep {runtime} {threads} threads: {cells}", file=sys.stderr, flush=True)
    return lines


def _timed(e: Embedder, wins: np.ndarray) -> float:
    t = time.perf_counter()
    e.embed_windows(wins)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="", help="untrained model presets to measure (debug, small, paper)")
    ap.add_argument("--models", default="default", help="trained models (shipped names, run folders, files)")
    ap.add_argument("--tracks", type=int, default=48, help="tracks in each collection")
    ap.add_argument("--seconds", default="6,30", help="excerpt lengths in seconds, comma-separated")
    ap.add_argument("--workers", type=int, default=default_workers(), help="decoding processes of the pipeline")
    ap.add_argument("--runtimes", default="before,torch,onnx", help="which of before, torch, onnx to run")
    ap.add_argument(
        "--ways", default="naive,batched,pipeline", help="which ways to run (and pipeline-fixed, pipeline-all)"
    )
    ap.add_argument("--files", type=Path, default=None, help="a folder (or manifest) of real tracks to sample")
    ap.add_argument("--file-tracks", type=int, default=24, help="real tracks in the sample of --files")
    ap.add_argument("--file-seed", type=int, default=0, help="seed of the sample of --files")
    ap.add_argument("--rounds", type=int, default=1, help="repeat every way this many times (interleaved)")
    ap.add_argument("--batch-sweep", default="", help="batch sizes to time the model alone at, e.g. 1,2,4,8,16")
    args = ap.parse_args()
    ways = [w for w in args.ways.split(",") if w]
    runtimes = [r for r in args.runtimes.split(",") if r]
    lengths = [float(s) for s in args.seconds.split(",") if s]
    import torch

    torch_default = torch.get_num_threads()
    scratch = Path(tempfile.mkdtemp(prefix="index_throughput_"))
    sweep_lines: list[str] = []
    rows: list[Row] = []
    costs: list[tuple[str, str, str, Cost]] = []  # (model, collection, runtime, cost)
    try:
        collections: list[tuple[str, Path, list[Path]]] = []  # (label, indexer source, files)
        for seconds in lengths:
            folder = scratch / f"music-{seconds:g}"
            collections.append((f"{seconds:g} s", folder, write_collection(folder, args.tracks, seconds)))
        if args.files is not None:
            collections.append(
                ("real", *sample_files(args.files, args.file_tracks, args.file_seed, scratch / "real.jsonl"))
            )
        todo = [("preset", p) for p in args.presets.split(",") if p] + [
            ("model", m) for m in args.models.split(",") if m
        ]
        for kind, name in todo:
            emb = embedders(kind, name, scratch, runtimes)
            plan = next(iter(emb.values())).plan()
            for e in emb.values():  # warm-up: first calls, sessions
                with e.using_threads(model_threads(0)):
                    e.embed_windows(np.zeros((2, plan.window_samples), np.float32))
            for label, folder, files in collections:
                if args.batch_sweep:
                    sizes = [int(b) for b in args.batch_sweep.split(",")]
                    sweep_lines += [
                        f"| {name} | {label} | " + line[2:] for line in batch_sweep(emb, files, sizes, args.workers)
                    ]
                if ways:
                    for runtime, e in emb.items():
                        if runtime != "before":  # the same model as torch's
                            costs.append((name, label, runtime, measure_cost(files, e, plan)))
                plan_rows: list[tuple[Row, Embedder]] = []
                for runtime, e in emb.items():
                    for way in ways:
                        if way in ("naive", "pipeline-all") and runtime == "before":
                            continue  # the same as torch's naive / before's pipeline
                        workers = args.workers if way.startswith("pipeline") else 0
                        threads = model_threads(workers)
                        if way in ("naive", "pipeline-all"):
                            threads = model_threads(0)
                        elif runtime == "before":
                            threads = torch_default  # torch's own default, whatever decodes beside it
                        batch = plan.max_windows if way == "naive" else e.batch_size
                        plan_rows.append((Row(name, label, runtime, way, workers, threads, batch), e))
                for r in range(args.rounds):
                    for row, e in plan_rows:
                        print(f"[{name} {label} round {r + 1}] {row.runtime} {row.way} ...", file=sys.stderr)
                        _stop_fork_server()
                        u0 = Usage.now()
                        if row.way == "naive":
                            naive(files, e, plan, row)
                        else:
                            indexed(folder, e, row, scratch, before=row.runtime == "before")
                        _stop_fork_server()
                        row.usages.append(Usage.now() - u0)
                        print(
                            f"  {row.walls[-1]:.1f} s, {60 * row.tracks / row.walls[-1]:.0f} tracks/min",
                            file=sys.stderr,
                        )
                rows += [r for r, _ in plan_rows]
        _report(args, rows, sweep_lines, costs)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _report(
    args: argparse.Namespace, rows: list[Row], sweep_lines: list[str], costs: list[tuple[str, str, str, Cost]]
) -> None:
    cores = available_cores()
    real = f", {args.file_tracks} real tracks of {args.files} (seed {args.file_seed})" if args.files else ""
    print(
        f"\nindexing throughput: {args.tracks} Ogg Vorbis excerpts a length{real}, {cores} cores, pipeline with "
        f"{args.workers} decoding worker(s), median of {args.rounds} round(s), load average "
        f"{os.getloadavg()[0]:.1f} at the end\n"
    )
    if sweep_lines:
        sizes = args.batch_sweep.split(",")
        print("model alone, ms per window (best of 3, 32 windows of the collection), by batch size\n")
        print("| model | track s | runtime | threads | " + " | ".join(f"batch {b}" for b in sizes) + " |")
        print("|---|---:|---|---:|" + "---:|" * len(sizes))
        print("\n".join(sweep_lines) + "\n")
    if not rows:
        return
    base = {(r.model, r.seconds): r for r in rows if r.runtime == "torch" and r.way == "naive"}
    same_way = {(r.model, r.seconds, r.way): r for r in rows if r.runtime == "before"}
    naive_of = {(r.model, r.seconds, r.runtime): r for r in rows if r.way == "naive"}
    print(
        "| model | track s | runtime | way | workers | model threads | batch | windows | wall s | tracks/min "
        "| x naive (same runtime) | x naive torch | x before (same way) | user s | sys s | vol. cs | invol. cs "
        "| decode s | model s |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        u = r.usage()
        own = naive_of.get((r.model, r.seconds, "torch" if r.runtime == "before" else r.runtime))
        nt, bw = base.get((r.model, r.seconds)), same_way.get((r.model, r.seconds, r.way.split("-")[0]))
        follows = r.way == "pipeline" and r.runtime == "onnx"  # the model's threads follow the decoders
        threads = f"{max(1, cores - r.workers)}-{cores}" if follows else r.threads
        print(
            f"| {r.model} | {r.seconds} | {r.runtime} | {r.way} | {r.workers} | {threads} | {r.batch} "
            f"| {r.windows} | {r.wall_s:.1f} | {r.per_minute:.0f} | {_ratio(r, own)} | {_ratio(r, nt)} "
            f"| {_ratio(r, bw)} "
            f"| {u.user:.1f} | {u.sys:.1f} | {u.vcs} | {u.ics} | {r.decode_s:.1f} | {r.model_s:.1f} |"
        )

    if costs:
        print(
            "\nper track: D = CPU s to decode (one thread), M = CPU s and Mw = wall s of the model on every core; "
            f"bound = (D + Mw) / ((D + M) / {cores}), the most a pipeline can gain over the naive loop here\n"
        )
        print(
            "| model | collection | runtime | D ms | M ms | Mw ms | D / M | bound | pipeline x naive | fixed x naive |"
        )
        print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for model, label, runtime, c in costs:
            own = naive_of.get((model, label, runtime))
            got = {r.way: _ratio(r, own) for r in rows if (r.model, r.seconds, r.runtime) == (model, label, runtime)}
            print(
                f"| {model} | {label} | {runtime} | {1000 * c.decode:.0f} | {1000 * c.model:.0f} "
                f"| {1000 * c.model_wall:.0f} | {c.decode / c.model:.2f} | {c.bound(cores):.2f} "
                f"| {got.get('pipeline', '-')} | {got.get('pipeline-fixed', '-')} |"
            )


def _ratio(row: Row, ref: Row | None) -> str:
    return "-" if ref is None else f"{row.per_minute / ref.per_minute:.2f}"


if __name__ == "__main__":
    main()
