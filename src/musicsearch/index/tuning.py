"""Typical queries of a store's model, for tuning its approximate vector index on real query embeddings.

An IVF index is tuned (:func:`~musicsearch.index.backends.faiss_backend.tune_nprobe`) by measuring recall against
exact search. Stored vectors make easy queries (each sits in its own cell); text queries sit away from the audio
vectors (the modality gap) and need more cells. So the indexer gives the backends the text embeddings of what
users type: the model's own tag vocabulary, the procedural corpus's tag vocabulary (the words the shipped models
were trained on) and caption-like descriptions (:data:`CAPTION_QUERIES`). A classification model, which takes
only its tags, gets its tags alone.

The texts are embedded only when a backend trains its index (a store passing the IVF threshold or growing past
its retraining point), once per indexing run. A merge of shard stores, which has no embedder at hand, loads the
store's own model for them (:func:`store_tuning_queries`), again only if an index trains.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from musicsearch.errors import MusicSearchError
from musicsearch.index.embedder import Embedder

if TYPE_CHECKING:
    from musicsearch.index.store import Store

__all__ = ["CAPTION_QUERIES", "MAX_TUNING_TEXTS", "store_tuning_queries", "tuning_queries", "tuning_texts"]

log = logging.getLogger(__name__)

#: Most texts embedded for tuning.
MAX_TUNING_TEXTS = 1024

#: Caption-like descriptions, as users type them (genre, instruments, mood, tempo, voice, use, negation).
CAPTION_QUERIES: tuple[str, ...] = (
    "calm piano", "a calm piano piece for a rainy evening", "an energetic rock song with electric guitars",
    "female vocals, no drums", "ambient drone", "fast techno", "sad strings", "jazz trio with upright bass",
    "hip hop beat", "a lullaby", "heavy metal without vocals", "acoustic folk song with harmonica",
    "orchestral film score", "reggae", "lo-fi beats for studying", "a choir singing in a church", "funky bass line",
    "latin percussion", "dreamy synth pop", "country ballad", "epic cinematic drums", "solo trumpet",
    "an upbeat dance track", "relaxing background music", "a sad song with piano", "music for a video game",
    "chiptune with square waves", "a slow waltz for strings", "march with brass band", "medieval music with lute",
    "dark industrial electronic music", "happy ukulele song", "tense suspense music", "a string quartet",
    "classical guitar", "big band swing", "blues guitar solo", "a fast drum and bass track", "soft ambient pads",
    "an 80s synthwave track", "a celtic jig with fiddle", "a piano ragtime", "meditative flute music",
    "aggressive punk rock", "smooth saxophone jazz", "a children's song", "epic orchestral battle music",
    "minimal techno with a four on the floor kick", "a sad violin melody", "music box melody",
    "a bright major key pop song", "a slow minor key ballad", "electronic music without drums", "organ music",
    "a harp arpeggio", "party music", "instrumental", "a song with a male singer", "spooky halloween music",
    "peaceful nature music",
)  # fmt: skip


def _model_config(embedder: Embedder) -> object | None:
    """The torch model's config, or ``None`` when the embedder cannot give one."""
    try:
        return embedder.model.config
    except Exception as exc:  # an embedder without a torch model behind it: captions and corpus tags only
        log.debug("no model config for tuning texts: %s", exc)
        return None


def tuning_texts(embedder: Embedder) -> list[str]:
    """The texts the index is tuned on for ``embedder``'s model: its tag vocabulary, then the procedural
    corpus's tags, then :data:`CAPTION_QUERIES`, without repeats, at most :data:`MAX_TUNING_TEXTS` (a
    classification model: its tags only).

    Args:
        embedder: the store's model (its config is read through ``embedder.model``, which an export-backed
            embedder loads on first use).

    Returns:
        The texts, in that order.
    """
    from musicsearch.data.synth.tags import build_vocabulary
    from musicsearch.losses.registry import objective

    config = _model_config(embedder)
    tags = [str(t) for t in getattr(config, "tags", ())]
    if config is not None and not objective(str(getattr(config, "objective", ""))).text_tower:
        return tags[:MAX_TUNING_TEXTS]  # a classifier's text is one of its tags
    return list(dict.fromkeys([*tags, *build_vocabulary(), *CAPTION_QUERIES]))[:MAX_TUNING_TEXTS]


def tuning_queries(embedder: Embedder) -> Callable[[], np.ndarray]:
    """A provider of ``(Q, D)`` unit float32 text queries (:func:`tuning_texts` embedded by ``embedder``) for
    :meth:`~musicsearch.index.backends.base.VectorBackend.set_tuning_queries`: embeds on its first call only,
    and returns the same array after.
    """
    cache: list[np.ndarray] = []

    def provide() -> np.ndarray:
        if not cache:
            texts = tuning_texts(embedder)
            cache.append(embedder.embed_texts(texts) if texts else np.zeros((0, embedder.dim), np.float32))
            log.info("tuning the vector index on %d texts of the model", len(texts))
        return cache[0]

    return provide


def store_tuning_queries(store: Store) -> Callable[[], np.ndarray]:
    """A provider like :func:`tuning_queries` for a store that has no embedder at hand (a shard of a merge): on its
    first call it loads the store's own model (:meth:`~musicsearch.index.store.Store.load_embedder`, which also
    refuses a model whose weights or window plan are not the store's) and embeds :func:`tuning_texts`; later calls
    return the same array.

    Args:
        store: an open store built with the model whose texts are wanted.

    Returns:
        The provider. It raises :class:`~musicsearch.errors.MusicSearchError` when the model cannot be loaded or
        is not the store's; a backend then keeps its untuned default and logs why.
    """
    inner: list[Callable[[], np.ndarray]] = []

    def provide() -> np.ndarray:
        if not inner:
            try:
                embedder = store.load_embedder()
            except Exception as exc:  # any loading failure only costs the tuning, never the merge
                raise MusicSearchError(
                    f"the store's model {store.settings.model_source!r} could not be loaded to embed its typical "
                    f"queries ({exc}); index into the store again with that model available to tune it"
                ) from exc
            inner.append(tuning_queries(embedder))
        return inner[0]()

    return provide
