"""The library face: load a model, embed audio and text, index a folder, search a store.

::

    import musicsearch

    model = musicsearch.load_model()                         # the shipped default model
    song = model.embed_audio("~/Music/song.flac")            # song.track (D,), song.windows (n, D), song.starts
    texts = model.embed_text(["calm piano", "drum and bass"])  # (2, D)
    musicsearch.index("~/Music", "~/music.store")
    results = musicsearch.search("~/music.store", "calm piano", k=5)

Nothing here is a second implementation: a model is loaded by :func:`musicsearch.models.loading.resolve_model`
(through :func:`musicsearch.index.embedder.load_embedder`), audio is decoded and cut into windows by the indexer's
own rule (:func:`musicsearch.index.embedder.decode_track`, :class:`~musicsearch.index.embedder.WindowPlan`), and
:func:`search` and :func:`index` call :func:`musicsearch.search.api.search` and
:func:`musicsearch.index.indexer.index_collection`. So a file embedded here gives the vectors the indexer stores
for it.

``musicsearch.search`` and ``musicsearch.index`` are also the names of subpackages; the package makes those two
callable (see :mod:`musicsearch`), so ``musicsearch.search(...)`` is :func:`search` here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from musicsearch.audio.chunking import evenly_spaced_windows, rms_db
from musicsearch.audio.io import resample
from musicsearch.errors import AudioError, MusicSearchError
from musicsearch.index.embedder import (
    DEFAULT_MAX_WINDOWS,
    DecodedTrack,
    Embedder,
    SilentAudioError,
    WindowPlan,
    load_embedder,
)
from musicsearch.models.loading import DEFAULT_MODEL

if TYPE_CHECKING:
    from musicsearch.index.indexer import IndexReport
    from musicsearch.search.api import Result

__all__ = ["AudioEmbedding", "Model", "index", "load_model", "search"]


@dataclass(frozen=True)
class AudioEmbedding:
    """One recording in the model's joint space, as the indexer stores it.

    Attributes:
        track: ``(D,)`` float32 unit vector: the mean of the raw window embeddings, L2-normalised.
        windows: ``(n, D)`` float32 unit vectors, one per window.
        starts: ``(n,)`` float64 window start times in seconds from the start of the audio.
        duration: seconds of audio (at the model's 16 kHz).
    """

    track: np.ndarray
    windows: np.ndarray
    starts: np.ndarray
    duration: float


class Model:
    """A loaded text-to-music model: audio and texts to unit vectors of one joint space.

    Made by :func:`load_model`. Texts and recordings compare by the dot product of their vectors (cosine
    similarity).

    Args:
        embedder: the loaded model with its identity (:class:`~musicsearch.index.embedder.Embedder`).
    """

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    @property
    def name(self) -> str:
        """The model's name (its config name, as stores record it)."""
        return self.embedder.name

    @property
    def dim(self) -> int:
        """``D``, the size of the joint space."""
        return self.embedder.dim

    @property
    def window_seconds(self) -> float:
        """Length of one input window in seconds."""
        return self.embedder.plan().window_seconds

    def embed_audio(
        self,
        path_or_array: str | os.PathLike[str] | np.ndarray,
        sample_rate: int | None = None,
        *,
        max_windows: int = DEFAULT_MAX_WINDOWS,
        hop_seconds: float | None = None,
    ) -> AudioEmbedding:
        """Embed a recording with the indexer's window and track rules.

        The audio is cut into at most ``max_windows`` evenly spaced windows of :attr:`window_seconds`, one per
        ``hop_seconds`` (default: one window length); each is embedded; the track vector is the mean of the raw
        window embeddings, L2-normalised (:mod:`musicsearch.index.embedder`).

        Args:
            path_or_array: an audio file (any format ffmpeg or libsndfile reads; ``~`` expanded), or a ``(T,)``
                mono float waveform.
            sample_rate: the array's rate in Hz (required for an array, resampled to 16 kHz); not given for a
                file, whose own rate is read from it.
            max_windows: windows at most (the indexer's default, 16).
            hop_seconds: largest distance between window starts (``None``: one window length).

        Returns:
            An :class:`AudioEmbedding`.

        Raises:
            AudioError: a missing, empty or undecodable file, or an empty array.
            SilentAudioError: audio below -60 dB RMS (the indexer does not index it either).
            MusicSearchError: an array that is not 1-D, or a missing or needless ``sample_rate``.
        """
        plan = self.embedder.plan(max_windows=max_windows, hop_seconds=hop_seconds)
        if isinstance(path_or_array, np.ndarray):
            decoded = _decode_array(path_or_array, sample_rate, plan)
            track, windows = self.embedder.embed_decoded(decoded)
        else:
            if sample_rate is not None:
                raise MusicSearchError(
                    f"sample_rate={sample_rate} is for arrays; a file's rate is read from the file "
                    f"({path_or_array}): leave sample_rate out"
                )
            track, windows, decoded = self.embedder.embed_file(Path(path_or_array).expanduser(), plan)
        return AudioEmbedding(track=track, windows=windows, starts=decoded.starts, duration=decoded.duration)

    def embed_text(self, texts: str | Sequence[str]) -> np.ndarray:
        """Embed texts: tags (``"jazz"``), tag lists (``"jazz, piano"``) or sentences.

        Args:
            texts: ``n`` texts (one string counts as one text).

        Returns:
            ``(n, D)`` float32 unit vectors.

        Raises:
            MusicSearchError: an empty list or a text that is not a string.
            ConfigError: a classification model and a text outside its tag vocabulary.
        """
        items = [texts] if isinstance(texts, str) else list(texts)
        if not items:
            raise MusicSearchError("embed_text got no texts; give a string or a list of strings")
        bad = [t for t in items if not isinstance(t, str)]
        if bad:
            raise MusicSearchError(f"embed_text takes strings, got {type(bad[0]).__name__} {bad[0]!r}")
        return self.embedder.embed_texts(items)

    def __repr__(self) -> str:
        return f"Model(name={self.name!r}, dim={self.dim}, source={self.embedder.source!r})"


def _decode_array(wave: np.ndarray, sample_rate: int | None, plan: WindowPlan) -> DecodedTrack:
    """A waveform in memory -> the plan's windows, as :func:`~musicsearch.index.embedder.decode_track` cuts a file."""
    if sample_rate is None:
        raise MusicSearchError("an array needs its sample_rate (Hz), e.g. embed_audio(wave, sample_rate=44100)")
    if int(sample_rate) <= 0:
        raise MusicSearchError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
    if wave.ndim != 1:
        raise MusicSearchError(
            f"an audio array must be a (T,) mono waveform, got shape {wave.shape}; average the channels first"
        )
    if wave.size == 0:
        raise AudioError("the audio array holds no samples")
    x = resample(wave, int(sample_rate), plan.sample_rate)  # (T',) float32 at 16 kHz
    level = rms_db(x)
    if level < plan.silence_db:
        raise SilentAudioError(f"silent: RMS level {level:.1f} dB is below {plan.silence_db:g} dB")
    windows, starts = evenly_spaced_windows(
        x, plan.n_windows(x.shape[0]), plan.window_samples, sample_rate=plan.sample_rate
    )  # (n, W), (n,)
    return DecodedTrack(windows, starts, x.shape[0] / plan.sample_rate, level)


def load_model(
    name_or_path: str | os.PathLike[str] = DEFAULT_MODEL, *, device: str = "cpu", batch_size: int = 16
) -> Model:
    """Load a model by name or path.

    Args:
        name_or_path: a shipped model's name (``default``), a published checkpoint's name
            (``ttmr/contrastive-bert-stochastic``, see docs/pretrained.md), a ``.safetensors`` file or a training
            run folder (``musicsearch train --out DIR``).
        device: where the model runs (``cpu``, ``cuda``, ``cuda:1``).
        batch_size: audio windows per forward pass.

    Returns:
        The :class:`Model` (in eval mode: the same input always gives the same vectors).

    Raises:
        CheckpointError: nothing loadable there (the message lists what is accepted).
    """
    return Model(load_embedder(name_or_path, batch_size=batch_size, device=device))


def search(
    store: str | os.PathLike[str],
    query: str | None = None,
    k: int = 10,
    *,
    like: int | str | None = None,
    filters: Any = None,
    model: Model | str | os.PathLike[str] | None = None,
    text_weight: float = 0.5,
    negative_weight: float = 1.0,
) -> list[Result]:
    """Search a store by text, by example, or both: :func:`musicsearch.search.api.search`.

    Args:
        store: a store directory (``~`` expanded).
        query: tags or a sentence, negative terms allowed (``"calm piano, no vocals"``).
        k: results wanted.
        like: an example: an indexed track (integer id or track id) or an audio file.
        filters: metadata filter, e.g. ``["year>=1960", "tag=jazz"]`` (see docs/search.md).
        model: the store's own model by default; a :class:`Model` or name must be that same model.
        text_weight: weight of the text when ``query`` and ``like`` are both given.
        negative_weight: penalty weight of negative terms.

    Returns:
        :class:`~musicsearch.search.api.Result` rows, best first (``rank``, ``relevance``, ``track_id``, ...).

    Raises:
        MusicSearchError: bad input, a path that is not a store, or another model than the store's.
    """
    from musicsearch.search.api import search as api_search

    chosen = model.embedder if isinstance(model, Model) else model
    return api_search(
        store,
        query,
        like=like,
        k=k,
        filters=filters,
        model=chosen,
        text_weight=text_weight,
        negative_weight=negative_weight,
    )


def index(
    folder: str | os.PathLike[str],
    store: str | os.PathLike[str],
    *,
    model: Model | str | os.PathLike[str] | None = None,
    progress: bool = False,
    **options: Any,
) -> IndexReport:
    """Index (or update) a store from a folder of audio files or a manifest:
    :func:`musicsearch.index.indexer.index_collection`, as ``musicsearch index`` runs it.

    Args:
        folder: a folder of audio files, or a JSONL manifest (``~`` expanded).
        store: the store directory, created when missing (``~`` expanded).
        model: the model of a new store (a :class:`Model`, name or path); an existing store keeps its own.
        progress: show a progress bar on stderr.
        **options: any other keyword of :func:`~musicsearch.index.indexer.index_collection` (``backend``,
            ``workers``, ``max_windows``, ``prune``, ...).

    Returns:
        The run's :class:`~musicsearch.index.indexer.IndexReport` (added, updated, unchanged, removed, failed).

    Raises:
        MusicSearchError: a missing source, an unknown option, or another model than an existing store's.
    """
    import inspect

    from musicsearch.index.indexer import index_collection

    known = set(inspect.signature(index_collection).parameters) - {"source", "store", "model", "progress"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise MusicSearchError(f"index() has no option {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    chosen = model.embedder if isinstance(model, Model) else model
    return index_collection(folder, store, model=chosen, progress=progress, **options)
