"""The evaluation embedding cache: oracle against per-track embedding, reuse, invalidation, bad files."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import write_tone_corpus
from musicsearch.audio.io import load_audio
from musicsearch.data.manifest import Track, read_manifest
from musicsearch.errors import MusicSearchError
from musicsearch.eval.embeddings import (
    WindowPolicy,
    audio_identity,
    cache_key,
    cached_embeddings,
    default_cache_dir,
    embed_tracks,
)
from musicsearch.models.inference import embed_track
from musicsearch.models.registry import build_model, model_config


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(model_config("debug", objective="contrastive", text_encoder="tiny-bert"))


@pytest.fixture
def tracks(tmp_path: Path) -> list[Track]:
    return read_manifest(write_tone_corpus(tmp_path / "corpus", seconds=2.5))


class CountingModel:
    """Counts calls of ``encode_audio`` on a real model (everything else passes through)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def encode_audio(self, wave: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model.encode_audio(wave)

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        return self.model.parameters()


def test_matches_per_track_oracle_in_order(model: torch.nn.Module, tracks: list[Track], tmp_path: Path) -> None:
    got = embed_tracks(model, tracks, dataset="tones", n_windows=3, cache_dir=tmp_path / "c", batch_size=5)
    assert got.embeddings.shape == (len(tracks), model.config.joint_dim) and got.ok.all()
    assert got.track_ids == tuple(t.track_id for t in tracks)
    for i, t in enumerate(tracks):
        want = embed_track(model, load_audio(t.audio_path), n_windows=3).track
        np.testing.assert_allclose(got.embeddings[i], want, rtol=1e-4, atol=1e-5)
    inline = embed_tracks(model, tracks, dataset="tones", n_windows=3, use_cache=False, num_workers=0, batch_size=5)
    assert np.array_equal(inline.embeddings, got.embeddings)  # same batches in the same order


def test_second_run_reads_the_cache_without_calling_the_model(
    model: torch.nn.Module, tracks: list[Track], tmp_path: Path
) -> None:
    counting = CountingModel(model)
    done: list[int] = []
    first = embed_tracks(counting, tracks, dataset="tones", n_windows=2, cache_dir=tmp_path, progress=done.append)
    assert counting.calls > 0 and not first.from_cache and sum(done) == len(tracks)
    assert (tmp_path / f"{first.key}.npy").is_file() and (tmp_path / f"{first.key}.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    counting.calls = 0
    second = embed_tracks(counting, tracks, dataset="tones", n_windows=2, cache_dir=tmp_path)
    assert counting.calls == 0 and second.from_cache
    assert np.array_equal(second.embeddings, first.embeddings)
    looked_up = cached_embeddings(model, tracks, dataset="tones", n_windows=2, cache_dir=tmp_path)
    assert looked_up is not None and looked_up.key == first.key


def test_cache_invalidation(model: torch.nn.Module, tracks: list[Track], tmp_path: Path) -> None:
    base = embed_tracks(model, tracks, dataset="tones", n_windows=2, cache_dir=tmp_path)
    # another window policy -> another entry; the same audio under another dataset name -> the same entry
    assert embed_tracks(model, tracks, dataset="tones", n_windows=3, cache_dir=tmp_path).key != base.key
    renamed = embed_tracks(model, tracks, dataset="other", n_windows=2, cache_dir=tmp_path)
    assert renamed.key == base.key and renamed.from_cache
    # a changed audio weight -> recomputed, different embeddings
    changed = build_model(model.config)
    changed.load_state_dict(model.state_dict())
    assert audio_identity(changed) == audio_identity(model)
    with torch.no_grad():
        changed.audio_projector[1].weight.mul_(2.0)
    counting = CountingModel(changed)
    again = embed_tracks(counting, tracks, dataset="tones", n_windows=2, cache_dir=tmp_path)
    assert counting.calls > 0 and not again.from_cache and again.key != base.key
    np.testing.assert_allclose(again.embeddings, 2.0 * base.embeddings, rtol=1e-4, atol=1e-5)
    # a changed text tower only -> the same audio identity, the cache is reused
    text_only = build_model(model.config)
    text_only.load_state_dict(model.state_dict())
    with torch.no_grad():
        next(iter(text_only.text_projector.parameters())).add_(1.0)
    assert embed_tracks(text_only, tracks, dataset="tones", n_windows=2, cache_dir=tmp_path).from_cache
    # a re-written audio file (new mtime) -> recomputed
    st = os.stat(tracks[0].audio_path)
    os.utime(tracks[0].audio_path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert not embed_tracks(model, tracks, dataset="tones", n_windows=2, cache_dir=tmp_path).from_cache


def test_bad_and_silent_files_are_reported_not_fatal(
    model: torch.nn.Module, tracks: list[Track], tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF not really a wave file")
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(8000, np.float32), 16000)
    extra = [
        Track("missing", str(tmp_path / "nope.wav")),
        Track("corrupt", str(corrupt)),
        Track("silent", str(silent)),
    ]
    got = embed_tracks(model, [*tracks[:3], *extra], dataset="mixed", n_windows=2, cache_dir=tmp_path / "c")
    assert got.ok.tolist() == [True, True, True, False, False, True]
    assert set(got.failed) == {"missing", "corrupt"} and "nope.wav" in got.failed["missing"]
    assert got.silent == ("silent",)
    assert np.isfinite(got.embeddings).all() and not got.embeddings[3:5].any()
    assert got.ok_indices.tolist() == [0, 1, 2, 5]
    summary = got.summary()
    assert summary["n_failed"] == 2 and summary["n_silent"] == 1
    cached = embed_tracks(model, [*tracks[:3], *extra], dataset="mixed", n_windows=2, cache_dir=tmp_path / "c")
    assert cached.from_cache and cached.failed == got.failed and cached.ok.tolist() == got.ok.tolist()
    with pytest.raises(MusicSearchError, match="none of the 2 tracks"):
        embed_tracks(model, extra[:2], dataset="bad", n_windows=2, cache_dir=tmp_path / "c")


def test_segments_and_input_checks(model: torch.nn.Module, tracks: list[Track], tmp_path: Path) -> None:
    seg = dataclasses.replace(tracks[0], track_id="seg", start=0.5, end=1.5)
    got = embed_tracks(model, [seg], dataset="seg", n_windows=1, use_cache=False)
    wave = load_audio(tracks[0].audio_path, offset=0.5, duration=1.0)
    np.testing.assert_allclose(got.embeddings[0], embed_track(model, wave, n_windows=1).track, rtol=1e-4, atol=1e-5)
    with pytest.raises(MusicSearchError):
        embed_tracks(model, [], dataset="x", n_windows=1, use_cache=False)
    with pytest.raises(MusicSearchError):
        embed_tracks(model, [tracks[0], tracks[0]], dataset="x", n_windows=1, use_cache=False)


def test_default_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "musicsearch" / "embeddings"


RAMP_SCALE = 2.0**-20  # sample i holds i * 2^-20: exact in float32 up to 2^24 samples, so a window names its start


def ramp(n_samples: int) -> np.ndarray:
    """``(T,)`` float32 whose value at sample i is ``i * 2^-20`` (a window's first value says where it starts)."""
    return (np.arange(n_samples, dtype=np.float64) * RAMP_SCALE).astype(np.float32)


def starts_of(windows: np.ndarray) -> list[int]:
    return [round(float(w[0]) / RAMP_SCALE) for w in windows]


def test_window_placements_on_a_30_s_track() -> None:
    wave = ramp(30 * 16000)
    release = WindowPolicy(n_windows=3, window_samples=158_560, placement="release").windows(wave)
    even = WindowPolicy(n_windows=3, window_samples=158_560, placement="even").windows(wave)
    hop = (480_000 - 158_560) // 3  # the release: (T - L) // n = 107,146 samples
    assert starts_of(release) == [0, hop, 2 * hop] == [0, 107_146, 214_292]  # 0 / 6.70 / 13.39 s
    assert starts_of(even) == [0, 160_720, 321_440]  # 0 / 10.05 / 20.09 s: the last window ends at the end
    for windows in (release, even):  # whole windows of the track, not resampled or shifted
        assert windows.shape == (3, 158_560)
        np.testing.assert_array_equal(windows[1], wave[starts_of(windows)[1] :][:158_560])
    # 8 transfer windows, and a clip shorter than a window: one zero-padded window at 0 for both
    assert starts_of(WindowPolicy(8, 158_560, placement="release").windows(wave)) == [i * 40_180 for i in range(8)]
    for placement in ("release", "even"):
        short = WindowPolicy(3, 158_560, placement=placement).windows(ramp(1000))
        assert short.shape == (1, 158_560) and starts_of(short) == [0] and not short[0, 1000:].any()


def test_window_placement_is_part_of_the_cache_key_and_checked() -> None:
    even = WindowPolicy(n_windows=3, window_samples=16000)
    release = dataclasses.replace(even, placement="release")
    assert cache_key("m", "t", even) != cache_key("m", "t", release)
    # the default placement keeps the description (and so the cache entries) it had before placements were named
    assert even.to_json()["placement"] == "evenly spaced, first at 0 s, last ending at the end; short clips zero-padded"
    with pytest.raises(MusicSearchError, match="unknown window placement 'middle'; use one of even, release"):
        WindowPolicy(n_windows=3, window_samples=16000, placement="middle")
