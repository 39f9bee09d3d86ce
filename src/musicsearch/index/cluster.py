"""Indexing on a Ray cluster: the same run as :func:`~musicsearch.index.indexer.index_collection`, with decoding
and embedding spread over the cluster through Ray Data.

Pipeline (one streaming Ray Data dataset)::

    driver: list the source, plan the jobs       the indexer's own planning: unchanged files (same size and mtime
        |                                        as files.sqlite) never leave the driver
    from_items(jobs)                             one job a block, so a lost block is one file
    map_batches(_decode_batch)                   CPU tasks: hash, skip unchanged bytes, decode into windows
        |                                        (:func:`~musicsearch.index.indexer._run_job`, never raises)
    map_batches(_EmbedActor, concurrency=A)      an actor pool: each actor loads the model once (on its GPU when
        |                                        the cluster has GPUs), embeds the windows of several tracks in
        |                                        ``batch_size`` forward passes, returns embeddings, not audio
    driver: the indexer's writer                 commits in small atomic batches, as in a local run
                                                 (files.sqlite, metadata, both vector indexes, vectors.f32)

Everything but decoding and embedding is the local indexer's code (``index_collection(pipeline=...)``): the
store is the same kind of store, updated incrementally, resumed after any crash (a re-run skips committed
tracks: no duplicates, nothing missing), bad files reported one by one with their reasons, progress shown by the
same bar. Only window embeddings (``4·D`` bytes a window) travel back to the driver, never audio.

Faults: a decoding task or embedding actor that dies is retried by Ray (actors are restarted, their batches
re-run); a file whose decoding task keeps dying (a decoder crash) is reported as failed, not fatal. If the driver
itself dies, re-run the same command: the store resumes after its last commit.

Writers: the driver writes the store. With the ``milvus`` backend on a server URI the vectors go straight into the
server's collection (``--backend milvus``, see docs/scaling.md); with ``faiss`` the index lives in the store
directory on the driver. To spread writes over several drivers, combine ``--ray`` with ``--shard K/N`` (one
driver per shard) and ``--merge`` the shard stores afterwards.

Ray is optional (``pip install 'musicsearch[cluster]'``); importing this module does not import it.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from musicsearch.errors import MusicSearchError
from musicsearch.index.embedder import Embedder, load_embedder
from musicsearch.index.indexer import IndexReport, _Job, _Outcome, _run_job, index_collection

__all__ = ["RayOptions", "RayPipeline", "import_ray", "index_collection_ray"]

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'musicsearch[cluster]' (or pip install 'ray[data]')"


def import_ray() -> Any:
    """Import Ray (with Ray Data) or say how to install it.

    Returns:
        The ``ray`` module.

    Raises:
        MusicSearchError: Ray or Ray Data is not installed.
    """
    try:
        import ray
        import ray.data  # Ray Data is a separate extra of ray
    except ImportError as exc:
        raise MusicSearchError(
            f"--ray needs Ray with Ray Data, which is not installed ({exc}); {INSTALL_HINT}"
        ) from exc
    return ray


@dataclass(frozen=True)
class RayOptions:
    """How a Ray run uses the cluster.

    Attributes:
        address: the cluster: ``None`` starts a local Ray instance on this machine (every core), ``"auto"`` joins
            the cluster this machine belongs to, ``"ray://HOST:10001"`` connects a remote driver. Ignored when Ray
            is already initialised in this process.
        actors: embedding actors (model copies); ``None``: one per GPU of the cluster, or on a CPU-only cluster
            one per 4 CPUs (at least 1).
        gpus_per_actor: GPUs each actor holds; ``None``: 1 when the cluster has GPUs, else 0. Fractions share a
            GPU between actors.
        cpus_per_actor: CPUs each actor holds (its torch threads).
        tracks_per_call: tracks an actor embeds in one call (their windows batched ``batch_size`` at a time).
        device: the model's device in an actor; ``None``: ``cuda`` when the actor holds a GPU, else ``cpu``.
    """

    address: str | None = None
    actors: int | None = None
    gpus_per_actor: float | None = None
    cpus_per_actor: float = 1.0
    tracks_per_call: int = 8
    device: str | None = None


def _decode_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Ray Data CPU task: pickled jobs -> pickled :class:`_Outcome` s (decoded windows included)."""
    outs = [pickle.dumps(_run_job(pickle.loads(job)), protocol=5) for job in batch["job"]]
    return {"outcome": np.array(outs, dtype=object)}


class _EmbedActor:
    """Ray Data actor: holds one model; decoded outcomes in, outcomes with window embeddings (no audio) out."""

    def __init__(self, source: str, checksum: str, batch_size: int, device: str | None) -> None:
        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES per actor
        self.embedder = load_embedder(source, batch_size=batch_size, device=device)
        if self.embedder.checksum != checksum:
            raise MusicSearchError(
                f"the model {source!r} loaded on {socket.gethostname()} has weights {self.embedder.checksum[:12]}, "
                f"but the driver's has {checksum[:12]}; give every node the same model file"
            )
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        log.info("embedding actor %s loaded %s on %s", self.worker, self.embedder.name, device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs: list[_Outcome] = [pickle.loads(b) for b in batch["outcome"]]
        todo = [i for i, o in enumerate(outs) if o.status == "ok" and o.decoded is not None]
        model_seconds = 0.0
        if todo:
            wins = [outs[i].decoded.windows for i in todo]  # type: ignore[union-attr]
            t0 = time.perf_counter()
            raw = self.embedder.embed_windows(np.concatenate(wins))  # (sum n, D): windows of several tracks
            model_seconds = time.perf_counter() - t0
            bounds = np.cumsum([0] + [w.shape[0] for w in wins])
            for j, i in enumerate(todo):
                decoded = outs[i].decoded
                assert decoded is not None
                light = replace(decoded, windows=np.zeros((0, decoded.windows.shape[1]), np.float32))  # no audio back
                outs[i] = replace(outs[i], decoded=light, raw=np.array(raw[bounds[j] : bounds[j + 1]]))
        return {
            "outcome": np.array([pickle.dumps(o, protocol=5) for o in outs], dtype=object),
            "worker": np.array([self.worker] * len(outs), dtype=object),
            "model_seconds": np.full(len(outs), model_seconds / max(1, len(todo)), np.float64),
        }


@dataclass
class RayPipeline:
    """Decode and embed indexing jobs on a Ray cluster (the ``pipeline`` of
    :func:`~musicsearch.index.indexer.index_collection`).

    Call it with the planned jobs; it yields one :class:`_Outcome` per job, in the order they finish, with window
    embeddings (``raw``) for decoded tracks. Ray must be initialised.

    Attributes:
        model_source: what every actor loads (a path every node can read, or a registered model name).
        checksum: the weights' SHA-256 the driver loaded; an actor with other weights refuses to start.
        batch_size: windows per forward pass.
        options: cluster options.
        workers: ``host:pid`` of every embedding actor that returned results (for the log).
        model_seconds: forward-pass seconds summed over actors.
    """

    model_source: str
    checksum: str
    batch_size: int
    options: RayOptions = field(default_factory=RayOptions)
    workers: set[str] = field(default_factory=set)
    model_seconds: float = 0.0

    def _layout(self) -> tuple[int, float]:
        ray = import_ray()
        res = ray.cluster_resources()
        gpus = float(res.get("GPU", 0.0))
        per = self.options.gpus_per_actor if self.options.gpus_per_actor is not None else (1.0 if gpus else 0.0)
        if self.options.actors is not None:
            actors = int(self.options.actors)
        elif per > 0:
            actors = max(1, int(gpus // per))
        else:
            actors = max(1, int(res.get("CPU", 1.0)) // 4)
        if actors < 1:
            raise MusicSearchError(f"--ray-actors must be >= 1, got {actors}")
        return actors, per

    def __call__(self, jobs: Sequence[_Job]) -> Iterator[_Outcome]:
        if not jobs:
            return
        import_ray()
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the indexer's own bar counts tracks
        ctx.max_errored_blocks = -1  # a block is one file: a file whose task keeps dying is reported, not fatal
        actors, gpus = self._layout()
        log.info("Ray run: %d jobs, %d embedding actors (%g GPU each)", len(jobs), actors, gpus)
        ds: ray.data.Dataset = ray.data.from_items(
            [{"job": pickle.dumps(job, protocol=5)} for job in jobs], override_num_blocks=len(jobs)
        )
        # max_retries: a decoding task is retried 3 times, then its file is reported; it also keeps Ray Data from
        # fusing decoding into the actors (a fused pipeline would decode inside the GPU actors, one file at a time)
        ds = ds.map_batches(_decode_batch, batch_size=1, batch_format="numpy", num_cpus=1, max_retries=3)
        ds = ds.map_batches(
            _EmbedActor,
            fn_constructor_kwargs={
                "source": self.model_source,
                "checksum": self.checksum,
                "batch_size": self.batch_size,
                "device": self.options.device,
            },
            batch_size=self.options.tracks_per_call,
            batch_format="numpy",
            concurrency=actors,
            num_gpus=gpus,
            num_cpus=self.options.cpus_per_actor,
        )
        seen: set[int] = set()
        for row in ds.iter_rows():
            out: _Outcome = pickle.loads(row["outcome"])
            self.workers.add(str(row["worker"]))
            self.model_seconds += float(row["model_seconds"])
            if out.index in seen:  # a retried batch may deliver a job twice: the first one counts
                continue
            seen.add(out.index)
            yield out
        for job in jobs:  # blocks dropped after their retries ran out (see max_errored_blocks)
            if job.index not in seen:
                yield _Outcome(job.index, "failed", reason="its decoding or embedding task kept dying on the cluster")


def _init_ray(address: str | None) -> bool:
    """Initialise Ray unless it already is; returns whether this call did (and so should shut it down)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, logging_level=logging.WARNING, include_dashboard=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = "a local Ray instance" if address is None else f"the Ray cluster at {address!r}"
        raise MusicSearchError(
            f"cannot start or reach {where} ({exc}); check the address (`ray status` on the head node) "
            "or omit it to run on this machine"
        ) from exc
    return True


def index_collection_ray(
    source: str | os.PathLike[str],
    store: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | Embedder | None = None,
    options: RayOptions | None = None,
    batch_size: int = 16,
    **kwargs: Any,
) -> IndexReport:
    """:func:`~musicsearch.index.indexer.index_collection` with decoding and embedding on a Ray cluster.

    Args:
        source: folder or JSONL manifest; every node must read the same paths (a shared or mounted file system).
        store: the store directory, written by this process (the driver).
        model: as for ``index_collection``; a model given as an :class:`Embedder` must have been loaded from a
            path or name (its ``source``) that every node can load again.
        options: cluster options (:class:`RayOptions`).
        batch_size: windows per forward pass in each actor.
        **kwargs: every other ``index_collection`` option (``backend``, ``prune``, ``shard``, ``progress``, ...);
            ``workers`` is ignored (decoding runs in Ray tasks).

    Returns:
        The :class:`~musicsearch.index.indexer.IndexReport`; ``model_seconds`` sums the actors' forward passes,
        ``workers`` counts the embedding actors that took part.

    Raises:
        MusicSearchError: Ray missing or unreachable, a model held only in memory, or anything
            ``index_collection`` raises.
    """
    opts = options or RayOptions()
    import_ray()
    if model is None:
        from musicsearch.index.store import is_store, read_settings

        if not is_store(store):
            raise MusicSearchError(f"{store} is a new store: give the model to index with (--model NAME_OR_PATH)")
        model = read_settings(store).model_source
    embedder = load_embedder(model, batch_size=batch_size)
    if embedder.source == "<in memory>" or (Path(embedder.source).suffix and not Path(embedder.source).exists()):
        raise MusicSearchError(
            f"the model {embedder.source!r} cannot be loaded by the Ray actors; save it and pass its path (--model)"
        )
    pipeline = RayPipeline(embedder.source, embedder.checksum, batch_size, opts)
    kwargs.pop("workers", None)
    started = _init_ray(opts.address)
    try:
        report = index_collection(
            source, store, model=embedder, batch_size=batch_size, workers=0, pipeline=pipeline, **kwargs
        )
    finally:
        if started:
            import ray

            ray.shutdown()
    report.model_seconds += pipeline.model_seconds
    report.workers = len(pipeline.workers)
    log.info("Ray run: embedding actors %s", ", ".join(sorted(pipeline.workers)) or "none (nothing to embed)")
    return report
