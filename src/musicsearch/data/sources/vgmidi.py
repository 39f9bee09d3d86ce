"""VGMIDI, labelled part (Ferreira and Whitehead, ISMIR 2019): 204 piano MIDI phrases with human valence/arousal.

Layout expected under ``root``::

    labels.csv        columns id, series, console, game, piece, midi, valence, arousal; valence and arousal
                      in {-1, +1}; the midi column's ``labelled/phrases/NAME`` is ``phrases/NAME`` here
    phrases/*.mid     the piano phrases

VGMIDI states no licence, so it is never shipped: the adapter reads it from the root the user gives and renders
each MIDI file once, with the project's FluidSynth renderer (:mod:`musicsearch.data.synth.render`, a General
MIDI soundfont, full length plus a 1 s release tail, mono 16 kHz, loudness normalised), to
``<cache>/<stem>.flac`` (written atomically, skipped when present). The default cache is ``<root>/rendered`` if
that can be written, else ``~/.cache/musicsearch/vgmidi``. A MIDI file that cannot be read or renders silent is
left out with a warning (listed in ``info["excluded"]``).

Three single-label datasets (metric accuracy), with class names chosen to work as zero-shot text prompts:

- ``vgmidi-valence``: valence -1 -> ``sad``, +1 -> ``happy``;
- ``vgmidi-arousal``: arousal -1 -> ``calm``, +1 -> ``energetic``;
- ``vgmidi-quadrant``: (valence, arousal) (+,+) -> ``happy``, (+,-) -> ``peaceful``, (-,+) -> ``tense``,
  (-,-) -> ``sad``.

VGMIDI has no official split: a seeded split stratified by class (60/20/20, ``split_seed``) is made, or pass
``splits=`` (track id -> split). Track ids are the MIDI file stems (``NAME`` without ``.mid``): the ``id`` column
is not unique (two phrases of one piece share it; kept as ``metadata["vgmidi_id"]``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np

from musicsearch.data.manifest import Track
from musicsearch.data.sources.labels import (
    LabelledDataset,
    column_index,
    log_loaded,
    read_csv_rows,
    seeded_split,
    splits_from_mapping,
)
from musicsearch.data.sources.registry import DATASETS
from musicsearch.data.synth.render import (
    SAMPLE_RATE,
    FluidSynth,
    encode_flac,
    find_soundfont,
    master,
    write_bytes,
)
from musicsearch.errors import AudioError, ManifestError

logger = logging.getLogger(__name__)

VALENCE_NAMES: tuple[str, str] = ("sad", "happy")
"""Class names of ``vgmidi-valence``: index 0 is valence -1, index 1 is valence +1."""

AROUSAL_NAMES: tuple[str, str] = ("calm", "energetic")
"""Class names of ``vgmidi-arousal``: index 0 is arousal -1, index 1 is arousal +1."""

QUADRANT_NAMES: tuple[str, str, str, str] = ("happy", "peaceful", "tense", "sad")
"""Class names of ``vgmidi-quadrant``, in the order (+,+), (+,-), (-,+), (-,-) of (valence, arousal)."""

TAIL_SECONDS = 1.0
"""Audio rendered after the last MIDI event, so releases ring out."""

_COLUMNS = ("id", "series", "console", "game", "piece", "midi", "valence", "arousal")
_EXPECTED = "VGMIDI's labels.csv (columns id, series, console, game, piece, midi, valence, arousal)"


@dataclass(frozen=True)
class VGMIDIPiece:
    """One labelled row of ``labels.csv``.

    Attributes:
        track_id: the MIDI file's stem (unique; the ``id`` column is not).
        midi_path: the MIDI file (``root/phrases/NAME``).
        valence: -1 or +1.
        arousal: -1 or +1.
        metadata: the ``id`` column (as ``vgmidi_id``), series, console, game and piece.
    """

    track_id: str
    midi_path: Path
    valence: int
    arousal: int
    metadata: dict[str, str]


def read_vgmidi_labels(root: str | os.PathLike[str]) -> list[VGMIDIPiece]:
    """Read ``root/labels.csv`` (rows in file order).

    Args:
        root: the VGMIDI folder holding ``labels.csv`` and ``phrases/``.

    Returns:
        One :class:`VGMIDIPiece` per row.

    Raises:
        ManifestError: naming ``labels.csv`` if it is missing, lacks a column, has a value outside {-1, +1},
            names one MIDI file twice or has no rows.
    """
    base = Path(root)
    path = base / "labels.csv"
    header, rows = read_csv_rows(path, dataset="vgmidi", expected=f"{_EXPECTED} at {path}")
    idx = {c: column_index(header, c, path=path, dataset="vgmidi") for c in _COLUMNS}
    pieces: list[VGMIDIPiece] = []
    seen: set[str] = set()
    for r, row in enumerate(rows):
        where = f"{path}:{r + 2}"
        if len(row) < len(header):
            raise ManifestError(f"vgmidi: {where} has {len(row)} cells, the header has {len(header)}")
        try:
            valence, arousal = int(float(row[idx["valence"]])), int(float(row[idx["arousal"]]))
        except ValueError:
            raise ManifestError(f"vgmidi: {where}: valence and arousal must be -1 or 1") from None
        if valence not in (-1, 1) or arousal not in (-1, 1):
            raise ManifestError(f"vgmidi: {where}: valence and arousal must be -1 or 1, got {valence}, {arousal}")
        name = row[idx["midi"]].replace("\\", "/").rsplit("/", 1)[-1]
        tid = Path(name).stem
        if not tid or tid in seen:
            raise ManifestError(f"vgmidi: {where}: the midi column {name!r} is empty or names a file twice")
        seen.add(tid)
        pieces.append(
            VGMIDIPiece(
                track_id=tid,
                midi_path=base / "phrases" / name,
                valence=valence,
                arousal=arousal,
                metadata={
                    "vgmidi_id": row[idx["id"]],
                    **{c: row[idx[c]] for c in ("series", "console", "game", "piece")},
                },
            )
        )
    if not pieces:
        raise ManifestError(f"vgmidi: {path} has no rows; expected {_EXPECTED}")
    return pieces


def default_cache_dir(root: str | os.PathLike[str]) -> Path:
    """``<root>/rendered`` if it exists and is writable (or can be made in a writable root), else
    ``~/.cache/musicsearch/vgmidi``."""
    base = Path(root)
    cand = base / "rendered"
    if (cand.is_dir() and os.access(cand, os.W_OK)) or (not cand.exists() and os.access(base, os.W_OK)):
        return cand
    return Path.home() / ".cache" / "musicsearch" / "vgmidi"


def render_midi_file(
    synth: FluidSynth, midi_path: str | os.PathLike[str], out_path: str | os.PathLike[str], *, max_seconds: float | None
) -> None:
    """Render one MIDI file to mono 16 kHz 16-bit FLAC at ``out_path`` (atomic write).

    Args:
        synth: the renderer.
        midi_path: the ``.mid`` file.
        out_path: the ``.flac`` to write.
        max_seconds: cut the render to this many seconds (``None``: the whole file plus :data:`TAIL_SECONDS`).

    Raises:
        AudioError: naming the MIDI file if it cannot be read, is empty or renders silent.
    """
    try:
        midi = mido.MidiFile(str(midi_path))
        length = float(midi.length)
    except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise AudioError(f"vgmidi: cannot read MIDI file {midi_path} ({type(exc).__name__}: {exc})") from None
    seconds = length + TAIL_SECONDS
    if max_seconds is not None:
        seconds = min(seconds, float(max_seconds))
    if length <= 0 or seconds <= 0:
        raise AudioError(f"vgmidi: MIDI file {midi_path} has no events to render")
    try:
        audio = master(synth.render(midi, seconds), in_rate=synth.sample_rate, out_rate=SAMPLE_RATE)
    except AudioError as exc:
        raise AudioError(f"vgmidi: {midi_path}: {exc}") from None
    write_bytes(out_path, encode_flac(audio, SAMPLE_RATE))


def _load(
    name: str,
    label_names: tuple[str, ...],
    label_of: dict[tuple[int, int], int],
    root: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None,
    soundfont: str | os.PathLike[str] | None,
    max_seconds: float | None,
    splits: Mapping[str, str] | None,
    split_seed: int,
    check_audio: bool,
) -> LabelledDataset:
    base = Path(root)
    pieces = read_vgmidi_labels(base)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir(base)
    out_of = {p.track_id: cache / f"{p.track_id}.flac" for p in pieces}
    excluded: dict[str, str] = {}
    if check_audio:
        todo = [p for p in pieces if not out_of[p.track_id].is_file()]
        if todo:
            logger.info("vgmidi: rendering %d MIDI file(s) to %s", len(todo), cache)
            with FluidSynth(find_soundfont(soundfont)) as synth:
                for p in todo:
                    if not p.midi_path.is_file():
                        excluded[p.track_id] = f"missing MIDI file {p.midi_path}"
                    else:
                        try:
                            render_midi_file(synth, p.midi_path, out_of[p.track_id], max_seconds=max_seconds)
                        except AudioError as exc:
                            excluded[p.track_id] = str(exc)
            for tid, why in excluded.items():
                logger.warning("vgmidi: leaving out track %s: %s", tid, why)
        pieces = [p for p in pieces if p.track_id not in excluded]
        if not pieces:
            raise ManifestError(f"vgmidi: no MIDI file of {base / 'labels.csv'} could be rendered (expected phrases/)")
    labels = np.array([label_of[(p.valence, p.arousal)] for p in pieces], dtype=np.int64)
    ids = [p.track_id for p in pieces]
    if splits is None:
        assigned = seeded_split(ids, strata=labels.tolist(), seed=split_seed)
        split_note = f"seeded stratified 60/20/20 (seed {split_seed}); VGMIDI has no official split"
    else:
        assigned = splits_from_mapping(ids, splits, dataset=name)
        split_note = "given"
    tracks = [
        Track(
            track_id=p.track_id,
            audio_path=str(out_of[p.track_id]),
            tags=(label_names[int(lab)],),
            split=assigned[p.track_id],
            metadata={**p.metadata, "midi": str(p.midi_path), "valence": p.valence, "arousal": p.arousal},
        )
        for p, lab in zip(pieces, labels)
    ]
    return log_loaded(
        LabelledDataset(
            name=name,
            task="multiclass",
            label_names=label_names,
            tracks=tuple(tracks),
            labels=labels,
            metric="accuracy",
            root=str(base),
            info={
                "split": split_note,
                "audio": f"rendered from MIDI with FluidSynth to {cache}",
                "excluded": excluded,
            },
        )
    )


@DATASETS.register("vgmidi-valence")
def load_vgmidi_valence(
    root: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    soundfont: str | os.PathLike[str] | None = None,
    max_seconds: float | None = None,
    splits: Mapping[str, str] | None = None,
    split_seed: int = 0,
    check_audio: bool = True,
) -> LabelledDataset:
    """VGMIDI valence as two classes, ``sad`` (-1) and ``happy`` (+1); metric accuracy.

    Args:
        root: folder holding ``labels.csv`` and ``phrases/``.
        cache_dir: where the rendered FLAC files go; default :func:`default_cache_dir`.
        soundfont: a ``.sf2`` file; default :func:`~musicsearch.data.synth.render.find_soundfont`.
        max_seconds: cut each render to this length (default: the whole piece).
        splits: track id -> ``train``/``valid``/``test``; default a seeded split stratified by class.
        split_seed: seed of the default split.
        check_audio: render the missing FLAC files and leave out unrenderable ones; ``False`` reads the labels
            alone (audio paths point into the cache whether or not the files exist).

    Raises:
        ManifestError: naming ``labels.csv`` if it is missing or malformed, or if nothing could be rendered.
        MusicSearchError: if rendering is needed and no soundfont / libfluidsynth is found.
    """
    return _load(
        "vgmidi-valence",
        VALENCE_NAMES,
        {(-1, -1): 0, (-1, 1): 0, (1, -1): 1, (1, 1): 1},
        root,
        cache_dir=cache_dir,
        soundfont=soundfont,
        max_seconds=max_seconds,
        splits=splits,
        split_seed=split_seed,
        check_audio=check_audio,
    )


@DATASETS.register("vgmidi-arousal")
def load_vgmidi_arousal(
    root: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    soundfont: str | os.PathLike[str] | None = None,
    max_seconds: float | None = None,
    splits: Mapping[str, str] | None = None,
    split_seed: int = 0,
    check_audio: bool = True,
) -> LabelledDataset:
    """VGMIDI arousal as two classes, ``calm`` (-1) and ``energetic`` (+1); options as :func:`load_vgmidi_valence`."""
    return _load(
        "vgmidi-arousal",
        AROUSAL_NAMES,
        {(-1, -1): 0, (1, -1): 0, (-1, 1): 1, (1, 1): 1},
        root,
        cache_dir=cache_dir,
        soundfont=soundfont,
        max_seconds=max_seconds,
        splits=splits,
        split_seed=split_seed,
        check_audio=check_audio,
    )


@DATASETS.register("vgmidi-quadrant")
def load_vgmidi_quadrant(
    root: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    soundfont: str | os.PathLike[str] | None = None,
    max_seconds: float | None = None,
    splits: Mapping[str, str] | None = None,
    split_seed: int = 0,
    check_audio: bool = True,
) -> LabelledDataset:
    """VGMIDI (valence, arousal) quadrants as four classes: (+,+) ``happy``, (+,-) ``peaceful``, (-,+) ``tense``,
    (-,-) ``sad``; options as :func:`load_vgmidi_valence`."""
    return _load(
        "vgmidi-quadrant",
        QUADRANT_NAMES,
        {(1, 1): 0, (1, -1): 1, (-1, 1): 2, (-1, -1): 3},
        root,
        cache_dir=cache_dir,
        soundfont=soundfont,
        max_seconds=max_seconds,
        splits=splits,
        split_seed=split_seed,
        check_audio=check_audio,
    )
