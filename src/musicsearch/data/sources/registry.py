"""The registry of downstream datasets: ``load_dataset("gtzan", "/data/gtzan")``.

Names: ``mtat``, ``mtg-top50``, ``mtg-genre``, ``mtg-instrument``, ``mtg-moodtheme``, ``gtzan``, ``fma-small``,
``kvt``, ``emotify``, ``vgmidi-valence``, ``vgmidi-arousal``, ``vgmidi-quadrant``, and ``manifest`` (any JSONL
manifest with tags, as a multi-label dataset over its vocabulary). Each loader takes the dataset root (for
``manifest``, the manifest file) and keyword options documented on the adapter function, and returns a
:class:`~musicsearch.data.sources.labels.LabelledDataset`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from musicsearch.data.manifest import read_manifest, tag_vocabulary
from musicsearch.data.sources.labels import LabelledDataset, log_loaded, multi_hot
from musicsearch.errors import ManifestError
from musicsearch.registry import Registry

DatasetLoader = Callable[..., LabelledDataset]
"""A dataset adapter: ``loader(root, **options) -> LabelledDataset``."""

DATASETS: Registry[DatasetLoader] = Registry("dataset")

_ADAPTER_MODULES = ("mtat", "jamendo", "gtzan", "fma", "kvt", "emotify", "vgmidi")


def _import_adapters() -> None:
    for mod in _ADAPTER_MODULES:
        importlib.import_module(f"musicsearch.data.sources.{mod}")


def dataset_names() -> list[str]:
    """All registered dataset names, sorted."""
    _import_adapters()
    return DATASETS.names()


def load_dataset(name: str, root: str | os.PathLike[str], **options: Any) -> LabelledDataset:
    """Load a downstream dataset by registry name from where its owners' distribution was unpacked.

    Args:
        name: a registry name (see :func:`dataset_names`).
        root: the dataset folder (for ``manifest``: the manifest file).
        **options: adapter options (e.g. ``audio_dir=``, ``check_audio=False``); see each adapter.

    Returns:
        The :class:`LabelledDataset`.

    Raises:
        ConfigError: for an unknown name (the message lists the known ones).
        ManifestError: for a missing or malformed file (the message names it and the expected layout).
    """
    _import_adapters()
    return DATASETS.get(name)(root, **options)


@DATASETS.register("manifest")
def load_manifest_dataset(
    root: str | os.PathLike[str],
    *,
    vocabulary: Sequence[str] | None = None,
    min_count: int = 1,
    name: str = "manifest",
) -> LabelledDataset:
    """Any JSONL manifest with tags, as a multi-label dataset over its tag vocabulary (metric ROC-AUC).

    Args:
        root: the manifest file (``musicsearch.data.manifest`` format); splits are taken from it as they are.
        vocabulary: the label columns (e.g. the ECALS 50 tags); default every tag of the manifest used by at
            least ``min_count`` tracks, most frequent first (ties alphabetical).
        min_count: minimum number of tracks of a tag in the default vocabulary.
        name: dataset name used in reports.

    Raises:
        ManifestError: if the manifest is missing or malformed, or no tag is left for the vocabulary.
    """
    path = Path(root)
    tracks = read_manifest(path)
    if vocabulary is None:
        counts: dict[str, int] = {}
        for t in tracks:
            for tag in set(t.tags):
                counts[tag] = counts.get(tag, 0) + 1
        labels = [tag for tag in tag_vocabulary(tracks) if counts[tag] >= min_count]
    else:
        labels = list(dict.fromkeys(vocabulary))
    if not labels:
        raise ManifestError(
            f"manifest {path}: no tags to evaluate (vocabulary empty after min_count={min_count}); "
            "give tracks 'tags' or pass vocabulary="
        )
    return log_loaded(
        LabelledDataset(
            name=name,
            task="multilabel",
            label_names=tuple(labels),
            tracks=tuple(tracks),
            labels=multi_hot([t.tags for t in tracks], labels),
            metric="roc_auc",
            root=str(path),
            info={"vocabulary": "given" if vocabulary is not None else f"manifest tags used >= {min_count} times"},
        )
    )
