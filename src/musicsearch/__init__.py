"""musicsearch: universal text-to-music retrieval.

One model, one joint embedding space, three kinds of query: a known tag, an unseen tag, a sentence.
After Doh, Won, Choi and Nam, "Toward Universal Text-to-Music Retrieval" (ICASSP 2023).

The library face (:mod:`musicsearch.library`)::

    import musicsearch

    model = musicsearch.load_model()                  # "default", a published name, a file or a run folder
    song = model.embed_audio("song.flac")             # song.track (D,), song.windows (n, D), song.starts (n,)
    texts = model.embed_text(["calm piano"])          # (1, D) float32 unit vectors
    musicsearch.index("~/Music", "~/music.store")
    for r in musicsearch.search("~/music.store", "calm piano", k=5):
        print(r.rank, r.relevance, r.track_id)

Importing the package is cheap: heavy modules (torch models, indexes, the web service) load on first use.
``musicsearch.search`` and ``musicsearch.index`` are the subpackages of those names, made callable here: calling
one runs :func:`musicsearch.library.search` / :func:`musicsearch.library.index` (their ``__init__`` files are
empty, so importing them here costs nothing).
"""

from __future__ import annotations

import importlib
import types
from typing import Any

from musicsearch.errors import MusicSearchError

__version__ = "0.1.0"

#: Names of :mod:`musicsearch.library` offered here, imported on first use.
_LIBRARY = ("AudioEmbedding", "Model", "load_model")

__all__ = ["MusicSearchError", "__version__", *_LIBRARY, "index", "search"]


class _CallablePackage(types.ModuleType):
    """A subpackage that is also the library function of its name (``musicsearch.search(...)``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        library = importlib.import_module("musicsearch.library")
        return getattr(library, self.__name__.rpartition(".")[2])(*args, **kwargs)


for _name in ("search", "index"):
    importlib.import_module(f"musicsearch.{_name}").__class__ = _CallablePackage


def __getattr__(name: str) -> Any:
    if name in _LIBRARY:
        return getattr(importlib.import_module("musicsearch.library"), name)
    raise AttributeError(f"module 'musicsearch' has no attribute {name!r}")
