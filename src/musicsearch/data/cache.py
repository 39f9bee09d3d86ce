"""A decoded-audio cache, so that data loading never waits on a decoder.

Each track is decoded once (in a process pool) to a 16 kHz mono float32 ``.npy`` file; training and embedding
then read windows from memory-mapped arrays (``np.load(mmap_mode="r")``), which costs a page read instead of a
decode and a resample. Layout of a cache folder::

    index.json                 # parameters + one entry per cached track + the tracks that failed
    3f/3f9a...c1.npy           # one (T,) float32 array per track, named by SHA-256 of the track id

Building is resumable: tracks already in the index (with the same source file and segment) are skipped, and
tracks that failed before are retried. Every ``.npy`` is written to a temporary file and renamed, and the index is
rewritten atomically, so a crash leaves no half-written entry (at worst some finished arrays that the next run
decodes again). Unreadable files are reported in :attr:`AudioCache.failed` and skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from tqdm import tqdm

from musicsearch.audio.chunking import rms_db
from musicsearch.audio.io import audio_info, load_audio
from musicsearch.data.manifest import Track
from musicsearch.errors import AudioError, ConfigError, ManifestError, MusicSearchError
from musicsearch.fileio import atomic_write, write_json

__all__ = ["EXCERPTS", "INDEX_NAME", "AudioCache", "CacheEntry", "build_audio_cache", "cache_key"]

logger = logging.getLogger(__name__)

INDEX_NAME = "index.json"
_VERSION = 1
#: Where a ``max_seconds`` excerpt is taken from a longer track.
EXCERPTS = ("start", "centre")
#: Seconds between index checkpoints while building.
_CHECKPOINT_SECONDS = 30.0


def cache_key(track_id: str) -> str:
    """The file stem of a track in the cache: the first 32 hex digits of SHA-256(track_id)."""
    return hashlib.sha256(track_id.encode("utf-8")).hexdigest()[:32]


def _relative_file(track_id: str) -> str:
    key = cache_key(track_id)
    return f"{key[:2]}/{key}.npy"


def _source_of(track: Track) -> str:
    """Fingerprint of what a track's cached audio was decoded from (file and segment)."""
    text = f"{Path(track.audio_path).resolve()}|{track.start}|{track.end}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class CacheEntry:
    """One cached track.

    Attributes:
        n_samples: length of the cached waveform in samples.
        rms_db: its RMS level in dB, to 0.01 dB (see :func:`musicsearch.audio.chunking.rms_db`); below -60 is
            silence.
        source: fingerprint of the source file and segment it was decoded from.
    """

    n_samples: int
    rms_db: float
    source: str


class AudioCache:
    """A folder of decoded waveforms; open with :meth:`open`, fill with :func:`build_audio_cache`.

    Attributes:
        root: the cache folder.
        sample_rate: rate of every cached waveform in Hz.
        max_seconds: longest excerpt cached per track (``None``: whole tracks).
        excerpt: where the excerpt of a longer track was taken (``"start"`` or ``"centre"``).
        entries: track id -> :class:`CacheEntry`.
        failed: track id -> reason, for tracks that could not be decoded.
    """

    def __init__(
        self,
        root: Path,
        *,
        sample_rate: int,
        max_seconds: float | None,
        excerpt: str,
        entries: dict[str, CacheEntry] | None = None,
        failed: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.sample_rate = sample_rate
        self.max_seconds = max_seconds
        self.excerpt = excerpt
        self.entries: dict[str, CacheEntry] = entries if entries is not None else {}
        self.failed: dict[str, str] = failed if failed is not None else {}

    # ------------------------------------------------------------------------------------------- reading
    @classmethod
    def open(cls, cache_dir: str | os.PathLike[str]) -> AudioCache:
        """Open an existing cache.

        Raises:
            MusicSearchError: if the folder has no readable ``index.json``.
        """
        root = Path(cache_dir)
        index = root / INDEX_NAME
        if not index.is_file():
            raise MusicSearchError(
                f"{root} is not an audio cache (no {INDEX_NAME}); "
                f"build one with `musicsearch cache MANIFEST --out {root}`"
            )
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
            if data.get("version") != _VERSION:
                raise ValueError(f"version {data.get('version')!r}, expected {_VERSION}")
            entries = {
                tid: CacheEntry(int(e["n_samples"]), float(e["rms_db"]), str(e["source"]))
                for tid, e in data["tracks"].items()
            }
            max_seconds = data["max_seconds"]
            return cls(
                root,
                sample_rate=int(data["sample_rate"]),
                max_seconds=None if max_seconds is None else float(max_seconds),
                excerpt=str(data["excerpt"]),
                entries=entries,
                failed={str(k): str(v) for k, v in data.get("failed", {}).items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MusicSearchError(
                f"audio cache index {index} is malformed ({exc}); "
                f"delete the folder and rebuild it with `musicsearch cache`"
            ) from None

    def path_of(self, track_id: str) -> Path:
        """Where a track's array lives (whether or not it is cached)."""
        return self.root / _relative_file(track_id)

    def get(self, track_id: str) -> np.ndarray:
        """The cached waveform of a track, memory-mapped (only the pages you index are read).

        Returns:
            ``(T,)`` float32 read-only memmap at :attr:`sample_rate` Hz.

        Raises:
            KeyError: if the track is not cached.
            AudioError: if its array file has gone missing or is unreadable.
        """
        if track_id not in self.entries:
            reason = self.failed.get(track_id)
            detail = f" (it failed to decode: {reason})" if reason else ""
            raise KeyError(f"track {track_id!r} is not in the audio cache {self.root}{detail}")
        path = self.path_of(track_id)
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise AudioError(
                f"cached audio {path} of track {track_id!r} is missing or unreadable ({exc}); "
                f"rebuild the cache with `musicsearch cache`"
            ) from None

    def __contains__(self, track_id: object) -> bool:
        return track_id in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    @property
    def track_ids(self) -> list[str]:
        """Ids of the cached tracks, in the order they were added."""
        return list(self.entries)

    def duration(self, track_id: str) -> float:
        """Length of a cached track in seconds (from the index; no file access)."""
        return self.entries[track_id].n_samples / self.sample_rate

    # ------------------------------------------------------------------------------------------- writing
    def _index_json(self) -> dict[str, Any]:
        return {
            "version": _VERSION,
            "sample_rate": self.sample_rate,
            "max_seconds": self.max_seconds,
            "excerpt": self.excerpt,
            "tracks": {
                tid: {"n_samples": e.n_samples, "rms_db": e.rms_db, "source": e.source}
                for tid, e in self.entries.items()
            },
            "failed": self.failed,
        }

    def save_index(self) -> None:
        """Rewrite ``index.json`` atomically."""
        write_json(self.root / INDEX_NAME, self._index_json(), indent=None)


class _Job(NamedTuple):
    track_id: str
    audio_path: str
    start: float | None
    end: float | None
    dest: str
    sample_rate: int
    max_seconds: float | None
    excerpt: str


class _Result(NamedTuple):
    track_id: str
    n_samples: int
    rms_db: float
    error: str | None


def _excerpt_window(job: _Job) -> tuple[float | None, float | None]:
    """Offset and duration (seconds) to decode for a job."""
    offset, duration = job.start, None
    if job.end is not None:
        duration = job.end - (job.start or 0.0)
    if job.max_seconds is None:
        return offset, duration
    if job.excerpt == "centre":
        length = duration if duration is not None else audio_info(job.audio_path).duration - (job.start or 0.0)
        if length > job.max_seconds:
            offset = (job.start or 0.0) + (length - job.max_seconds) / 2
    duration = job.max_seconds if duration is None else min(duration, job.max_seconds)
    return offset, duration


def _decode_to_file(job: _Job) -> _Result:
    """Worker: decode one track and write its array atomically (runs in a pool process)."""
    try:
        offset, duration = _excerpt_window(job)
        wave = load_audio(job.audio_path, sample_rate=job.sample_rate, offset=offset, duration=duration)
        dest = Path(job.dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(dest, "wb") as fh:
            np.save(fh, wave, allow_pickle=False)
        return _Result(job.track_id, int(wave.shape[0]), round(rms_db(wave), 2), None)
    except AudioError as exc:
        return _Result(job.track_id, 0, 0.0, str(exc))
    except Exception as exc:  # a worker must report, never die: the cause goes into the failure list
        return _Result(job.track_id, 0, 0.0, f"unexpected {type(exc).__name__} decoding {job.audio_path}: {exc}")


def build_audio_cache(
    tracks: Sequence[Track],
    cache_dir: str | os.PathLike[str],
    *,
    sample_rate: int = 16000,
    max_seconds: float | None = 30.0,
    excerpt: str = "start",
    workers: int = 2,
    progress: bool = True,
) -> AudioCache:
    """Decode every track once into the cache (resuming a previous build of the same folder).

    Args:
        tracks: the tracks to cache (a track with ``start``/``end`` caches that segment).
        cache_dir: the cache folder (created if needed).
        sample_rate: rate of the cached waveforms in Hz.
        max_seconds: cache at most this many seconds a track (``None``: whole tracks). The paper trains on
            30 s excerpts.
        excerpt: ``"start"`` takes the first ``max_seconds``; ``"centre"`` the middle ones (costs a header read).
        workers: decoding processes (``<= 1``: decode in this process).
        progress: show a tqdm progress bar on stderr.

    Returns:
        The opened cache; :attr:`AudioCache.failed` lists the tracks that could not be decoded, with reasons.

    Raises:
        ConfigError: if ``excerpt`` is unknown, or ``cache_dir`` holds a cache built with other parameters.
        ManifestError: if two tracks share an id.
    """
    if excerpt not in EXCERPTS:
        raise ConfigError(f"excerpt must be one of {EXCERPTS}, got {excerpt!r}")
    if max_seconds is not None and not max_seconds > 0:
        raise ConfigError(f"max_seconds must be positive or None, got {max_seconds!r}")
    root = Path(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    if (root / INDEX_NAME).is_file():
        cache = AudioCache.open(root)
        wanted = (sample_rate, None if max_seconds is None else float(max_seconds), excerpt)
        have = (cache.sample_rate, cache.max_seconds, cache.excerpt)
        if wanted != have:
            raise ConfigError(
                f"audio cache {root} was built with (sample_rate, max_seconds, excerpt) = {have}, not {wanted}; "
                f"use another folder or delete this one"
            )
    else:
        cache = AudioCache(root, sample_rate=sample_rate, max_seconds=max_seconds, excerpt=excerpt)

    seen: set[str] = set()
    jobs: list[_Job] = []
    sources: dict[str, str] = {}
    for t in tracks:
        if t.track_id in seen:
            raise ManifestError(f"track id {t.track_id!r} appears twice; ids must be unique to cache audio")
        seen.add(t.track_id)
        source = _source_of(t)
        entry = cache.entries.get(t.track_id)
        if entry is not None and entry.source == source and cache.path_of(t.track_id).is_file():
            continue
        sources[t.track_id] = source
        jobs.append(
            _Job(
                t.track_id, t.audio_path, t.start, t.end,
                str(cache.path_of(t.track_id)), sample_rate, max_seconds, excerpt,
            )
        )  # fmt: skip
    logger.info("audio cache %s: %d tracks to decode, %d already cached", root, len(jobs), len(tracks) - len(jobs))
    if not jobs:
        return cache

    last_save = time.monotonic()
    bar = tqdm(total=len(jobs), desc="cache", unit="track", disable=not progress)
    pool: ProcessPoolExecutor | None = None
    try:
        if workers > 1 and len(jobs) > 1:
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
            results: Iterator[_Result] = pool.map(_decode_to_file, jobs, chunksize=4)
        else:
            results = map(_decode_to_file, jobs)
        for res in results:
            if res.error is None:
                cache.entries[res.track_id] = CacheEntry(res.n_samples, res.rms_db, sources[res.track_id])
                cache.failed.pop(res.track_id, None)
            else:
                logger.warning("not cached: %s", res.error)
                cache.entries.pop(res.track_id, None)
                cache.failed[res.track_id] = res.error
            bar.update(1)
            if time.monotonic() - last_save > _CHECKPOINT_SECONDS:
                cache.save_index()
                last_save = time.monotonic()
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        cache.save_index()
    n_silent = sum(1 for tid in sources if tid in cache.entries and cache.entries[tid].rms_db < -60.0)
    if n_silent:
        logger.warning("audio cache %s: %d tracks are silent (RMS below -60 dB)", root, n_silent)
    return cache
