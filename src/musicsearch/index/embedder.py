"""Audio files and texts to vectors, the same way at index time and at query time.

Two halves, kept apart so that decoding can run in worker processes that never import torch:

* :class:`WindowPlan` and :func:`decode_track` (NumPy only): decode a file to 16 kHz mono, pick the windows the
  model will see, and flag empty or silent audio. The plan is fixed per store and written into every vector's
  ``preprocessing_version`` (:meth:`WindowPlan.version`).
* :class:`Embedder` (torch, imported lazily): a loaded model with its identity (config name, weights checksum,
  where it came from), embedding window batches, whole files and texts through
  :mod:`musicsearch.models.inference` (eval mode, no autograd: the same input always gives the same vector).
* :class:`OnnxAudioEmbedder`: the same identity, its audio windows run by an ONNX Runtime session of the model's
  export (:mod:`musicsearch.models.onnx`; within 1e-4 of torch). :func:`open_index_embedder` picks it for indexing
  when the model has a good export (a shipped model is exported on first use), torch otherwise.

Threads: :func:`model_threads` gives the model the cores that are not decoding, and :meth:`Embedder.using_threads`
runs it on that many (torch's intra-op pool, or the ONNX session's). Two compute threads on a core that a decoding
process also wants make every parallel operator wait at its barrier for the descheduled thread (measured with
``benchmarks/index_throughput.py``: its ``before`` runtime keeps the old thread settings).

Window rule (the indexing view of a track, deterministic): ``n = min(max_windows, 1 + ceil((T - W) / H))``
evenly spaced windows of ``W`` samples with starts ``round(i·(T - W)/(n - 1))`` — one window per hop ``H``
(default ``H = W``: the windows tile the track), capped at ``max_windows`` (long tracks are then covered
sparsely but still from start to end). A track no longer than one window gives one window, zero-padded at the
end. The track vector is the mean of the window embeddings before normalisation (the paper's rule, shared with
evaluation); every vector is L2-normalised when stored.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from musicsearch.audio.chunking import (
    SAMPLE_RATE,
    evenly_spaced_starts,
    evenly_spaced_windows,
    n_windows_for,
    rms_db,
)
from musicsearch.audio.io import load_audio, load_audio_windows, segment_samples
from musicsearch.errors import AudioError, MusicSearchError
from musicsearch.fileio import sha256_file
from musicsearch.index.backends.base import l2_normalize

if TYPE_CHECKING:
    from musicsearch.index.metadata import StoreInfo
    from musicsearch.models.dual_encoder import TextToMusic
    from musicsearch.models.onnx import ExportedModel

__all__ = [
    "DEFAULT_BATCH_ONNX",
    "DEFAULT_BATCH_TORCH",
    "DEFAULT_MAX_WINDOWS",
    "ENV_ONNX",
    "PREPROCESSING_VERSION",
    "SILENCE_DB",
    "DecodedTrack",
    "Embedder",
    "OnnxAudioEmbedder",
    "SilentAudioError",
    "WindowPlan",
    "available_cores",
    "decode_track",
    "load_embedder",
    "model_threads",
    "onnx_enabled",
    "open_index_embedder",
    "single_threaded",
]

log = logging.getLogger(__name__)

#: Version of the decoding + windowing rule; bump it whenever the same file would give other windows.
PREPROCESSING_VERSION = "index-v1"
#: Windows per track at most (a 4-minute song with the paper's 9.91 s windows needs 25 to tile; 16 cover it with
#: small gaps at two thirds of the cost).
DEFAULT_MAX_WINDOWS = 16
#: RMS level (dB re full scale) below which a file is flagged silent and not indexed.
SILENCE_DB = -60.0
#: Windows per forward pass by default, by runtime. Measured with the shipped ``default`` model (3 s windows) on
#: 1 and 2 threads (``benchmarks/index_throughput.py --batch-sweep``): both runtimes are fastest per window in small
#: batches (torch's time per window grows past 4-8: larger batches leave the cache).
DEFAULT_BATCH_TORCH = 4
DEFAULT_BATCH_ONNX = 4
#: Environment switch shared with the search path: ``0`` (or ``false``/``no``/``off``) keeps the model on torch.
ENV_ONNX = "MUSICSEARCH_ONNX"


class SilentAudioError(AudioError):
    """A file decodes but holds only silence (its embedding would say nothing about music)."""


@dataclass(frozen=True)
class WindowPlan:
    """How a track is cut into the model's input windows (fixed for a store).

    Attributes:
        window_samples: model input length in samples at :attr:`sample_rate` (``config.audio.window_samples``).
        hop_seconds: largest distance between window starts; ``None`` means one window length.
        max_windows: cap on windows per track.
        sample_rate: decoding rate in Hz (16 kHz for every model here).
        silence_db: RMS level below which a file counts as silent.
    """

    window_samples: int
    hop_seconds: float | None = None
    max_windows: int = DEFAULT_MAX_WINDOWS
    sample_rate: int = SAMPLE_RATE
    silence_db: float = SILENCE_DB

    def __post_init__(self) -> None:
        if self.window_samples < 1:
            raise MusicSearchError(f"window_samples must be >= 1, got {self.window_samples}")
        if self.max_windows < 1:
            raise MusicSearchError(f"max_windows must be >= 1, got {self.max_windows}")
        if self.hop_seconds is not None and not self.hop_seconds > 0:
            raise MusicSearchError(f"hop_seconds must be > 0, got {self.hop_seconds}")

    @property
    def window_seconds(self) -> float:
        """One window in seconds."""
        return self.window_samples / self.sample_rate

    @property
    def hop(self) -> float:
        """The hop in seconds (the window length unless set)."""
        return self.window_seconds if self.hop_seconds is None else float(self.hop_seconds)

    def n_windows(self, n_samples: int) -> int:
        """Windows for a waveform of ``n_samples`` samples (see the module docstring)."""
        return n_windows_for(
            n_samples / self.sample_rate,
            self.hop,
            window_seconds=self.window_seconds,
            max_windows=self.max_windows,
        )

    def version(self) -> str:
        """The preprocessing version recorded with every vector, e.g.
        ``index-v1;sr=16000;win=16000;hop=1;max=16;mean=raw``: another string means other vectors."""
        return (
            f"{PREPROCESSING_VERSION};sr={self.sample_rate};win={self.window_samples};hop={self.hop:g};"
            f"max={self.max_windows};silence={self.silence_db:g};mean=raw"
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "window_samples": self.window_samples,
            "hop_seconds": self.hop_seconds,
            "max_windows": self.max_windows,
            "sample_rate": self.sample_rate,
            "silence_db": self.silence_db,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> WindowPlan:
        """Inverse of :meth:`to_json`."""
        return cls(
            window_samples=int(obj["window_samples"]),
            hop_seconds=None if obj.get("hop_seconds") is None else float(obj["hop_seconds"]),
            max_windows=int(obj["max_windows"]),
            sample_rate=int(obj["sample_rate"]),
            silence_db=float(obj["silence_db"]),
        )


@dataclass(frozen=True)
class DecodedTrack:
    """One decoded file, ready for the model.

    Attributes:
        windows: ``(n, window_samples)`` float32 model inputs.
        starts: ``(n,)`` float64 window starts in seconds from the start of the *file*.
        duration: seconds of audio decoded (the segment's length for a manifest segment).
        level_db: RMS level of the decoded audio in dB.
    """

    windows: np.ndarray
    starts: np.ndarray
    duration: float
    level_db: float


def decode_track(
    path: str | os.PathLike[str], plan: WindowPlan, *, start: float | None = None, end: float | None = None
) -> DecodedTrack:
    """Decode a file (or the segment ``[start, end)`` seconds of it) into the plan's windows.

    Memory per file is bounded whatever its length: a segment longer than ``max_windows + 1`` windows is not
    decoded whole; only the windows kept are read (:func:`~musicsearch.audio.io.load_audio_windows`, equal to the
    same samples of the whole decoded file up to ~1e-7), and its level is measured on them. Shorter segments are
    decoded whole (at most ``max_windows + 1`` windows of audio).

    Args:
        path: audio file.
        plan: the store's window plan.
        start: segment start in seconds (``None``: the file start).
        end: segment end in seconds (``None``: the file end).

    Returns:
        The :class:`DecodedTrack`.

    Raises:
        AudioError: the file is missing, empty, corrupt or undecodable.
        SilentAudioError: the audio is quieter than ``plan.silence_db`` (flagged, not embedded).
    """
    duration = None if end is None else end - (start or 0.0)
    length = plan.window_samples
    if Path(path).suffix.lower() != ".npy":
        total = segment_samples(path, sample_rate=plan.sample_rate, offset=start, duration=duration)
        if total > (plan.max_windows + 1) * length:  # windows cover part of it: read only those
            starts = evenly_spaced_starts(total, length, plan.n_windows(total))  # (n,) samples
            windows = load_audio_windows(
                path, starts, length, sample_rate=plan.sample_rate, offset=start, duration=duration
            )  # (n, W)
            level = rms_db(windows)
            if level < plan.silence_db:
                raise SilentAudioError(
                    f"silent: RMS level {level:.1f} dB is below {plan.silence_db:g} dB, so the file is not indexed "
                    "(check the file or remove it)"
                )
            return DecodedTrack(windows, starts / plan.sample_rate + (start or 0.0), total / plan.sample_rate, level)
    wave = load_audio(path, sample_rate=plan.sample_rate, offset=start, duration=duration)  # (T,)
    if wave.size == 0:
        raise AudioError(f"audio file {path} holds no samples; re-export it or remove it from the collection")
    level = rms_db(wave)
    if level < plan.silence_db:
        raise SilentAudioError(
            f"silent: RMS level {level:.1f} dB is below {plan.silence_db:g} dB, so the file is not indexed "
            "(check the file or remove it)"
        )
    windows, starts = evenly_spaced_windows(
        wave, plan.n_windows(wave.shape[0]), plan.window_samples, sample_rate=plan.sample_rate
    )
    return DecodedTrack(windows, starts + (start or 0.0), wave.shape[0] / plan.sample_rate, level)


def state_checksum(model: Any) -> str:
    """SHA-256 over a module's state dict (names, dtypes, shapes and bytes, in name order), for models that do
    not come from a file."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class Embedder:
    """A loaded model and its identity, embedding audio windows, files and texts into unit vectors.

    Args:
        model: a :class:`~musicsearch.models.dual_encoder.TextToMusic` (put in eval mode here).
        name: model name recorded in the store (the config name: it does not change when files move).
        checksum: SHA-256 of the weights file (or of the state dict for a model built in memory).
        source: how to load the same model again (``--model`` value: a path or a registered name).
        batch_size: windows per forward pass.
    """

    #: What runs the audio tower (``torch`` here, ``onnx`` for :class:`OnnxAudioEmbedder`).
    runtime = "torch"
    #: Whether the indexer may change the model's threads batch by batch as decoders start and finish (every core
    #: while none runs). Not for torch: its OpenMP operators split work statically and wait at a barrier for a
    #: descheduled thread, and on a loaded machine two threads ran slower than one (measured with
    #: ``benchmarks/index_throughput.py``); torch keeps the cores the decoding workers leave for the whole run.
    threads_follow_decoders = False

    def __init__(self, model: TextToMusic, *, name: str, checksum: str, source: str, batch_size: int = 16) -> None:
        if batch_size < 1:
            raise MusicSearchError(f"batch size must be >= 1, got {batch_size}")
        self.model = model.eval()
        self.name = name
        self.checksum = checksum
        self.source = source
        self.batch_size = int(batch_size)

    @classmethod
    def from_model(cls, model: TextToMusic, *, source: str = "<in memory>", batch_size: int = 16) -> Embedder:
        """Wrap a model built or trained in this process (checksum over its state dict)."""
        return cls(model, name=model.config.name, checksum=state_checksum(model), source=source, batch_size=batch_size)

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.model.config.joint_dim)

    @property
    def window_samples(self) -> int:
        """Model input length in samples."""
        return int(self.model.config.audio.window_samples)

    def plan(self, *, max_windows: int = DEFAULT_MAX_WINDOWS, hop_seconds: float | None = None) -> WindowPlan:
        """The window plan for this model."""
        return WindowPlan(self.window_samples, hop_seconds=hop_seconds, max_windows=max_windows)

    def store_info(self, plan: WindowPlan) -> StoreInfo:
        """What the store records with every vector: model name, weights checksum, preprocessing version."""
        from musicsearch.index.metadata import StoreInfo

        return StoreInfo(self.name, self.checksum, plan.version())

    def embed_windows(self, windows: np.ndarray) -> np.ndarray:
        """``(N, window_samples)`` float32 windows -> ``(N, D)`` float32 raw (not normalised) embeddings.

        Raises:
            MusicSearchError: a wrong window length, or NaN/inf from the model.
        """
        if windows.ndim != 2 or windows.shape[1] != self.window_samples:
            raise MusicSearchError(
                f"windows must be (N, {self.window_samples}) for model {self.name}, got {windows.shape}"
            )
        return self._run_windows(windows)

    def _run_windows(self, windows: np.ndarray) -> np.ndarray:
        """The model on checked ``(N, window_samples)`` windows (torch here; a subclass may run another runtime)."""
        from musicsearch.models.inference import embed_windows

        return embed_windows(self.model, windows, batch_size=self.batch_size)

    @contextlib.contextmanager
    def using_threads(self, threads: int) -> Iterator[None]:
        """Run the model on ``threads`` compute threads inside the ``with`` block (torch's intra-op pool, set back
        afterwards: the setting is process-wide).

        Raises:
            MusicSearchError: ``threads`` < 1.
        """
        if threads < 1:
            raise MusicSearchError(f"model threads must be >= 1, got {threads}")
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(int(threads))
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def embed_decoded(self, decoded: DecodedTrack) -> tuple[np.ndarray, np.ndarray]:
        """One decoded track -> ``(track (D,) unit float32, windows (n, D) unit float32)``."""
        raw = self.embed_windows(decoded.windows)  # (n, D)
        return track_vector(raw), l2_normalize(raw, what="window embeddings")

    def embed_file(
        self,
        path: str | os.PathLike[str],
        plan: WindowPlan,
        *,
        start: float | None = None,
        end: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray, DecodedTrack]:
        """Embed a file as the indexer does (for query by example).

        Returns:
            ``(track (D,), windows (n, D), decoded)``: unit float32 vectors and the decoded windows' facts.

        Raises:
            AudioError: as :func:`decode_track`.
        """
        decoded = decode_track(path, plan, start=start, end=end)
        track, windows = self.embed_decoded(decoded)
        return track, windows, decoded

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """``N`` texts -> ``(N, D)`` unit float32 embeddings (a classification model takes its tags only).

        Raises:
            ConfigError: a classification model and a text outside its tag vocabulary.
        """
        from musicsearch.models.inference import embed_texts

        return l2_normalize(embed_texts(self.model, list(texts)), what="text embeddings")

    def __repr__(self) -> str:
        return f"Embedder(name={self.name!r}, checksum={self.checksum[:12]}, source={self.source!r})"


class ExportedEmbedder(Embedder):
    """Base of the embedders whose towers run from an ONNX export (:class:`OnnxAudioEmbedder` here, the search
    path's ``OnnxEmbedder``): the identity of the torch model it stands for (config name, weights checksum,
    source), so a store accepts it exactly when it would accept that model; ``.model`` (the torch model) is loaded
    only if some caller asks for it.

    Args:
        exported: a checked export (:meth:`~musicsearch.models.onnx.ExportedModel.open`).
        source: the ``--model`` value it stands for (how to load the torch model again).
        batch_size: windows per ONNX Runtime call.

    Raises:
        MusicSearchError: a batch size below 1.
    """

    runtime = "onnx"
    threads_follow_decoders = True  # ONNX Runtime hands out parallel work in small blocks, as threads come free

    def __init__(self, exported: ExportedModel, *, source: str, batch_size: int) -> None:
        if batch_size < 1:
            raise MusicSearchError(f"batch size must be >= 1, got {batch_size}")
        self.exported = exported
        self.name = str(exported.meta["config_name"])
        self.checksum = exported.weights_sha256
        self.source = source
        self.batch_size = int(batch_size)
        self._torch: Embedder | None = None

    @property
    def model(self) -> Any:  # type: ignore[override]
        """The torch model (loaded on first use, for callers that need its config or its text tower)."""
        if self._torch is None:
            log.info("loading the torch model %s beside its ONNX export", self.source)
            self._torch = load_embedder(self.source, batch_size=self.batch_size)
        return self._torch.model

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self.exported.dim

    @property
    def window_samples(self) -> int:
        """Model input length in samples."""
        return self.exported.window_samples


class OnnxAudioEmbedder(ExportedEmbedder):
    """An :class:`Embedder` whose audio tower runs from an ONNX export in an ONNX Runtime session.

    It has the identity of the torch model it stands for (config name, weights checksum, source), so a store
    accepts it exactly when it would accept that model, and its window embeddings are within
    :data:`~musicsearch.models.onnx.PARITY_TOLERANCE` of torch's. The session runs ``threads`` intra-op threads in
    sequential execution mode (one operator at a time, each split across the threads), without spin-waiting
    between operators (measured: the spinning threads only took CPU time from the decoding processes and other
    load); one session is made per thread count on first use and kept (the indexer switches between all cores and
    the cores a running decoder leaves, batch by batch). Texts go through
    the export's text graph when it has one, else through the torch model, which :attr:`model` loads on first use
    only.

    Args:
        exported: a checked export (:meth:`~musicsearch.models.onnx.ExportedModel.open`).
        source: the ``--model`` value it stands for (how to load the torch model again).
        batch_size: windows per session call.
        threads: intra-op threads of the session (``0``: :func:`available_cores`).
    """

    def __init__(
        self, exported: ExportedModel, *, source: str, batch_size: int = DEFAULT_BATCH_ONNX, threads: int = 0
    ) -> None:
        if threads < 0:
            raise MusicSearchError(f"model threads must be >= 0, got {threads}")
        super().__init__(exported, source=source, batch_size=batch_size)
        self.threads = int(threads) or available_cores()
        self._sessions: dict[int, Any] = {}  # intra-op threads -> session

    def session(self) -> Any:
        """The ONNX Runtime session of the audio graph with :attr:`threads` intra-op threads (made on first use
        for each thread count, then kept).

        Raises:
            StaleExportError: the graph cannot be loaded (a damaged file).
        """
        if self.threads not in self._sessions:
            self._sessions[self.threads] = self.exported.audio_session(threads=self.threads, spinning=False)
        return self._sessions[self.threads]

    @contextlib.contextmanager
    def using_threads(self, threads: int) -> Iterator[None]:
        """Run the session on ``threads`` intra-op threads inside the ``with`` block (that count's session, made
        on its first use; torch's threads are left alone).

        Raises:
            MusicSearchError: ``threads`` < 1.
        """
        if threads < 1:
            raise MusicSearchError(f"model threads must be >= 1, got {threads}")
        before, self.threads = self.threads, int(threads)
        try:
            yield
        finally:
            self.threads = before

    def _run_windows(self, windows: np.ndarray) -> np.ndarray:
        """Checked ``(N, window_samples)`` float32 windows -> ``(N, D)`` float32 raw embeddings (ONNX Runtime).

        Raises:
            MusicSearchError: NaN/inf from the model.
        """
        sess = self.session()
        x = np.ascontiguousarray(windows, dtype=np.float32)  # (N, T)
        if x.shape[0] == 0:
            return np.zeros((0, self.dim), np.float32)
        parts = [sess.run(None, {"wave": x[a : a + self.batch_size]})[0] for a in range(0, x.shape[0], self.batch_size)]
        out = np.concatenate(parts).astype(np.float32, copy=False)  # (N, D)
        if not np.isfinite(out).all():
            raise MusicSearchError(f"model {self.name} (ONNX) gave NaN or inf for these windows")
        return out

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """``N`` texts -> ``(N, D)`` unit float32 embeddings: the export's text graph, or torch without one."""
        items = list(texts)
        if not self.exported.has_text:
            return super().embed_texts(items)
        if not all(isinstance(t, str) for t in items):
            raise MusicSearchError("texts must be strings")
        return l2_normalize(self.exported.encode_text(items), what="text embeddings")

    def __repr__(self) -> str:
        return (
            f"OnnxAudioEmbedder(name={self.name!r}, checksum={self.checksum[:12]}, "
            f"folder={str(self.exported.folder)!r}, threads={self.threads})"
        )


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def model_threads(workers: int, *, cores: int | None = None) -> int:
    """Compute threads for the model while ``workers`` decoding processes run beside it: the cores they leave,
    at least one (``cores`` defaults to :func:`available_cores`)."""
    total = available_cores() if cores is None else int(cores)
    return max(1, total - max(0, int(workers)))


#: Environment variables that size the thread pools of OpenMP, the BLAS libraries and torch in a new process.
THREAD_ENV = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


def single_threaded() -> None:
    """Make this process compute on one thread: the thread-count variables of :data:`THREAD_ENV` set to 1 (for
    libraries loaded later), the BLAS pools already loaded limited to 1 (through ``threadpoolctl`` when it is
    installed) and torch's intra-op pool to 1 if torch is loaded. The decoding workers call it first: each is one
    of the processes sharing the cores, and a second thread in it would only contend with the model."""
    for name in THREAD_ENV:
        os.environ[name] = "1"
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def onnx_enabled() -> bool:
    """Whether the model may run from an ONNX export (``$MUSICSEARCH_ONNX``, default on)."""
    return os.environ.get(ENV_ONNX, "1").strip().lower() not in ("0", "false", "no", "off")


def open_index_embedder(
    model: str | os.PathLike[str] | Embedder,
    *,
    batch_size: int | None = None,
    threads: int = 0,
    device: str = "cpu",
    onnx: bool | None = None,
    export_on_first_use: bool = True,
) -> Embedder:
    """The model for indexing: an :class:`OnnxAudioEmbedder` when the model has a good export, torch otherwise.

    As the search path (:func:`musicsearch.search.textenc.open_embedder`) does: the export of exactly these
    weights is looked up by their SHA-256 in :func:`~musicsearch.models.onnx.onnx_cache_dir`; a stale or damaged
    one gives a warning naming the problem and torch (never a wrong vector); a shipped model without one is
    exported there first (once, atomically) and then used. ``device`` other than ``cpu`` always means torch.

    Args:
        model: an :class:`Embedder` (returned as is), or a ``--model`` value (shipped name, ``.safetensors``
            file, run folder, published name).
        batch_size: windows per forward pass (``None``: :data:`DEFAULT_BATCH_ONNX` or :data:`DEFAULT_BATCH_TORCH`).
        threads: ONNX Runtime intra-op threads (``0``: :func:`available_cores`; the indexer sets it per run).
        device: where a torch model runs (``cpu``, ``cuda``, ``cuda:1``).
        onnx: use exports (``None``: ``$MUSICSEARCH_ONNX``, default on).
        export_on_first_use: export a shipped model that has no export yet.

    Returns:
        The embedder.

    Raises:
        CheckpointError: the model cannot be loaded at all (as :func:`load_embedder`).
    """
    if isinstance(model, Embedder):
        return model
    torch_batch = DEFAULT_BATCH_TORCH if batch_size is None else batch_size
    if device != "cpu" or not (onnx_enabled() if onnx is None else onnx):
        return load_embedder(model, batch_size=torch_batch, device=device)
    from musicsearch.models.onnx import (
        EXPORT_FILE,
        SHIPPED_DIR,
        ExportedModel,
        StaleExportError,
        export_dir_for,
        weights_of,
    )

    spec = str(model)
    found = weights_of(spec)
    if found is None:  # a published checkpoint, or nothing there: torch loads it or says what is wrong
        return load_embedder(model, batch_size=torch_batch, device=device)
    weights, sha = found
    folder = export_dir_for(sha)
    source = str(Path(spec).expanduser().resolve()) if Path(spec).expanduser().exists() else spec
    onnx_batch = DEFAULT_BATCH_ONNX if batch_size is None else batch_size
    fallback: Embedder | None = None
    if not (folder / EXPORT_FILE).exists():
        if not (export_on_first_use and weights.parent == SHIPPED_DIR):
            return load_embedder(model, batch_size=torch_batch, device=device)
        fallback = load_embedder(model, batch_size=torch_batch, device=device)
        # the int8 export too: the query that follows this index run finds the float32 export and would
        # otherwise never make the int8 text tower it prefers
        if not write_first_export(fallback.model, sha, spec, int8=True):
            return fallback
    try:
        embedder = OnnxAudioEmbedder(
            ExportedModel.open(folder, weights_sha256=sha), source=source, batch_size=onnx_batch, threads=threads
        )
        embedder.session()  # a graph ONNX Runtime cannot load is found now, not in the middle of a run
    except StaleExportError as exc:
        log.warning("%s. Indexing with torch for now", exc)
        return fallback or load_embedder(model, batch_size=torch_batch, device=device)
    return embedder


def write_first_export(model: Any, sha: str, spec: str, *, int8: bool) -> bool:
    """Export a shipped model once into the export cache (:func:`~musicsearch.models.onnx.export_dir_for`): the
    float32 export and, with ``int8``, the int8 one beside it (the query path's text tower).

    Args:
        model: the loaded torch model.
        sha: the SHA-256 of its weights file.
        spec: the ``--model`` value it was loaded from (recorded in the export, named in messages).
        int8: also make the int8 export.

    Returns:
        Whether the float32 export was made. A failure is logged as a warning, never raised: the caller goes on
        with torch (a failed int8 export leaves the float32 one in use).
    """
    from musicsearch.models.onnx import export_dir_for, export_onnx

    folder = export_dir_for(sha)
    log.info("first use of model %s: exporting it to ONNX in %s (once; later runs need no torch)", spec, folder)
    try:
        export_onnx(model, folder, weights_sha256=sha, source=spec)
    except (MusicSearchError, OSError) as exc:
        log.warning("could not export model %s to ONNX in %s (%s); using torch", spec, folder, exc)
        return False
    if int8:
        try:
            export_onnx(model, export_dir_for(sha, int8=True), weights_sha256=sha, source=spec, int8=True)
        except (MusicSearchError, OSError) as exc:
            log.warning("could not make the int8 export of model %s (%s); texts use the float32 one", spec, exc)
    return True


def track_vector(window_embeddings: np.ndarray) -> np.ndarray:
    """The track vector: the mean of the raw window embeddings ``(n, D)``, L2-normalised, ``(D,)`` float32."""
    mean = np.asarray(window_embeddings, dtype=np.float64).mean(axis=0)
    return l2_normalize(mean[None, :], what="track embedding")[0]


def load_embedder(model: str | os.PathLike[str] | Embedder, *, batch_size: int = 16, device: str = "cpu") -> Embedder:
    """Load a model for indexing or querying.

    Args:
        model: an :class:`Embedder` (returned as is), or what ``--model`` takes: a ``.safetensors`` checkpoint, a
            training run folder, or a name :func:`musicsearch.models.loading.resolve_model` knows.
        batch_size: windows per forward pass.
        device: where the model runs (``cpu``, ``cuda``, ``cuda:1``); the checksum is the file's either way.

    Returns:
        The :class:`Embedder` (model in eval mode).

    Raises:
        CheckpointError: nothing loadable there (the message lists what is accepted).
    """
    if isinstance(model, Embedder):
        return model
    from musicsearch.models.loading import resolve_model

    resolved = resolve_model(model, device=device)
    spec = str(model)
    source = str(Path(spec).expanduser().resolve()) if Path(spec).expanduser().exists() else spec
    return Embedder(
        resolved.model, name=resolved.model.config.name, checksum=resolved.sha256, source=source, batch_size=batch_size
    )


def file_checksum(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (the content hash of incremental indexing)."""
    return sha256_file(path)
