"""Track embeddings for evaluation, computed once per (model, track list, window policy) and cached on disk.

:func:`embed_tracks` decodes the tracks in a small thread pool (decoding overlaps model inference), cuts evenly
spaced windows, embeds them in fixed-size batches and averages each track's windows (before L2 normalisation).
A file that cannot be decoded is reported and excluded (``ok`` is False for it), never fatal; silent tracks are
embedded and flagged.

Cache key: SHA-256 of

* the model's **audio identity** (:func:`audio_identity`): a hash of every tensor of the audio tower and audio
  projection (names, dtypes, shapes, bytes) and the audio config -- what a track embedding depends on (the text
  tower does not matter, so models that share an audio tower share the cache);
* the **track list**: dataset name, and per track its id, audio path, segment bounds, file size and modification
  time (a re-encoded or replaced file changes the key);
* the **window policy**: number of windows, window length, sample rate, aggregation.

Each entry is ``<key>.npy`` (``(N, D)`` float32 track embeddings, failed rows zero) and ``<key>.json`` (what was
embedded, the failures with their reasons, the silent tracks, timing), both written atomically. The default
folder is ``$XDG_CACHE_HOME/musicsearch/embeddings`` (``~/.cache/musicsearch/embeddings``).
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from musicsearch.audio.chunking import SAMPLE_RATE, is_silent
from musicsearch.audio.io import load_audio
from musicsearch.data.manifest import Track
from musicsearch.errors import MusicSearchError
from musicsearch.fileio import atomic_write, write_json
from musicsearch.models.inference import SILENCE_THRESHOLD_DB, embed_windows, normalize, track_windows
from musicsearch.models.release import release_windows

__all__ = [
    "CACHE_FORMAT",
    "WINDOW_PLACEMENTS",
    "TrackEmbeddings",
    "WindowPolicy",
    "audio_identity",
    "cache_key",
    "cached_embeddings",
    "default_cache_dir",
    "embed_tracks",
    "load_track_audio",
    "tracks_identity",
]

log = logging.getLogger(__name__)

CACHE_FORMAT = "musicsearch-track-embeddings/1"
"""Format tag stored in every cache entry (bumped when the layout or the aggregation changes)."""


WINDOW_PLACEMENTS: dict[str, str] = {
    "even": "evenly spaced, first at 0 s, last ending at the end; short clips zero-padded",
    "release": "as the paper's release: hop = (T - L) // n, starts i * hop for i < n (the last window ends "
    "short of the end); short clips one zero-padded window",
}
"""Where a track's windows are placed, by name, with the description recorded in reports and cache keys.
``even``: :func:`musicsearch.audio.chunking.evenly_spaced_starts` (on a 30 s track, 3 windows start at
0 / 10.0 / 20.1 s); ``release``: :func:`musicsearch.models.release.release_window_starts` (0 / 6.7 / 13.4 s)."""


@dataclass(frozen=True)
class WindowPolicy:
    """How a track becomes windows.

    Attributes:
        n_windows: windows per track (the paper: 3 for retrieval, 8 for transfer).
        window_samples: samples per window (the model's ``config.audio.window_samples``).
        sample_rate: rate of the decoded audio in Hz.
        placement: a name of :data:`WINDOW_PLACEMENTS` (``even`` or ``release``).
    """

    n_windows: int
    window_samples: int
    sample_rate: int = SAMPLE_RATE
    placement: str = "even"

    def __post_init__(self) -> None:
        if self.n_windows < 1 or self.window_samples < 1 or self.sample_rate < 1:
            raise MusicSearchError(f"invalid window policy {self}: every field must be >= 1")
        if self.placement not in WINDOW_PLACEMENTS:
            raise MusicSearchError(
                f"unknown window placement {self.placement!r}; use one of {', '.join(sorted(WINDOW_PLACEMENTS))}"
            )

    def windows(self, wave: np.ndarray) -> np.ndarray:
        """``(T,)`` waveform -> ``(k, window_samples)`` float32 windows at this policy's placement."""
        if self.placement == "release":
            return release_windows(np.asarray(wave, dtype=np.float32), self.n_windows, self.window_samples)
        windows, _ = track_windows(
            wave, window_samples=self.window_samples, n_windows=self.n_windows, sample_rate=self.sample_rate
        )
        return windows

    def to_json(self) -> dict[str, Any]:
        """JSON-ready description (part of the cache key and of every report)."""
        return {
            "n_windows": self.n_windows,
            "window_samples": self.window_samples,
            "window_seconds": self.window_samples / self.sample_rate,
            "sample_rate": self.sample_rate,
            "placement": WINDOW_PLACEMENTS[self.placement],
            "aggregation": "mean of window embeddings before L2 normalisation",
        }


@dataclass(frozen=True)
class TrackEmbeddings:
    """Track embeddings of a list of tracks, in the list's order.

    Attributes:
        track_ids: the N track ids.
        embeddings: ``(N, D)`` float32 mean window embeddings, not normalised; rows of failed tracks are zero.
        ok: ``(N,)`` bool, False for tracks whose audio could not be read (excluded from every metric).
        failed: track id -> reason, for the tracks with ``ok`` False.
        silent: ids of tracks quieter than ``SILENCE_THRESHOLD_DB`` (embedded, finite, flagged).
        key: the cache key.
        policy: the window policy used.
        from_cache: whether the embeddings were read from the cache.
        seconds: wall-clock seconds of the computation (as stored in the cache when read from it).
        info: the cache entry's JSON (identity of model and tracks).
    """

    track_ids: tuple[str, ...]
    embeddings: np.ndarray
    ok: np.ndarray
    failed: dict[str, str]
    silent: tuple[str, ...]
    key: str
    policy: WindowPolicy
    from_cache: bool = False
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.track_ids)

    @property
    def ok_indices(self) -> np.ndarray:
        """``(n_ok,)`` int64 positions of the tracks that were embedded."""
        return np.flatnonzero(self.ok).astype(np.int64)

    def normalized(self) -> np.ndarray:
        """``(N, D)`` L2-normalised embeddings (failed rows stay zero)."""
        return normalize(self.embeddings)

    def summary(self) -> dict[str, Any]:
        """Counts for reports: tracks, embedded, failed (with reasons), silent, cache use, seconds."""
        return {
            "n_tracks": len(self.track_ids),
            "n_embedded": int(self.ok.sum()),
            "n_failed": len(self.failed),
            "failed": dict(self.failed),
            "n_silent": len(self.silent),
            "silent": list(self.silent),
            "cache_key": self.key,
            "from_cache": self.from_cache,
            "embedding_seconds": round(self.seconds, 3),
        }


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/musicsearch/embeddings``, i.e. ``~/.cache/musicsearch/embeddings`` by default."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "musicsearch" / "embeddings"


def audio_identity(model: Any) -> str:
    """Hex SHA-256 of everything a track embedding depends on: the audio tower's and audio projection's tensors
    (names, dtypes, shapes, bytes, BatchNorm statistics included) and the audio config.

    Args:
        model: a :class:`~musicsearch.models.dual_encoder.TextToMusic`.
    """
    h = hashlib.sha256()
    h.update(json.dumps(_audio_config(model), sort_keys=True).encode())
    state = model.state_dict()
    for name in sorted(state):
        if not name.startswith(("audio_encoder.", "audio_projector.")) or name.endswith("num_batches_tracked"):
            continue  # (a BatchNorm step counter does not change the embeddings)
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _audio_config(model: Any) -> dict[str, Any]:
    cfg = model.config.to_dict()
    return {"audio": cfg["audio"], "joint_dim": cfg["joint_dim"]}


def _stat(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [int(st.st_size), int(st.st_mtime_ns)]


def tracks_identity(dataset: str, tracks: Sequence[Track]) -> str:
    """Hex SHA-256 of a track list: per track, id, path, segment bounds, file size and mtime.

    ``dataset`` names the list in logs only; it is not hashed, so datasets that share their audio (VGMIDI's
    quadrant, valence and arousal tasks) share their cached embeddings.
    """
    h = hashlib.sha256(b"tracks/2")
    for t in tracks:
        h.update(json.dumps([t.track_id, t.audio_path, t.start, t.end, _stat(t.audio_path)]).encode())
        h.update(b"\n")
    return h.hexdigest()


def cache_key(model_identity: str, tracks_id: str, policy: WindowPolicy) -> str:
    """The cache key (40 hex characters) of a model identity, a track-list identity and a window policy."""
    payload = json.dumps([CACHE_FORMAT, model_identity, tracks_id, policy.to_json()], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:40]


def load_track_audio(track: Track, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode a track (or its ``start``/``end`` segment) to a ``(T,)`` float32 mono waveform.

    Raises:
        AudioError: if the file is missing, empty or cannot be decoded (the message names it).
    """
    if track.start is None and track.end is None:
        return load_audio(track.audio_path, sample_rate=sample_rate)
    start = track.start or 0.0
    duration = None if track.end is None else track.end - start
    return load_audio(track.audio_path, sample_rate=sample_rate, offset=start, duration=duration)


# ----------------------------------------------------------------------------------------------------------------
# the cache
# ----------------------------------------------------------------------------------------------------------------
def _read_cache(folder: Path, key: str, tracks: Sequence[Track], policy: WindowPolicy) -> TrackEmbeddings | None:
    npy, meta_path = folder / f"{key}.npy", folder / f"{key}.json"
    if not (npy.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        emb = np.load(npy, allow_pickle=False)
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable embedding cache entry %s (%s)", npy, exc)
        return None
    ids = tuple(t.track_id for t in tracks)
    if meta.get("format") != CACHE_FORMAT or meta.get("key") != key or tuple(meta.get("track_ids", ())) != ids:
        log.warning("ignoring embedding cache entry %s: it does not describe these tracks", meta_path)
        return None
    if emb.ndim != 2 or emb.shape[0] != len(ids) or emb.dtype != np.float32:
        log.warning("ignoring embedding cache entry %s: shape %s does not match %d tracks", npy, emb.shape, len(ids))
        return None
    failed = {str(k): str(v) for k, v in meta.get("failed", {}).items()}
    ok = np.array([i not in failed for i in ids], dtype=bool)
    return TrackEmbeddings(
        track_ids=ids,
        embeddings=emb,
        ok=ok,
        failed=failed,
        silent=tuple(meta.get("silent", ())),
        key=key,
        policy=policy,
        from_cache=True,
        seconds=float(meta.get("seconds", 0.0)),
        info=meta,
    )


def _write_cache(folder: Path, result: TrackEmbeddings, meta: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(folder / f"{result.key}.npy", "wb") as fh:
        np.save(fh, result.embeddings, allow_pickle=False)
    write_json(folder / f"{result.key}.json", meta, indent=None)


# ----------------------------------------------------------------------------------------------------------------
# computing
# ----------------------------------------------------------------------------------------------------------------
_Decoded = tuple[np.ndarray | None, bool, str | None]  # windows (k, T), silent, error


def _decode(track: Track, policy: WindowPolicy) -> _Decoded:
    try:
        wave = load_track_audio(track, sample_rate=policy.sample_rate)
    except (MusicSearchError, OSError) as exc:
        return None, False, str(exc) or type(exc).__name__
    return policy.windows(wave), is_silent(wave, SILENCE_THRESHOLD_DB), None


def _decoded_in_order(tracks: Sequence[Track], policy: WindowPolicy, num_workers: int) -> Iterator[_Decoded]:
    """Decode tracks in order; with workers, up to ``4 * num_workers`` tracks ahead of the consumer."""
    if num_workers <= 0:
        for t in tracks:
            yield _decode(t, policy)
        return
    ahead = 4 * num_workers
    with cf.ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="decode") as pool:
        pending: collections.deque[cf.Future[_Decoded]] = collections.deque()
        it = iter(tracks)
        for t in it:
            pending.append(pool.submit(_decode, t, policy))
            if len(pending) >= ahead:
                break
        while pending:
            yield pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(_decode, nxt, policy))


def _compute(
    model: Any,
    tracks: Sequence[Track],
    policy: WindowPolicy,
    *,
    batch_size: int,
    device: str | torch.device | None,
    num_workers: int,
    progress: Callable[[int], None] | None,
) -> tuple[np.ndarray, dict[str, str], list[str]]:
    n = len(tracks)
    dim = int(model.config.joint_dim)
    sums = np.zeros((n, dim), dtype=np.float64)
    counts = np.zeros(n, dtype=np.int64)
    failed: dict[str, str] = {}
    silent: list[str] = []
    buf: list[np.ndarray] = []  # pending windows (T,)
    owners: list[int] = []  # track index of each pending window
    last_window_of: list[int] = []  # per queued track: running window count after it (done when flushed past)
    state = {"queued": 0, "flushed": 0, "reported": 0}

    def report_done() -> None:
        done = state["reported"]
        while done < len(last_window_of) and last_window_of[done] <= state["flushed"]:
            done += 1
        if progress is not None and done > state["reported"]:
            progress(done - state["reported"])
        state["reported"] = done

    def flush(force: bool) -> None:
        while len(buf) >= batch_size or (force and buf):
            take = min(batch_size, len(buf))
            batch = np.stack(buf[:take])  # (b, T)
            emb = embed_windows(model, batch, batch_size=take, device=device)  # (b, D)
            idx = np.asarray(owners[:take], dtype=np.int64)
            np.add.at(sums, idx, emb.astype(np.float64))
            np.add.at(counts, idx, 1)
            del buf[:take], owners[:take]
            state["flushed"] += take
        report_done()

    for i, (windows, is_quiet, error) in enumerate(_decoded_in_order(tracks, policy, num_workers)):
        track = tracks[i]
        if windows is None:
            failed[track.track_id] = error or "unreadable"
            log.warning("excluding track %s: %s", track.track_id, error)
        else:
            if is_quiet:
                silent.append(track.track_id)
            buf.extend(windows)
            owners.extend([i] * windows.shape[0])
            state["queued"] += windows.shape[0]
        last_window_of.append(state["queued"])
        flush(force=False)
    flush(force=True)
    emb = np.zeros((n, dim), dtype=np.float32)
    done = counts > 0
    emb[done] = (sums[done] / counts[done, None]).astype(np.float32)
    return emb, failed, silent


def cached_embeddings(
    model: Any,
    tracks: Sequence[Track],
    *,
    dataset: str,
    n_windows: int,
    cache_dir: str | os.PathLike[str] | None = None,
    placement: str = "even",
) -> TrackEmbeddings | None:
    """The cached embeddings of exactly this (model, track list, window policy), or ``None``; computes nothing."""
    if not tracks:
        return None
    policy = WindowPolicy(
        n_windows=n_windows, window_samples=int(model.config.audio.window_samples), placement=placement
    )
    key = cache_key(audio_identity(model), tracks_identity(dataset, tracks), policy)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return _read_cache(folder, key, tracks, policy)


def embed_tracks(
    model: Any,
    tracks: Sequence[Track],
    *,
    dataset: str,
    n_windows: int,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    num_workers: int = 2,
    progress: Callable[[int], None] | None = None,
    placement: str = "even",
) -> TrackEmbeddings:
    """Track embeddings of ``tracks`` (mean of ``n_windows`` window embeddings), cached.

    Args:
        model: a :class:`~musicsearch.models.dual_encoder.TextToMusic`.
        tracks: the tracks, in the order wanted.
        dataset: a name for the track list (part of the cache key and of the log).
        n_windows: windows per track.
        cache_dir: cache folder; default :func:`default_cache_dir`.
        use_cache: read and write the cache (False computes and stores nothing).
        batch_size: windows per forward pass.
        device: where the model runs (default its device).
        num_workers: decoding threads that run ahead of the model (0: decode in the calling thread).
        progress: called with the number of tracks finished since the last call (e.g. ``tqdm.update``).
        placement: where the windows go, a name of :data:`WINDOW_PLACEMENTS` (``even``: evenly spaced, first
            at the start and last at the end; ``release``: as the paper's release).

    Returns:
        :class:`TrackEmbeddings` in the order of ``tracks``; unreadable tracks have ``ok`` False.

    Raises:
        MusicSearchError: if ``tracks`` is empty, has duplicate ids, or no track at all can be read.
    """
    if not tracks:
        raise MusicSearchError(f"{dataset}: no tracks to embed")
    ids = [t.track_id for t in tracks]
    if len(set(ids)) != len(ids):
        raise MusicSearchError(f"{dataset}: duplicate track ids in the track list")
    policy = WindowPolicy(
        n_windows=n_windows, window_samples=int(model.config.audio.window_samples), placement=placement
    )
    model_id = audio_identity(model)
    tracks_id = tracks_identity(dataset, tracks)
    key = cache_key(model_id, tracks_id, policy)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if use_cache:
        hit = _read_cache(folder, key, tracks, policy)
        if hit is not None:
            log.info("%s: %d track embeddings read from the cache (%s)", dataset, len(hit), folder / f"{key}.npy")
            if progress is not None:
                progress(len(hit))
            return hit
    t0 = time.perf_counter()
    emb, failed, silent = _compute(
        model, tracks, policy, batch_size=batch_size, device=device, num_workers=num_workers, progress=progress
    )
    seconds = time.perf_counter() - t0
    if len(failed) == len(tracks):
        first = next(iter(failed.items()))
        raise MusicSearchError(
            f"{dataset}: none of the {len(tracks)} tracks could be read (e.g. {first[0]}: {first[1]})"
        )
    if failed:
        log.warning("%s: %d of %d tracks could not be read and are excluded", dataset, len(failed), len(tracks))
    if silent:
        log.warning("%s: %d tracks are silent (embedded, flagged)", dataset, len(silent))
    meta = {
        "format": CACHE_FORMAT,
        "key": key,
        "dataset": dataset,
        "model_audio_identity": model_id,
        "model_name": getattr(model.config, "name", ""),
        "tracks_identity": tracks_id,
        "policy": policy.to_json(),
        "n_tracks": len(tracks),
        "dim": int(emb.shape[1]),
        "track_ids": ids,
        "failed": failed,
        "silent": silent,
        "seconds": seconds,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    result = TrackEmbeddings(
        track_ids=tuple(ids),
        embeddings=emb,
        ok=np.array([i not in failed for i in ids], dtype=bool),
        failed=failed,
        silent=tuple(silent),
        key=key,
        policy=policy,
        from_cache=False,
        seconds=seconds,
        info=meta,
    )
    if use_cache:
        _write_cache(folder, result, meta)
        log.info("%s: %d track embeddings cached in %s", dataset, len(result), folder / f"{key}.npy")
    return result
