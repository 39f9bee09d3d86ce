"""Torch datasets over manifests: one random window + one sampled text per track (training), deterministic
windows and texts for validation.

Randomness is explicit and positional: item ``i`` of epoch ``e`` draws from ``numpy.random.default_rng((seed, e,
i))``, so results do not depend on the number of loader workers or ranks, and a resumed run draws the same.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from musicsearch.audio.chunking import pad_to, random_crop
from musicsearch.audio.io import audio_info, load_audio
from musicsearch.data.manifest import Track
from musicsearch.errors import AudioError, MusicSearchError
from musicsearch.text.sampling import get_sampler

log = logging.getLogger(__name__)


def multi_hot(tags: Sequence[str], index: dict[str, int]) -> np.ndarray:
    """``(V,)`` float32 0/1 vector of the tags found in ``index`` (unknown tags ignored)."""
    out = np.zeros(len(index), dtype=np.float32)
    for t in tags:
        j = index.get(t)
        if j is not None:
            out[j] = 1.0
    return out


def file_duration(track: Track) -> float:
    """Seconds of a track's whole audio file: its ``duration`` metadata (from ``musicsearch scan``), else the
    file header (no decoding).

    Raises:
        AudioError: the file cannot be read.
    """
    d = track.metadata.get("duration") if track.metadata else None
    return float(d) if d is not None else audio_info(track.audio_path).duration


class TrackWindowDataset(Dataset[dict[str, Any]]):
    """Tracks -> ``{"wave": (window,) float32, "text": str, "tags": (V,) float32, "index": int}``.

    Args:
        tracks: the tracks (each needs at least one tag).
        vocabulary: tag vocabulary, in model order.
        window_samples: samples per window at 16 kHz.
        text_rep: ``tag``, ``sentence`` or ``stochastic``.
        seed: the run's seed.
        train: random crops and random texts (True) or deterministic ones (False).
        cache: an optional decoded-audio cache with ``get(track_id) -> array`` and ``__contains__``.
    """

    def __init__(
        self,
        tracks: Sequence[Track],
        vocabulary: Sequence[str],
        *,
        window_samples: int,
        text_rep: str,
        seed: int = 0,
        train: bool = True,
        cache: Any | None = None,
    ) -> None:
        untagged = [t.track_id for t in tracks if not t.tags]
        if untagged:
            raise MusicSearchError(
                f"{len(untagged)} tracks have no tags (e.g. {untagged[:3]}); tag them or drop them from the manifest"
            )
        self.tracks = list(tracks)
        self.vocabulary = list(vocabulary)
        self.index = {t: i for i, t in enumerate(self.vocabulary)}
        self.window = window_samples
        self.sampler = get_sampler(text_rep)
        self.seed = seed
        self.train = train
        self.cache = cache
        self.epoch = 0
        self._durations: dict[int, float] = {}

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random draws ``__getitem__`` makes."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.tracks)

    def _duration(self, i: int, track: Track) -> float:
        if i not in self._durations:
            self._durations[i] = file_duration(track)
        return self._durations[i]

    def _load_window(self, i: int, track: Track, rng: np.random.Generator) -> np.ndarray:
        if self.cache is not None and track.track_id in self.cache:
            wave = np.asarray(self.cache.get(track.track_id), dtype=np.float32)
            return random_crop(wave, self.window, rng) if self.train else pad_to(wave[: self.window], self.window)
        start = track.start or 0.0
        end = track.end if track.end is not None else self._duration(i, track)
        seconds = self.window / 16000.0
        span = max(0.0, end - start - seconds)
        # train: a random offset; eval: the centre window
        offset = start + (float(rng.uniform(0.0, span)) if self.train else span / 2.0)
        wave = load_audio(track.audio_path, offset=offset, duration=seconds)
        return pad_to(wave[: self.window], self.window)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = np.random.default_rng((self.seed, self.epoch if self.train else 0, i))
        for attempt in range(len(self.tracks)):
            j = (i + attempt) % len(self.tracks)
            track = self.tracks[j]
            try:
                wave = self._load_window(j, track, rng)
                break
            except AudioError as exc:
                log.warning("skipping unreadable track %s: %s", track.track_id, exc)
        else:
            raise MusicSearchError("no track of the dataset could be read")
        return {
            "wave": wave,
            "text": self.sampler(list(track.tags), rng, train=self.train),
            "tags": multi_hot(track.tags, self.index),
            "index": j,
        }


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack items: ``wave`` (B, T) float32, ``text`` list of B strings, ``tags`` (B, V), ``index`` (B,)."""
    return {
        "wave": torch.from_numpy(np.stack([it["wave"] for it in items])),
        "text": [it["text"] for it in items],
        "tags": torch.from_numpy(np.stack([it["tags"] for it in items])),
        "index": torch.tensor([it["index"] for it in items]),
    }
