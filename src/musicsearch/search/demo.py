"""The demo collection and its example queries (``musicsearch demo``, ``make demo``).

The collection is made here, offline: a procedural corpus (:mod:`musicsearch.data.synth`, a seed the default model
never trained on) plus the eight real recordings the package ships. It is indexed with the default model, and a
few queries show the three kinds the system serves: a known tag, an unseen word, a sentence; plus negative terms
and query by example.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from musicsearch.assets import librosa_music_files
from musicsearch.data.manifest import Track, read_manifest, write_manifest

log = logging.getLogger(__name__)

#: Seed of the demo's procedural corpus (the default model was trained on seed 0).
DEMO_SEED = 20261126


@dataclass(frozen=True)
class DemoQuery:
    """One example query: what it shows, the text and/or example."""

    kind: str
    query: str | None = None
    like: str | None = None


#: The example queries, in the order they are shown.
DEMO_QUERIES: tuple[DemoQuery, ...] = (
    DemoQuery("known tag", "waltz"),
    DemoQuery("known tags", "slow, sad, piano"),
    DemoQuery("unseen word (a held-out synonym of 'fast')", "quick"),
    DemoQuery("unseen word (held out for 'violin')", "fiddle"),
    DemoQuery("sentence", "a calm, dreamy ambient piece for a rainy evening"),
    DemoQuery("sentence", "an energetic rock song with distorted electric guitar and loud drums"),
    DemoQuery("negative terms", "upbeat dance music, no drums"),
    DemoQuery("by example (the Brahms recording)", like="real/brahms-hungarian-dance-5-string-orchestra"),
    DemoQuery("text plus example", "solo piano", like="real/lena-orsa-pistachio-ice-cream-ragtime"),
)


def build_demo_collection(
    root: str | os.PathLike[str],
    *,
    n: int = 200,
    seed: int = DEMO_SEED,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Make (or complete) the demo collection in ``root`` and return its manifest.

    ``root/corpus`` holds ``n`` procedural clips; ``root/real`` the shipped recordings with their licence files;
    ``root/manifest.jsonl`` lists both (the real recordings with their titles and no tags).
    """
    from musicsearch.data.synth.corpus import make_corpus

    out = Path(root)
    corpus = out / "corpus"
    make_corpus(corpus, n, seed=seed, workers=workers, progress=progress)
    tracks = list(read_manifest(corpus / "manifest.jsonl"))
    real = out / "real"
    real.mkdir(parents=True, exist_ok=True)
    for src in librosa_music_files():
        for f in (src, src.with_suffix(".txt")):
            dest = real / f.name
            if f.is_file() and not dest.is_file():
                shutil.copyfile(f, dest)
        tracks.append(
            Track(
                f"real/{src.stem}",
                str(real / src.name),
                metadata={"title": src.stem.replace("-", " "), "folder": "real", "licence": f"real/{src.stem}.txt"},
            )
        )
    manifest = out / "manifest.jsonl"
    write_manifest(manifest, tracks)
    return manifest
