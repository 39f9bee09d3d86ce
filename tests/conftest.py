"""Shared fixtures: a tiny tagged corpus of tones written to disk, so tests need nothing outside the repo."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicsearch.data.manifest import Track, write_manifest

# Synthetic clustered vectors come from the benchmarks' data helper (test and benchmark data, not library code):
# tests import it as ``from conftest import gaussian_mixture_vectors``.
_BENCH_DATA = importlib.util.spec_from_file_location(
    "_benchmarks_data", Path(__file__).resolve().parents[1] / "benchmarks" / "_data.py"
)
assert _BENCH_DATA is not None and _BENCH_DATA.loader is not None
_bench_data = importlib.util.module_from_spec(_BENCH_DATA)
_BENCH_DATA.loader.exec_module(_bench_data)
gaussian_mixture_vectors = _bench_data.gaussian_mixture_vectors

# The test suite never reaches for a network: no hub downloads, no published-checkpoint downloads.
os.environ["MUSICSEARCH_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Searching runs on torch unless a test opts in to ONNX exports (tests/search/test_textenc.py): no test makes a
# first-use export of the shipped model into the user's cache.
os.environ["MUSICSEARCH_ONNX"] = "0"

TONE_TAGS = [
    ("low", "calm", "sine"),
    ("low", "loud", "square"),
    ("mid", "calm", "sine"),
    ("mid", "loud", "square"),
    ("high", "calm", "sine"),
    ("high", "loud", "square"),
    ("bass", "noisy", "sine"),
    ("treble", "noisy", "square"),
]
FREQS = [150.0, 150.0, 1200.0, 1200.0, 3000.0, 3000.0, 60.0, 7000.0]


def make_tone(freq: float, kind: str, loud: bool, noisy: bool, seconds: float, sr: int = 16000) -> np.ndarray:
    """A deterministic test signal: sine or square, soft or loud, optionally with noise."""
    t = np.arange(int(seconds * sr)) / sr
    wave = np.sin(2 * np.pi * freq * t)
    if kind == "square":
        wave = np.sign(wave) * 0.7
    wave *= 0.8 if loud else 0.2
    if noisy:
        wave += 0.1 * np.random.default_rng(int(freq)).standard_normal(len(t))
    return wave.astype(np.float32)


def write_tone_corpus(root: Path, *, seconds: float = 1.5, copies: int = 1) -> Path:
    """Write ``8 * copies`` tagged tone clips and a manifest (first copy train, others split train/valid)."""
    audio = root / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    tracks = []
    for c in range(copies):
        for i, (tags, f) in enumerate(zip(TONE_TAGS, FREQS)):
            wave = make_tone(f * (1 + 0.01 * c), tags[2], "loud" in tags, "noisy" in tags, seconds)
            path = audio / f"tone{c}_{i}.wav"
            sf.write(path, wave, 16000)
            split = "train" if c == 0 or c % 4 else "valid"
            tracks.append(Track(f"tone{c}_{i}", str(path), tags=tags, split=split, metadata={"duration": seconds}))
    manifest = root / "manifest.jsonl"
    write_manifest(manifest, tracks)
    return manifest


@pytest.fixture
def tone_corpus(tmp_path: Path) -> Path:
    """Manifest of 8 tagged 1.5 s tone clips (all train)."""
    return write_tone_corpus(tmp_path)
