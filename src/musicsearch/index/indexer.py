"""Index a music collection (a folder or a manifest) into a store, incrementally and resumably.

The store directory it writes is described in :mod:`musicsearch.index.store`.

**Pipeline.** Worker processes (``workers``, a process pool started with ``forkserver``, never importing torch)
hash and decode files into the plan's windows (:func:`~musicsearch.index.embedder.decode_track`), a bounded
number ahead of the model; the main process batches windows *across* tracks (``batch_size`` windows per forward
pass) and runs the model, so decoding overlaps inference. A worker that crashes (a decoder segfault on a hostile
file) is replaced and the file it held is reported, not fatal.

**Cores.** (ONNX Runtime; torch keeps the cores the workers leave, see
:attr:`~musicsearch.index.embedder.Embedder.threads_follow_decoders`.) The model never shares a core with a
running decoder, and never leaves one idle when it can help it:
before each forward pass the batcher looks at the decoding jobs still running (:class:`_Decoding`). With none, the
model runs ``batch_size`` windows on every core; with ``k`` running, one window on the ``cores - k`` cores they
leave, so that the model is back on every core soon after they finish; and when one window there would take
longer than twice a decode (a slow model: the cores would idle after the decoder finishes), the model waits for
the decoders instead, as a plain decode-then-embed loop would. A parallel operator whose thread is descheduled by a
decoder waits at its barrier (the thread fight of issue 15); a fixed split (a core for decoding, the rest for the
model) halves the model where decoding is a small share of the work.

**Incremental.** A file is unchanged when its SHA-256 (plus its segment and metadata, see
:func:`~musicsearch.index.sources.content_key`) equals the stored ``content_hash``. The full SHA-256 is cheap next
to decoding (~1 GB/s against tens of ms to decode a track), catches every edit (a partial hash misses same-size
edits in the middle of a file), and is skipped altogether for files whose size and mtime match ``files.sqlite``; a
file only touched (new mtime, same bytes) is hashed and skipped without decoding. Changed files are re-embedded;
files gone from the source are dropped with ``prune=True`` (otherwise counted as stale in the report).

**Resumable, never corrupt.** Finished tracks are committed in small batches (every ``commit_tracks`` tracks or
``commit_seconds``, stretched so that saving stays under ~10 % of the run): inside one SQLite transaction the
tracks are added, both vector backends are saved (each save atomic), then the transaction commits. A run killed
at any instant leaves the last commit intact; the next run first repairs the one possible gap (vectors saved
but their metadata not committed, or the reverse after a removal) by dropping orphan vectors and tracks whose
vectors are missing, then skips every committed file.

**Bad files** (missing, empty, corrupt, silent, undecodable) never stop a run: each is listed with its reason in
:attr:`IndexReport.failed`, remembered in ``files.sqlite`` and not retried until the file changes (or
``retry_failed=True``).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import itertools
import logging
import multiprocessing as mp
import os
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from musicsearch.audio.chunking import SAMPLE_RATE
from musicsearch.errors import AudioError, MusicSearchError
from musicsearch.index.backends.base import l2_normalize
from musicsearch.index.embedder import (
    DEFAULT_MAX_WINDOWS,
    DecodedTrack,
    Embedder,
    WindowPlan,
    available_cores,
    decode_track,
    model_threads,
    open_index_embedder,
    single_threaded,
    track_vector,
)
from musicsearch.index.metadata import TrackInfo, TrackRecord
from musicsearch.index.shards import describe_shard, shard_of
from musicsearch.index.sources import FailedFile, SourceItem, collect_source, content_key
from musicsearch.index.store import FileRow, Store, StoreSettings, is_store, read_settings, store_model, writing
from musicsearch.index.tuning import tuning_queries

__all__ = ["IndexReport", "default_workers", "index_collection"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------------
# Report


@dataclass
class IndexReport:
    """What an indexing run did.

    Attributes:
        store: the store directory.
        scanned: tracks in the source.
        added: tracks indexed for the first time.
        updated: changed tracks re-embedded.
        unchanged: tracks skipped because their file and metadata are unchanged.
        removed: tracks dropped (``prune``) or repaired away.
        stale: tracks in the store but no longer in the source (kept: pass ``prune`` to drop them).
        failed: files not indexed, with reasons.
        windows: window vectors embedded.
        wall_seconds: whole run.
        decode_seconds: hashing + decoding, summed over workers (CPU-seconds).
        model_seconds: model forward passes in the main process.
        write_seconds: commits (metadata + saving vectors).
        repaired: items fixed after a killed run.
    """

    store: str
    scanned: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    stale: int = 0
    failed: list[FailedFile] = field(default_factory=list)
    windows: int = 0
    wall_seconds: float = 0.0
    decode_seconds: float = 0.0
    model_seconds: float = 0.0
    write_seconds: float = 0.0
    repaired: int = 0
    workers: int = 0
    batch_size: int = 0

    @property
    def embedded(self) -> int:
        """Tracks embedded in this run."""
        return self.added + self.updated

    @property
    def tracks_per_minute(self) -> float:
        """Embedded tracks per minute of wall time."""
        return 60.0 * self.embedded / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "store": self.store,
            "scanned": self.scanned,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "stale": self.stale,
            "failed": [{"track_id": f.track_id, "path": f.path, "reason": f.reason} for f in self.failed],
            "windows": self.windows,
            "wall_seconds": round(self.wall_seconds, 3),
            "decode_seconds": round(self.decode_seconds, 3),
            "model_seconds": round(self.model_seconds, 3),
            "write_seconds": round(self.write_seconds, 3),
            "tracks_per_minute": round(self.tracks_per_minute, 1),
            "repaired": self.repaired,
            "workers": self.workers,
            "batch_size": self.batch_size,
        }


# --------------------------------------------------------------------------------------------------------------
# Worker side (no torch here)


@dataclass(frozen=True)
class _Job:
    index: int
    path: str
    start: float | None
    end: float | None
    known_sha: str | None  # from files.sqlite when size and mtime match
    stored_key: str | None  # content_hash of the stored track with this id
    meta_digest: str
    plan: WindowPlan
    timeout: float | None = None  # seconds for hashing + decoding this file


@dataclass(frozen=True)
class _Outcome:
    index: int
    status: str  # "ok", "unchanged", "failed"
    sha256: str = ""
    decoded: DecodedTrack | None = None
    reason: str = ""
    seconds: float = 0.0
    raw: np.ndarray | None = None  # (n, D) window embeddings, when a pipeline (cluster.py) embedded them


#: Seconds to hash and decode one file at most, by default (a 60-minute FLAC takes well under a second).
DECODE_TIMEOUT = 300.0

NOT_REGULAR_REASON = (
    "not a regular file (a named pipe, device or socket); only regular files are indexed: remove it, or "
    "replace it by the audio file itself"
)


class _DecodeTimeout(Exception):
    """Raised in a job that ran past its time limit (by SIGALRM)."""


@contextlib.contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`_DecodeTimeout` in this thread after ``seconds`` (main thread only: elsewhere no limit).

    The signal interrupts Python code and blocking system calls; a decoder stuck inside C code is caught by the
    pool's own watchdog instead (see :func:`_outcomes`)."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise _DecodeTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _timeout_reason(seconds: float) -> str:
    return (
        f"decoding took longer than {seconds:g} s and was stopped (a hanging file or decoder); check the file, "
        "or raise --decode-timeout for very long files on a slow disk"
    )


def _hash_regular(path: str) -> str:
    """SHA-256 of a regular file; anything else (a named pipe would block the reader forever) is refused
    without reading it."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening a FIFO must not wait for a writer
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise AudioError(NOT_REGULAR_REASON)
        h = hashlib.sha256()
        with os.fdopen(os.dup(fd), "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        return h.hexdigest()
    finally:
        os.close(fd)


def _run_job(job: _Job) -> _Outcome:
    """Hash a file and, unless unchanged, decode it into windows, within ``job.timeout`` seconds. Never raises
    for a bad file."""
    t0 = time.perf_counter()
    sha = job.known_sha or ""
    try:
        with _time_limit(job.timeout):
            sha = sha or _hash_regular(job.path)
            if job.stored_key == f"sha256:{sha};meta:{job.meta_digest}":
                return _Outcome(job.index, "unchanged", sha, seconds=time.perf_counter() - t0)
            decoded = decode_track(job.path, job.plan, start=job.start, end=job.end)
        return _Outcome(job.index, "ok", sha, decoded, seconds=time.perf_counter() - t0)
    except _DecodeTimeout:
        reason = _timeout_reason(job.timeout or 0.0)
        return _Outcome(job.index, "failed", sha, reason=reason, seconds=time.perf_counter() - t0)
    except AudioError as exc:
        return _Outcome(job.index, "failed", sha, reason=str(exc), seconds=time.perf_counter() - t0)
    except OSError as exc:
        return _Outcome(
            job.index, "failed", sha, reason=f"cannot read the file: {exc}", seconds=time.perf_counter() - t0
        )
    except Exception as exc:  # one bad file never stops the run
        return _Outcome(
            job.index,
            "failed",
            sha,
            reason=f"decoding failed: {type(exc).__name__}: {exc}",
            seconds=time.perf_counter() - t0,
        )


def default_workers() -> int:
    """Decoding processes by default: one per core beyond the one running the model, 1 to 4."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def _watch_parent(parent: int) -> None:
    """Worker initializer: exit when the indexing process is gone (a SIGKILLed parent would otherwise leave its
    workers blocked on their queue forever)."""

    def watch() -> None:
        while True:
            time.sleep(0.5)
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # alive, under another user (cannot happen for our own parent)
                pass

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def _init_worker(parent: int) -> None:
    """Worker initializer: compute on one thread (:func:`~musicsearch.index.embedder.single_threaded`: the
    worker is one of the processes sharing the cores with the model), and exit with the indexing process."""
    single_threaded()
    _watch_parent(parent)


def _pool(workers: int) -> cf.ProcessPoolExecutor:
    """A pool of decoding processes, each on one thread (:func:`_init_worker`). With ``forkserver`` (Linux) the
    server preloads this module only and workers start in milliseconds; each still imports the caller's
    ``__main__`` script as ``__mp_main__`` (multiprocessing's rule; not for ``python -m``), so a script that
    imports torch at module level gives every worker torch's start-up (seconds)."""
    if "forkserver" in mp.get_all_start_methods():
        server = mp.get_context("forkserver")
        server.set_forkserver_preload([__name__])  # no effect once this process's fork server runs
        ctx: Any = server
    else:
        ctx = mp.get_context("spawn")
    return cf.ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(os.getpid(),)
    )


def _kill_workers(pool: cf.ProcessPoolExecutor) -> None:
    """Kill a pool's worker processes (one is stuck in a decoder); its futures then fail as a broken pool."""
    procs = getattr(pool, "_processes", None) or {}  # the executor's only handle on its workers
    for proc in list(procs.values()):
        with contextlib.suppress(Exception):
            proc.kill()


class _Decoding:
    """The decoding jobs in a pool now (:func:`_outcomes` keeps :attr:`futures`), for the batcher to choose the
    model's cores around them.

    Args:
        workers: processes of the pool (at most this many jobs run at once).
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.futures: dict[cf.Future[_Outcome], _Job] = {}
        self.seconds = 0.0  # wall seconds of the finished jobs, summed
        self.jobs = 0

    def running(self) -> int:
        """Jobs submitted and not finished (capped at :attr:`workers`: the rest wait for a worker)."""
        return min(self.workers, sum(1 for f in self.futures if not f.done()))

    def wait(self, timeout: float | None) -> None:
        """Block until a running job finishes (or ``timeout`` seconds pass)."""
        cf.wait([f for f in self.futures if not f.done()], timeout=timeout, return_when=cf.FIRST_COMPLETED)

    def finished(self, outcome: _Outcome) -> None:
        """Count a job's time (for :meth:`mean_seconds`)."""
        self.seconds += outcome.seconds
        self.jobs += 1

    def mean_seconds(self) -> float:
        """Mean wall seconds of a job so far (0 before the first)."""
        return self.seconds / self.jobs if self.jobs else 0.0


def _outcomes(
    jobs: Sequence[_Job], workers: int, *, watchdog: float | None = None, decoding: _Decoding | None = None
) -> Iterator[_Outcome]:
    """Run jobs in a process pool, at most ``2·workers + 2`` ahead of the consumer, yielding as they finish.

    ``workers == 0`` runs them inline; ``decoding`` (optional) is kept up to date with the jobs in the pool. When
    the pool breaks (a worker killed by a decoder crash), the jobs it held are re-run one at a time in a fresh pool
    so the one that crashes is found and reported alone. Each job limits its own time (:func:`_time_limit`);
    ``watchdog`` is the backstop for a decoder stuck inside C code: when no job finishes for that many seconds,
    the workers are killed and their jobs re-run one at a time, and the one that hangs again is reported.
    """
    if workers <= 0:
        for job in jobs:
            yield _run_job(job)
        return
    queue = iter(jobs)
    suspects: list[_Job] = []
    ahead = 2 * workers + 2
    while True:
        pool = _pool(workers)
        broken = False
        pending: dict[cf.Future[_Outcome], _Job] = {}
        if decoding is not None:
            decoding.futures = pending
        try:
            # suspects of the last breakage run one at a time; then the rest, several ahead
            while suspects:
                job = suspects.pop(0)
                try:
                    yield pool.submit(_run_job, job).result(timeout=watchdog)
                except BrokenProcessPool:
                    yield _Outcome(job.index, "failed", reason="the decoder crashed on this file (worker died)")
                    broken = True
                    break
                except cf.TimeoutError:
                    _kill_workers(pool)
                    yield _Outcome(job.index, "failed", reason=_timeout_reason(job.timeout or watchdog or 0.0))
                    broken = True
                    break
            if broken:
                continue
            for job in itertools.islice(queue, ahead):
                pending[pool.submit(_run_job, job)] = job
            while pending:
                done, _ = cf.wait(pending, timeout=watchdog, return_when=cf.FIRST_COMPLETED)
                if not done:  # every worker stuck past its own time limit: kill them, find the file alone
                    log.warning("no file finished decoding in %g s; restarting the decoding workers", watchdog)
                    _kill_workers(pool)
                    broken = True
                    suspects.extend(pending.values())
                    pending.clear()
                    break
                for fut in done:
                    job = pending.pop(fut)
                    try:
                        outcome = fut.result()
                    except BrokenProcessPool:
                        broken = True
                        suspects.append(job)
                        continue
                    if decoding is not None:
                        decoding.finished(outcome)
                    yield outcome
                    if not broken:
                        for nxt in itertools.islice(queue, 1):
                            pending[pool.submit(_run_job, nxt)] = nxt
                if broken:
                    suspects.extend(pending.values())
                    pending.clear()
            if not broken:
                return
            log.warning("a decoding worker died; re-running %d files one at a time", len(suspects))
        finally:
            pool.shutdown(wait=not broken, cancel_futures=True)


# --------------------------------------------------------------------------------------------------------------
# Main process: batching windows across tracks, committing


@dataclass
class _Slot:
    index: int
    outcome: _Outcome
    raw: np.ndarray  # (n, D) window embeddings being filled
    filled: int = 0
    error: str = ""  # set when the model returned NaN/inf for this track's windows


#: Why a track fails when the model returns NaN or infinity for its windows (and for no one else's).
NONFINITE_REASON = (
    "the model returned NaN or infinity for this file's audio (its samples are probably garbage or far outside "
    "-1..1, e.g. a damaged float WAV); check the file, re-export it, or remove it from the collection"
)


#: How much faster a window must be on every core than on the cores the workers leave for the model to take every
#: core while nothing decodes (ONNX Runtime on 2 idle cores: 1.7x; on 2 cores at load 9: 1.0x or slower, and the
#: extra threads cost CPU that the machine's other work wanted).
THREADS_PAY = 1.2
#: Passes between two tries of every core when it did not pay.
RETIME_PASSES = 64


class _Batcher:
    """Queue windows of several tracks and embed them ``batch_size`` at a time; hand back finished tracks.

    Args:
        embedder: the model.
        batch_size: windows per forward pass on every core.
        cores: the cores the model may use (default :func:`~musicsearch.index.embedder.available_cores`).
        decoding: the decoding jobs running beside the model (``None``: none ever do); each forward pass runs on
            the cores they leave (see the module docstring, "Cores").
    """

    def __init__(
        self, embedder: Embedder, batch_size: int, *, cores: int | None = None, decoding: _Decoding | None = None
    ) -> None:
        self.embedder = embedder
        self.batch_size = batch_size
        self.cores = available_cores() if cores is None else max(1, int(cores))
        self.decoding = decoding
        self.queue: list[tuple[_Slot, int]] = []  # (slot, first window not yet queued for the model)
        self.queued = 0
        self.model_seconds = 0.0
        self.window_seconds: dict[int, float] = {}  # threads -> seconds per window on that many (running mean)
        self.batch_seconds: dict[int, float] = {}  # the same, from passes of batch_size windows only
        self.tried: set[int] = set()  # thread counts run once (the first pass may make a session: not timed)
        self.waits = 0  # times the model waited for the decoders rather than share the cores
        self.passes = 0

    def _threads_for(self, m: int) -> tuple[int, int]:
        """``(threads, windows)`` for the next forward pass of at most ``m`` windows: ``m`` on every core when
        nothing decodes, else one window on the cores the decoders leave, or (when that window would outlast
        twice a decode) wait for the decoders first. Where every core is not :data:`THREADS_PAY` times faster a
        window than the cores the workers leave (both timed on full batches; a busy machine: no core is free),
        the model keeps the latter with ``m`` windows, as a fixed split would; every :data:`RETIME_PASSES`
        passes both are timed again."""
        if self.decoding is None:
            return self.cores, m
        self.passes += 1
        if self.passes % RETIME_PASSES == 0:  # time both again: the machine's load changes
            self.batch_seconds.clear()
        split = max(1, self.cores - self.decoding.workers)
        full, left = self.batch_seconds.get(self.cores), self.batch_seconds.get(split)
        if split < self.cores and (left is None or (full is not None and left < THREADS_PAY * full)):
            return split, m  # timing the split first, or every core does not pay
        while running := self.decoding.running():
            shared = max(1, self.cores - running)
            per_window = self.window_seconds.get(shared)
            if per_window is None or per_window <= 2.0 * self.decoding.mean_seconds():
                return shared, 1
            self.waits += 1
            if self.waits % 64 == 0:  # time it again now and then: one pass on a busy machine may have misled
                del self.window_seconds[shared]
            self.decoding.wait(timeout=per_window)
        return self.cores, m

    def add(self, outcome: _Outcome) -> list[_Slot]:
        assert outcome.decoded is not None
        n = outcome.decoded.windows.shape[0]
        slot = _Slot(outcome.index, outcome, np.empty((n, self.embedder.dim), np.float32))
        self.queue.append((slot, 0))
        self.queued += n
        done: list[_Slot] = []
        while self.queued >= self.batch_size:
            done += self._run(self.batch_size)
        return done

    def flush(self) -> list[_Slot]:
        done: list[_Slot] = []
        while self.queued:
            done += self._run(min(self.queued, self.batch_size))
        return done

    def _run(self, m: int) -> list[_Slot]:
        threads, m = self._threads_for(m)
        parts: list[tuple[_Slot, int, int]] = []  # (slot, first window, stop)
        need = m
        while need:
            slot, first = self.queue[0]
            assert slot.outcome.decoded is not None
            n = slot.outcome.decoded.windows.shape[0]
            take = min(need, n - first)
            parts.append((slot, first, first + take))
            need -= take
            if first + take == n:
                self.queue.pop(0)
            else:
                self.queue[0] = (slot, first + take)
        batch = np.concatenate([s.outcome.decoded.windows[a:b] for s, a, b in parts if s.outcome.decoded is not None])
        t0 = time.perf_counter()
        with self.embedder.using_threads(threads):
            try:
                emb = self.embedder.embed_windows(batch)  # (m, D)
            except MusicSearchError as exc:  # NaN/inf: find the tracks that cause it; the others are embedded alone
                emb = self._without_bad_tracks(parts, exc)
        spent = time.perf_counter() - t0
        self.model_seconds += spent
        if threads in self.tried:  # a running mean: one pass on a busy machine says little
            last = self.window_seconds.get(threads)
            self.window_seconds[threads] = spent / m if last is None else 0.7 * last + 0.3 * spent / m
            if m == self.batch_size:  # full batches only: the two thread counts compared like for like
                last = self.batch_seconds.get(threads)
                self.batch_seconds[threads] = spent / m if last is None else 0.7 * last + 0.3 * spent / m
        self.tried.add(threads)
        self.queued -= m
        done = []
        row = 0
        for slot, a, b in parts:
            slot.raw[a:b] = emb[row : row + b - a]
            row += b - a
            slot.filled += b - a
            if slot.filled == slot.raw.shape[0]:
                done.append(slot)
        return done

    def _without_bad_tracks(self, parts: list[tuple[_Slot, int, int]], exc: MusicSearchError) -> np.ndarray:
        """Embed each track's part of a batch that gave NaN/inf on its own; a track whose windows still give
        NaN/inf is marked failed (its rows stay zero and are never stored). When the model gives NaN/inf even
        on a plain tone, the weights are at fault: ``exc`` is raised and the run stops."""
        emb = np.zeros((sum(b - a for _, a, b in parts), self.embedder.dim), np.float32)
        row, bad = 0, 0
        for slot, a, b in parts:
            assert slot.outcome.decoded is not None
            if not slot.error:
                try:
                    emb[row : row + b - a] = self.embedder.embed_windows(slot.outcome.decoded.windows[a:b])
                except MusicSearchError:
                    slot.error = NONFINITE_REASON
                    bad += 1
            row += b - a
        if bad == len(parts) and not self._model_is_sane():
            raise exc
        log.warning("the model returned NaN/inf for %d of %d tracks of a batch; re-ran the others", bad, len(parts))
        return emb

    def _model_is_sane(self) -> bool:
        """Whether the model gives finite output for one window of a quiet 440 Hz tone."""
        n = self.embedder.window_samples
        t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
        probe = (0.1 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)[None, :]
        try:
            self.embedder.embed_windows(probe)
        except MusicSearchError:
            return False
        return True


@dataclass
class _Ready:
    item: SourceItem
    info: TrackInfo
    track: np.ndarray  # (D,) unit
    windows: np.ndarray  # (n, D) unit
    starts: np.ndarray  # (n,) seconds
    replace: int | None  # stored track (int id) this one replaces


class _Writer:
    """Collects finished tracks and commits them in small atomic batches (see the module docstring)."""

    def __init__(self, store: Store, report: IndexReport, *, commit_tracks: int, commit_seconds: float) -> None:
        self.store = store
        self.report = report
        self.commit_tracks = max(1, commit_tracks)
        self.commit_seconds = commit_seconds
        self.ready: list[_Ready] = []
        self.rows: list[FileRow] = []
        self.removals: list[int] = []
        self.last = time.monotonic()
        self.last_save = 0.0

    def add(self, ready: _Ready, row: FileRow) -> None:
        self.ready.append(ready)
        self.rows.append(row)

    def note(self, row: FileRow) -> None:
        self.rows.append(row)

    def due(self) -> bool:
        interval = max(self.commit_seconds, 10.0 * self.last_save)
        return len(self.ready) >= self.commit_tracks or (
            bool(self.ready or self.rows) and time.monotonic() - self.last >= interval
        )

    def commit(self) -> None:
        if not (self.ready or self.rows or self.removals):
            return
        t0 = time.perf_counter()
        store = self.store
        # the file log first: extra rows for tracks that end up uncommitted are harmless (see Store.playable_path)
        store.files.put(self.rows)
        with store.db.transaction():
            drop: list[np.ndarray] = []
            for track in self.removals:
                drop.append(store.db.remove_track(track))
            for r in self.ready:
                if r.replace is not None:
                    drop.append(store.db.remove_track(r.replace))
            if drop:
                ids = np.concatenate(drop)
                store.tracks.remove(ids)
                store.windows.remove(ids)
            t_ids, t_vecs, w_ids, w_vecs = [], [], [], []
            for r in self.ready:
                rec, wins = store.db.add_track(r.info, window_starts=r.starts.tolist())
                assert rec.vector_id is not None
                t_ids.append(rec.vector_id)
                t_vecs.append(r.track)
                w_ids += [w.vector_id for w in wins]
                w_vecs.append(r.windows)
            if t_ids:  # one add per backend and commit: an upsert scans the store once
                store.tracks.add(np.array(t_ids, np.int64), np.stack(t_vecs))
                store.windows.add(np.array(w_ids, np.int64), np.concatenate(w_vecs))
                store.vector_file.write(np.array(t_ids + w_ids, np.int64), np.concatenate([np.stack(t_vecs), *w_vecs]))
            t_save = time.perf_counter()
            store.save_vectors()
            self.last_save = time.perf_counter() - t_save
        self.report.removed += len(self.removals)
        self.ready, self.rows, self.removals = [], [], []
        self.last = time.monotonic()
        self.report.write_seconds += time.perf_counter() - t0


def _model_cores(embedder: Embedder, workers: int) -> int:
    """The model's threads with nothing decoding beside it: every core when its threads follow the decoders
    (:attr:`~musicsearch.index.embedder.Embedder.threads_follow_decoders`), else the cores the workers leave."""
    return available_cores() if embedder.threads_follow_decoders else model_threads(workers)


def index_collection(
    source: str | os.PathLike[str],
    store: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | Embedder | None = None,
    backend: str | None = None,
    backend_options: dict[str, Any] | None = None,
    workers: int | None = None,
    batch_size: int | None = None,
    max_windows: int | None = None,
    prune: bool = False,
    retry_failed: bool = False,
    commit_tracks: int = 256,
    commit_seconds: float = 30.0,
    progress: bool = False,
    shard: tuple[int, int] | None = None,
    pipeline: Callable[[Sequence[_Job]], Iterable[_Outcome]] | None = None,
    decode_timeout: float | None = DECODE_TIMEOUT,
    rehash: bool = False,
) -> IndexReport:
    """Index (or update) a store from a folder or a manifest.

    Args:
        source: folder of audio files, or a JSONL manifest.
        store: the store directory (created when missing).
        model: ``--model`` value or an :class:`Embedder`; may be omitted for an existing store (its own model).
        backend: vector backend of a new store (``faiss`` by default; ``numpy``, ``milvus``).
        backend_options: options of a new store's backends (e.g. ``{"exact_threshold": 100000}``).
        workers: decoding processes (default :func:`default_workers`; 0 decodes in the main process), each on
            one thread; each forward pass of the model runs on the cores the decoders running then leave (see
            the module docstring, "Cores").
        batch_size: windows per model forward pass, across tracks (default: the embedder's own, which
            :func:`~musicsearch.index.embedder.open_index_embedder` sets per runtime).
        max_windows: windows per track at most, for a new store (default 16).
        prune: drop stored tracks that are no longer in the source.
        retry_failed: retry files that failed before and have not changed since.
        commit_tracks: commit after this many finished tracks ...
        commit_seconds: ... or this many seconds (stretched to keep commits under ~10 % of the time).
        progress: show a tqdm progress bar (tracks/s and time left) on stderr.
        shard: ``(rank, world_size)`` to index only this shard's part of the source (the tracks whose
            :func:`~musicsearch.index.shards.shard_of` is ``rank``) into ``store``, the shard's own store (see
            :func:`~musicsearch.index.shards.shard_store_path`), with ids disjoint from the other shards'; merge
            the shard stores with :func:`~musicsearch.index.shards.merge_stores`.
        pipeline: decodes *and embeds* the jobs elsewhere instead of the local pool and model (the Ray run of
            :mod:`musicsearch.index.cluster`); planning, committing and reporting stay here.
        decode_timeout: seconds to hash and decode one file at most (``None``: no limit); a file that takes
            longer is reported as failed.
        rehash: hash every file again even when its size and modification time are unchanged (finds same-size
            edits whose modification time was restored, which the size + mtime shortcut misses).

    Returns:
        The :class:`IndexReport`.

    Raises:
        MusicSearchError: unreadable source, a model other than the store's, settings that contradict the store,
            or another run holding the store.
    """
    t_start = time.perf_counter()
    if batch_size is not None and batch_size < 1:
        raise MusicSearchError(f"batch size must be >= 1, got {batch_size}")
    workers = default_workers() if workers is None else int(workers)
    if workers < 0:
        raise MusicSearchError(f"workers must be >= 0, got {workers}")
    if shard is not None:
        shard = (int(shard[0]), int(shard[1]))
        if not 0 <= shard[0] < shard[1]:
            raise MusicSearchError(f"shard must be RANK/WORLD_SIZE with 0 <= RANK < WORLD_SIZE, got {shard}")
    source, store = Path(source).expanduser(), Path(store).expanduser()
    items, rejected = collect_source(source)
    if shard is not None:
        items = [it for it in items if shard_of(it.track_id, shard[1]) == shard[0]]
        rejected = [f for f in rejected if shard_of(f.track_id, shard[1]) == shard[0]]
    path = Path(store)
    if is_store(path):
        settings = read_settings(path)
        if settings.shard != shard:
            raise MusicSearchError(
                f"store {path} holds {describe_shard(settings.shard)}, not {describe_shard(shard)}; give the same "
                "--shard as when it was created, or another store"
            )
        if backend is not None and backend != settings.backend:
            raise MusicSearchError(
                f"store {path} uses the {settings.backend!r} backend, not {backend!r}; "
                "omit --backend or use a new store"
            )
        if max_windows is not None and max_windows != settings.plan.max_windows:
            raise MusicSearchError(
                f"store {path} was built with at most {settings.plan.max_windows} windows a track, not {max_windows}; "
                "omit --max-windows or use a new store"
            )
        embedder = open_index_embedder(store_model(path, model), batch_size=batch_size)
        with writing(path):
            st = Store.open(path, writable=True)
    else:
        embedder = open_index_embedder(store_model(path, model), batch_size=batch_size)
        plan = embedder.plan(max_windows=DEFAULT_MAX_WINDOWS if max_windows is None else max_windows)
        settings = StoreSettings(
            model_name=embedder.name,
            weights_checksum=embedder.checksum,
            model_source=embedder.source,
            plan=plan,
            dim=embedder.dim,
            backend=backend or "faiss",
            backend_options=dict(backend_options or {}),
            created=time.time(),
            shard=shard,
        )
        with writing(path):
            st = Store.create(path, settings)
    batch_size = embedder.batch_size if batch_size is None else batch_size
    report = IndexReport(store=str(path), scanned=len(items) + len(rejected), workers=workers, batch_size=batch_size)
    report.failed.extend(rejected)
    try:
        with writing(path), embedder.using_threads(_model_cores(embedder, workers)):
            st.check_model(embedder)
            queries = tuning_queries(embedder)  # an IVF (re)training tunes nprobe on the model's typical texts
            st.tracks.set_tuning_queries(queries)
            st.windows.set_tuning_queries(queries)
            report.repaired = st.repaired + st.repair()
            _index_into(st, embedder, items, report, workers, batch_size, prune, retry_failed, commit_tracks,
                        commit_seconds, progress, pipeline, decode_timeout, rehash)  # fmt: skip
    finally:
        st.close()
    report.wall_seconds = time.perf_counter() - t_start
    return report


def _index_into(
    st: Store,
    embedder: Embedder,
    items: list[SourceItem],
    report: IndexReport,
    workers: int,
    batch_size: int,
    prune: bool,
    retry_failed: bool,
    commit_tracks: int,
    commit_seconds: float,
    progress: bool,
    pipeline: Callable[[Sequence[_Job]], Iterable[_Outcome]] | None = None,
    decode_timeout: float | None = None,
    rehash: bool = False,
) -> None:
    if decode_timeout is not None and not decode_timeout > 0:
        raise MusicSearchError(f"decode timeout must be > 0 seconds (or None for no limit), got {decode_timeout}")
    plan = st.settings.plan
    jobs: list[_Job] = []
    stats: dict[int, tuple[int, int, str]] = {}  # item index -> (size, mtime_ns, realpath)
    existing: dict[int, TrackRecord] = {}
    seen_ids: set[str] = set()
    for i, item in enumerate(items):
        seen_ids.add(item.track_id)
        try:
            fst = os.stat(item.path)
        except OSError as exc:
            report.failed.append(FailedFile(item.track_id, item.path, f"cannot read the file: {exc.strerror}"))
            continue
        if not stat.S_ISREG(fst.st_mode):  # a named pipe would block its reader forever: never opened
            report.failed.append(FailedFile(item.track_id, item.path, NOT_REGULAR_REASON))
            continue
        stats[i] = (fst.st_size, fst.st_mtime_ns, os.path.realpath(item.path))
        rec = st.db.find_track(item.track_id)
        if rec is not None:
            existing[i] = rec
        row = st.files.get(item.path)
        same_stat = row is not None and (row.size, row.mtime_ns) == (fst.st_size, fst.st_mtime_ns)
        known = row.sha256 if row is not None and same_stat and not rehash else None
        if known and rec is not None and rec.content_hash == content_key(known, item):
            report.unchanged += 1
            continue
        whole_file = item.start is None and item.end is None
        if known and row is not None and row.status == "failed" and whole_file and rec is None and not retry_failed:
            report.failed.append(FailedFile(item.track_id, item.path, f"{row.reason} (unchanged since it failed)"))
            continue
        jobs.append(
            _Job(
                i,
                item.path,
                item.start,
                item.end,
                known,
                None if rec is None else rec.content_hash,
                item.meta_digest(),
                plan,
                decode_timeout,
            )
        )
    stale = [t for t in st.db.iter_tracks() if t.track_id not in seen_ids]
    writer = _Writer(st, report, commit_tracks=commit_tracks, commit_seconds=commit_seconds)
    if prune:
        writer.removals = [t.id for t in stale]
    else:
        report.stale = len(stale)
    follow = workers > 0 and pipeline is None and embedder.threads_follow_decoders
    decoding = _Decoding(workers) if follow else None
    batcher = _Batcher(embedder, batch_size, cores=_model_cores(embedder, workers), decoding=decoding)
    bar = tqdm(total=len(jobs), desc="index", unit="track", disable=not progress, smoothing=0.1, dynamic_ncols=True)

    def row_for(i: int, sha: str, status: str, reason: str = "") -> FileRow:
        size, mtime, real = stats[i]
        return FileRow(items[i].path, size, mtime, sha, real, status, reason)

    def finish(slots: list[_Slot]) -> None:
        for slot in slots:
            item, out = items[slot.index], slot.outcome
            assert out.decoded is not None
            try:
                if slot.error:
                    raise MusicSearchError(slot.error)
                track, windows = track_vector(slot.raw), l2_normalize(slot.raw, what="window embeddings")
            except MusicSearchError as exc:
                reason = NONFINITE_REASON if "NaN" in str(exc) else str(exc)
                report.failed.append(FailedFile(item.track_id, item.path, reason))
                writer.note(row_for(slot.index, out.sha256, "failed", reason))
                bar.update(1)
                continue
            rec = existing.get(slot.index)
            info = TrackInfo(
                track_id=item.track_id,
                path=item.path,
                content_hash=content_key(out.sha256, item),
                duration=round(out.decoded.duration, 3),
                title=item.title,
                artist=item.artist,
                album=item.album,
                year=item.year,
                folder=item.folder,
                tags=item.tags,
            )
            writer.add(
                _Ready(item, info, track, windows, out.decoded.starts, None if rec is None else rec.id),
                row_for(slot.index, out.sha256, "ok"),
            )
            if rec is None:
                report.added += 1
            else:
                report.updated += 1
            report.windows += windows.shape[0]
            bar.update(1)

    interrupted = True
    try:
        watchdog = None if decode_timeout is None else decode_timeout + 30.0
        outcomes = (
            pipeline(jobs) if pipeline is not None else _outcomes(jobs, workers, watchdog=watchdog, decoding=decoding)
        )
        for out in outcomes:
            report.decode_seconds += out.seconds
            item = items[out.index]
            if out.status == "failed":
                report.failed.append(FailedFile(item.track_id, item.path, out.reason))
                if out.sha256:
                    writer.note(row_for(out.index, out.sha256, "failed", out.reason))
                bar.update(1)
            elif out.status == "unchanged":
                report.unchanged += 1
                writer.note(row_for(out.index, out.sha256, "ok"))
                bar.update(1)
            else:
                finish(batcher.add(out) if out.raw is None else [_Slot(out.index, out, out.raw, out.raw.shape[0])])
            bar.set_postfix(failed=len(report.failed), refresh=False)
            if writer.due():
                writer.commit()
        finish(batcher.flush())
        interrupted = False
    except KeyboardInterrupt:
        writer.commit()  # keep what is finished (Ctrl-C): a rerun resumes after it
        raise
    finally:
        bar.close()
        report.model_seconds += batcher.model_seconds
    if not interrupted:
        writer.commit()
