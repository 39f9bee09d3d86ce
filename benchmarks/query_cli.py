"""Cold-process cost of the command line: ``musicsearch query "calm piano"`` wall time and peak RSS, ONNX vs torch
(``MUSICSEARCH_ONNX=0``), and ``musicsearch --help`` now vs a commit before the CLI imported lazily; all in one
run, each the median of ``--repeats`` fresh processes, alternating the ways so that load changes hit both alike.

The store: ``--store PATH``, or a demo-size one made here (``--tracks`` seeded 4 s clips: tones, chords and noise,
indexed with the shipped ``default`` model). The default model's ONNX export is made first (as first use does) in
``$MUSICSEARCH_CACHE`` (default: a temporary folder), so every timed ONNX process finds it. Also prints the
text embedding cost in process for ``--int8`` exports: cosine to float32 on the demo queries and time per query.

Usage:
    nice -n 5 python benchmarks/query_cli.py --tracks 208 --repeats 5 --before 715dff2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

QUERY = "calm piano"


def make_store(root: Path, n: int, model: str = "default") -> Path:
    """``n`` seeded 4 s clips (sine/square tones, triads, noise at several levels) indexed with ``model``."""
    from musicsearch.data.manifest import Track, write_manifest
    from musicsearch.index.indexer import index_collection
    from musicsearch.search.api import prepare_store

    rng = np.random.default_rng(0)
    audio = root / "audio"
    audio.mkdir(parents=True)
    t = np.arange(4 * 16000) / 16000
    tracks = []
    for i in range(n):
        f0 = float(rng.uniform(80, 2000))
        kind = ("sine", "square", "chord", "noise")[i % 4]
        if kind == "noise":
            wave = rng.standard_normal(t.size) * rng.uniform(0.05, 0.3)
        else:
            wave = sum(np.sin(2 * np.pi * f0 * r * t) for r in ((1.0,) if kind != "chord" else (1.0, 1.26, 1.5)))
            wave = np.sign(wave) * 0.5 if kind == "square" else 0.3 * wave / np.abs(wave).max()
        path = audio / f"clip{i:04d}.wav"
        sf.write(path, wave.astype(np.float32), 16000)
        tracks.append(Track(f"clip{i:04d}", str(path), tags=(kind,), metadata={"duration": 4.0}))
    write_manifest(root / "manifest.jsonl", tracks)
    index_collection(root / "manifest.jsonl", root / "store", model=model, workers=0)
    prepare_store(root / "store")
    return root / "store"


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """``(wall seconds, peak RSS MB)`` of one fresh process, measured by GNU ``time`` (a small parent: a child
    forked from this process would report this process's RSS as its high-water mark)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as out:
        t0 = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-o", out.name, "-f", "%M", *argv],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"{argv} failed: {proc.stderr.decode()}")
        return wall, int(out.read().split()[-1]) / 1024.0


def int8_cost(store_model: str, tmp: Path) -> list[str]:
    """Cosine of int8 to float32 text embeddings on the demo queries, and ms per query for each (1 thread)."""
    from musicsearch.models.loading import resolve_model
    from musicsearch.models.onnx import ExportedModel, export_dir_for, export_onnx
    from musicsearch.search.demo import DEMO_QUERIES

    resolved = resolve_model(store_model)
    texts = [q.query for q in DEMO_QUERIES if q.query] + ["calm piano", "sad slow strings", "fast punk drums"]
    folder8 = export_onnx(resolved.model, tmp / "int8", weights_sha256=resolved.sha256, int8=True)
    f32 = ExportedModel.open(export_dir_for(resolved.sha256), weights_sha256=resolved.sha256, threads=1)
    i8 = ExportedModel.open(folder8, weights_sha256=resolved.sha256, threads=1)
    a, b = f32.encode_text(texts), i8.encode_text(texts)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    lines = [f"int8 vs float32 text embeddings, {len(texts)} queries: cosine min {cos.min():.4f} mean {cos.mean():.4f}"]
    for name, m in (("float32", f32), ("int8", i8)):
        times = []
        for q in texts * 5:
            t0 = time.perf_counter()
            m.encode_text([q])
            times.append(time.perf_counter() - t0)
        size = sum((m.folder / f).stat().st_size for f in ("text.onnx", "audio.onnx")) / 1e6
        lines.append(f"{name:>8}: text tower p50 {1000 * statistics.median(times):.1f} ms/query, graphs {size:.0f} MB")
    wa = np.random.default_rng(0).uniform(-0.5, 0.5, (4, f32.window_samples)).astype(np.float32)
    ea, eb = f32.encode_audio(wa), i8.encode_audio(wa)
    acos = (ea * eb).sum(1) / np.linalg.norm(ea, axis=1) / np.linalg.norm(eb, axis=1)
    lines.append(f"int8 vs float32 audio embeddings, 4 noise windows: cosine min {acos.min():.4f}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, help="an existing store (default: make a demo-size one)")
    ap.add_argument("--tracks", type=int, default=208)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--before", help="a commit whose `musicsearch --help` to time as well (git archive of src/)")
    ap.add_argument("--int8", action="store_true", help="also measure the int8 export's cost")
    ap.add_argument("--no-torch", action="store_true", help="skip the torch query (slow) ")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="query_cli."))
    os.environ.setdefault("MUSICSEARCH_CACHE", str(tmp / "cache"))
    store = args.store or make_store(tmp / "demo", args.tracks)
    from musicsearch.models.onnx import ExportedModel, export_dir_for, weights_of
    from musicsearch.search.textenc import open_embedder

    open_embedder("default", onnx=True)  # first use: the export, as `musicsearch query` would make it
    _, sha = weights_of("default")  # type: ignore[misc]
    ExportedModel.open(export_dir_for(sha), weights_sha256=sha)
    exe = str(Path(sys.executable).with_name("musicsearch"))
    env = dict(os.environ)
    ways: dict[str, tuple[list[str], dict[str, str]]] = {
        "query, ONNX": ([exe, "query", QUERY, "--store", str(store)], {**env, "MUSICSEARCH_ONNX": "1"}),
        "query, torch": ([exe, "query", QUERY, "--store", str(store)], {**env, "MUSICSEARCH_ONNX": "0"}),
        "--help": ([exe, "--help"], env),
    }
    if args.no_torch:
        del ways["query, torch"]
    if args.before:
        old = tmp / "before"
        old.mkdir()
        archive = subprocess.run(["git", "archive", args.before, "src"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        ways[f"--help at {args.before}"] = (
            [sys.executable, "-m", "musicsearch", "--help"],
            {**env, "PYTHONPATH": str(old / "src")},
        )
    for argv, e in ways.values():  # warm the page cache once; not timed
        timed(argv, e)
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in ways}
    for _ in range(args.repeats):
        for name, (argv, e) in ways.items():
            results[name].append(timed(argv, e))
    print(f"store: {store} ; cold processes, median of {args.repeats} ; load average {os.getloadavg()[0]:.1f}")
    print(f"{'command':<28} {'wall s':>8} {'peak RSS MB':>12}   (all runs: wall s)")
    for name, runs in results.items():
        walls = [w for w, _ in runs]
        rss = statistics.median(r for _, r in runs)
        print(f"{name:<28} {statistics.median(walls):>8.2f} {rss:>12.0f}   {' '.join(f'{w:.2f}' for w in walls)}")
    if args.int8:
        for line in int8_cost("default", tmp):
            print(line)


if __name__ == "__main__":
    main()
