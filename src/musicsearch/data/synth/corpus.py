"""Make a labelled corpus: compose, render and describe ``n`` clips, in parallel, deterministically, resumably.

Layout of a corpus folder::

    audio/<id>.flac     16 kHz mono 16-bit FLAC
    midi/<id>.mid       the MIDI file the audio was rendered from
    records/<id>.json   one finished clip (its manifest line and a configuration key; used to resume)
    manifest.jsonl      the project's manifest (musicsearch.data.manifest.Track per line)
    splits.json         track ids of train / valid / test
    stats.json          tags per clip, tag frequencies per category, styles, tempos
    corpus.json         vocabulary with categories, held-out synonyms, generator version, seed, soundfont

Clip ``i`` is a pure function of ``(seed, i)``, the clip length and the soundfont: its music, tags, captions and
split come from generators seeded with ``(seed, i, stream)``, so the bytes do not depend on the number of workers
or on which clips were made before.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import io
import json
import logging
import multiprocessing as mp
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from musicsearch.data.manifest import Track, track_from_json, write_manifest
from musicsearch.data.synth.captions import (
    DYNAMIC_PHRASES,
    RHYTHM_PHRASES,
    STYLE_NOUNS,
    TEMPLATES,
    TEMPO_WORDS,
    CaptionFacts,
    heldout_hits,
    sentences,
    tag_caption,
)
from musicsearch.data.synth.compose import Composition, compose_clip
from musicsearch.data.synth.instruments import DRUM_CHANNEL, HAND_PERCUSSION
from musicsearch.data.synth.render import RENDER_RATE, SAMPLE_RATE, FluidSynth, encode_flac, find_soundfont, master
from musicsearch.data.synth.styles import STYLES, get_style
from musicsearch.data.synth.tags import CATEGORIES, HELDOUT_SYNONYMS, VOCABULARY, derive_tags
from musicsearch.errors import ConfigError
from musicsearch.fileio import atomic_write, sha256_file, write_json

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1.0"
"""Bumped whenever a change alters the clips made for a seed (so resumed corpora are not mixed)."""

SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
"""Probability of train / valid / test for each clip (drawn per clip, so splits do not depend on ``n``)."""

N_SENTENCES = 2
"""Natural-language captions per clip (besides the tag caption)."""


def clip_id(index: int) -> str:
    """Track id of clip ``index`` (``synth000042``)."""
    return f"synth{index:06d}"


def _stream(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), int(stream)]))


def clip_split(seed: int, index: int) -> str:
    """The split of clip ``index``: train / valid / test with :data:`SPLIT_FRACTIONS`."""
    u = float(_stream(seed, index, 1).random())
    train, valid, _ = SPLIT_FRACTIONS
    return "train" if u < train else ("valid" if u < train + valid else "test")


@dataclass
class Clip:
    """One made clip: its manifest record, audio and MIDI bytes."""

    track: Track
    flac: bytes
    midi: bytes
    audio: np.ndarray
    composition: Composition


def describe(comp: Composition, seed: int, index: int) -> tuple[list[str], list[str], dict[str, Any]]:
    """Tags, captions and metadata of a composed clip.

    Args:
        comp: the composition.
        seed: corpus seed.
        index: clip number.

    Returns:
        ``(tags, captions, metadata)``; ``captions[0]`` is the ECALS tag caption, the rest are sentences.
    """
    plan = comp.plan
    programs = comp.channel_programs()
    instruments = list(dict.fromkeys(p.instrument for p in plan.parts if p.channel in programs))
    groove = plan.groove_spec
    drums_played = list(comp.features["drums"])  # type: ignore[call-overload]
    kit = groove.kit if groove is not None and DRUM_CHANNEL in programs else None
    tags = derive_tags(
        style=plan.style,
        instruments=instruments,
        kit=kit,
        drums_played=drums_played,
        bpm=plan.bpm,
        meter=plan.meter,
        tonic=plan.tonic,
        mode=plan.mode,
        dynamics=plan.dynamics,
        swing=plan.swing,
        register=float(comp.features["register"]),  # type: ignore[arg-type]
        groove_index=plan.groove,
        rng=_stream(seed, index, 3),
    )
    cats = tags.by_category()
    kit_tags = tuple(t for t in cats.get("instrument", []) if t not in instruments)
    facts = CaptionFacts(
        style=plan.style,
        genres=tuple(cats.get("genre", [])),
        instruments=tuple(instruments),
        kit_tags=kit_tags,
        tempo=cats["tempo"][0],
        bpm=plan.bpm,
        moods=tags.moods,
        key=cats["key"][0],
        mode=plan.mode if plan.mode not in ("major", "minor") else "",
        meter=plan.meter,
        texture=tags.texture,
        dynamics=plan.dynamics if plan.dynamics != "medium" else "",
        rhythm=tuple(cats.get("rhythm", [])),
    )
    crng = _stream(seed, index, 2)
    captions = [tag_caption(tags.tags, crng), *sentences(facts, crng, N_SENTENCES)]
    metadata: dict[str, Any] = {
        "style": plan.style,
        "bpm": plan.bpm,
        "meter": plan.meter,
        "key": plan.key_name,
        "tonic": plan.tonic,
        "mode": plan.mode,
        "quality": plan.quality,
        "dynamics": plan.dynamics,
        "swing": round(plan.swing, 4),
        "instruments": instruments,
        "programs": {str(c): p for c, p in sorted(programs.items())},
        "drum_kit": kit,
        "drums": drums_played,
        "percussion": sorted(set(drums_played) & HAND_PERCUSSION),
        "progression": list(plan.progression),
        "moods": list(tags.moods),
        "texture": tags.texture,
        "tag_categories": dict(zip(tags.tags, tags.categories)),
        "all_tags": list(tags.all_tags),
        "dropped_tags": list(tags.dropped),
        "duration": plan.seconds,
        "sample_rate": SAMPLE_RATE,
        "seed": seed,
        "index": index,
        "generator": GENERATOR_VERSION,
    }
    return list(tags.tags), captions, metadata


def make_clip(seed: int, index: int, synth: FluidSynth, *, seconds: float = 10.0, style: str | None = None) -> Clip:
    """Compose, render and describe clip ``index`` of a corpus.

    Args:
        seed: corpus seed.
        index: clip number.
        synth: the renderer.
        seconds: clip length.
        style: force a style (``None``: drawn from the seed).

    Returns:
        The :class:`Clip` (its track's ``audio_path`` is ``audio/<id>.flac``, relative to the corpus folder).
    """
    comp = compose_clip(seed, index, seconds=seconds, style=style)
    st = get_style(comp.plan.style)
    stereo = synth.render(comp.midi, seconds)
    audio = master(stereo, in_rate=synth.sample_rate, reverb=st.reverb, rt60=st.rt60, dynamics=comp.plan.dynamics)
    flac = encode_flac(audio)
    tags, captions, metadata = describe(comp, seed, index)
    tid = clip_id(index)
    metadata["midi_path"] = f"midi/{tid}.mid"
    metadata["sha256"] = hashlib.sha256(flac).hexdigest()
    metadata["rms_db"] = round(float(20 * np.log10(np.sqrt(np.mean(audio.astype(np.float64) ** 2)) + 1e-12)), 2)
    metadata["peak"] = round(float(np.max(np.abs(audio))), 4)
    track = Track(
        track_id=tid,
        audio_path=f"audio/{tid}.flac",
        tags=tuple(tags),
        captions=tuple(captions),
        split=clip_split(seed, index),
        metadata=metadata,
    )
    buf = io.BytesIO()
    comp.midi.save(file=buf)
    return Clip(track=track, flac=flac, midi=buf.getvalue(), audio=audio, composition=comp)


# ------------------------------------------------------------------------------------------------- corpus making

_WORKER_SYNTH: FluidSynth | None = None


def _init_worker(soundfont: str, render_rate: int) -> None:
    global _WORKER_SYNTH
    _WORKER_SYNTH = FluidSynth(soundfont, sample_rate=render_rate)


def _write_clip(out: Path, clip: Clip, key: str) -> dict[str, Any]:
    tid = clip.track.track_id
    with atomic_write(out / "audio" / f"{tid}.flac", "wb") as fh:
        fh.write(clip.flac)
    with atomic_write(out / "midi" / f"{tid}.mid", "wb") as fh:
        fh.write(clip.midi)
    record = {"config": key, "track": clip.track.to_json()}
    write_json(out / "records" / f"{tid}.json", record, indent=None)
    return record


def _work(args: tuple[str, int, int, float, str]) -> tuple[int, dict[str, Any], float]:
    out, seed, index, seconds, key = args
    assert _WORKER_SYNTH is not None
    t0 = time.perf_counter()
    clip = make_clip(seed, index, _WORKER_SYNTH, seconds=seconds)
    record = _write_clip(Path(out), clip, key)
    return index, record, time.perf_counter() - t0


def config_key(seed: int, seconds: float, soundfont_sha: str) -> str:
    """Identity of everything that determines a clip's bytes besides its index."""
    text = json.dumps([GENERATOR_VERSION, seed, seconds, SAMPLE_RATE, RENDER_RATE, soundfont_sha])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _existing(out: Path, index: int, key: str) -> dict[str, Any] | None:
    tid = clip_id(index)
    rec_path, audio = out / "records" / f"{tid}.json", out / "audio" / f"{tid}.flac"
    if not (rec_path.is_file() and audio.is_file()):
        return None
    try:
        record = json.loads(rec_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("config") != key:
        return None
    if sha256_file(audio) != record.get("track", {}).get("metadata", {}).get("sha256"):
        return None
    return dict(record)


@dataclass
class CorpusSummary:
    """What :func:`make_corpus` did.

    Attributes:
        out: corpus folder.
        n_clips: clips in the manifest.
        made: clips rendered now.
        skipped: clips kept from an earlier run.
        seconds: wall-clock seconds.
        clip_seconds: summed per-clip make time of the clips rendered now (compose + render + encode + write).
    """

    out: Path
    n_clips: int
    made: int
    skipped: int
    seconds: float
    clip_seconds: float

    @property
    def clips_per_second(self) -> float:
        """Throughput of this run (made clips / wall seconds)."""
        return self.made / self.seconds if self.seconds > 0 else 0.0


def make_corpus(
    out: str | os.PathLike[str],
    n: int,
    *,
    seed: int = 0,
    seconds: float = 10.0,
    workers: int | None = None,
    soundfont: str | os.PathLike[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> CorpusSummary:
    """Make (or complete) a corpus of ``n`` clips in ``out``.

    Clips already present with a matching record and audio checksum are kept; the rest are rendered by a pool of
    ``workers`` processes, each with its own synthesizer. Manifest, splits, statistics and corpus metadata are
    (re)written at the end.

    Args:
        out: corpus folder (created if missing).
        n: number of clips (>= 1).
        seed: corpus seed.
        seconds: clip length in seconds (> 0).
        workers: processes (``None``: ``os.cpu_count()``); 1 renders in this process.
        soundfont: ``.sf2`` path (``None``: :func:`~musicsearch.data.synth.render.find_soundfont`).
        progress: called with the number of clips finished since the last call.

    Returns:
        A :class:`CorpusSummary`.

    Raises:
        ConfigError: on a bad ``n``, ``seconds`` or ``workers``.
        MusicSearchError: if no soundfont or libfluidsynth is found.
    """
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    if not seconds > 0:
        raise ConfigError(f"--seconds must be positive, got {seconds}")
    if workers is None:
        workers = os.cpu_count() or 1
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    t0 = time.perf_counter()
    sf2 = find_soundfont(soundfont)
    sf2_sha = sha256_file(sf2)
    key = config_key(seed, seconds, sf2_sha)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)

    records: dict[int, dict[str, Any]] = {}
    todo: list[int] = []
    for i in range(n):
        rec = _existing(root, i, key)
        if rec is None:
            todo.append(i)
        else:
            records[i] = rec
    skipped = len(records)
    if skipped and progress:
        progress(skipped)
    log.info("synth corpus %s: %d clips to make, %d kept, %d workers", root, len(todo), skipped, workers)

    clip_seconds = 0.0
    if todo:
        jobs = [(str(root), seed, i, float(seconds), key) for i in todo]
        if workers == 1:
            _init_worker(str(sf2), RENDER_RATE)
            for job in jobs:
                i, rec, dt = _work(job)
                records[i], clip_seconds = rec, clip_seconds + dt
                if progress:
                    progress(1)
        else:
            # fork: workers need nothing from the parent but the module, and spawn would re-import a caller's
            # unguarded __main__ script; fall back to spawn where fork does not exist.
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with cf.ProcessPoolExecutor(
                max_workers=min(workers, len(jobs)),
                mp_context=ctx,
                initializer=_init_worker,
                initargs=(str(sf2), RENDER_RATE),
            ) as pool:
                futures = [pool.submit(_work, job) for job in jobs]
                try:
                    for fut in cf.as_completed(futures):
                        i, rec, dt = fut.result()
                        records[i], clip_seconds = rec, clip_seconds + dt
                        if progress:
                            progress(1)
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise

    tracks = [track_from_json(records[i]["track"], where=f"record {clip_id(i)}") for i in range(n)]
    write_manifest(root / "manifest.jsonl", [_absolute(t, root) for t in tracks])
    splits = {s: [t.track_id for t in tracks if t.split == s] for s in ("train", "valid", "test")}
    write_json(root / "splits.json", splits)
    stats = corpus_stats(tracks)
    write_json(root / "stats.json", stats)
    write_json(
        root / "corpus.json", corpus_metadata(seed=seed, n=n, seconds=seconds, soundfont=sf2, sha=sf2_sha, stats=stats)
    )
    elapsed = time.perf_counter() - t0
    return CorpusSummary(root, n, len(todo), skipped, elapsed, clip_seconds)


def _absolute(t: Track, root: Path) -> Track:
    return Track(
        track_id=t.track_id,
        audio_path=str((root / t.audio_path).resolve()),
        tags=t.tags,
        captions=t.captions,
        split=t.split,
        metadata=t.metadata,
    )


def corpus_stats(tracks: list[Track]) -> dict[str, Any]:
    """Statistics of a synthetic corpus: tags per clip, tag frequencies per category, styles, tempos, splits."""
    per_clip = [len(t.tags) for t in tracks]
    freq: dict[str, Counter[str]] = {c: Counter() for c in CATEGORIES}
    for t in tracks:
        for tag in t.tags:
            freq.setdefault(VOCABULARY.get(tag, "unknown"), Counter())[tag] += 1
    all_counts = Counter(tag for t in tracks for tag in t.tags)
    bpms = [int(t.metadata.get("bpm", 0)) for t in tracks]
    return {
        "n_clips": len(tracks),
        "splits": dict(Counter(t.split or "none" for t in tracks)),
        "total_seconds": float(sum(float(t.metadata.get("duration", 0.0)) for t in tracks)),
        "tags_per_clip": {
            "mean": float(np.mean(per_clip)) if per_clip else 0.0,
            "min": min(per_clip, default=0),
            "max": max(per_clip, default=0),
            "histogram": {str(k): v for k, v in sorted(Counter(per_clip).items())},
        },
        "captions_per_clip": float(np.mean([len(t.captions) for t in tracks])) if tracks else 0.0,
        "distinct_tags": len(all_counts),
        "vocabulary_size": len(VOCABULARY),
        "tag_frequency": {c: dict(sorted(cnt.items(), key=lambda kv: (-kv[1], kv[0]))) for c, cnt in freq.items()},
        "styles": dict(Counter(str(t.metadata.get("style")) for t in tracks).most_common()),
        "bpm": {
            "min": min(bpms, default=0),
            "max": max(bpms, default=0),
            "mean": float(np.mean(bpms)) if bpms else 0.0,
        },
        "dropped_tags": sum(len(t.metadata.get("dropped_tags", [])) for t in tracks),
    }


def corpus_metadata(
    *, seed: int, n: int, seconds: float, soundfont: Path, sha: str, stats: dict[str, Any]
) -> dict[str, Any]:
    """The ``corpus.json`` object: generator identity, vocabulary with categories and counts, held-out synonyms."""
    counts: dict[str, int] = {}
    for cat in stats["tag_frequency"].values():
        counts.update(cat)
    return {
        "name": "musicsearch-synth",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "n_clips": n,
        "seconds": seconds,
        "sample_rate": SAMPLE_RATE,
        "render_rate": RENDER_RATE,
        "soundfont": {"name": soundfont.name, "size": soundfont.stat().st_size, "sha256": sha},
        "styles": [s.name for s in STYLES],
        "categories": CATEGORIES,
        "vocabulary": [{"tag": t, "category": c, "count": counts.get(t, 0)} for t, c in VOCABULARY.items()],
        "heldout_synonyms": {k: list(v) for k, v in HELDOUT_SYNONYMS.items()},
        "captions": {
            "form": "captions[0]: the tags joined with ', ' in a shuffled order (ECALS form); "
            f"captions[1:]: {N_SENTENCES} sentences from {len(TEMPLATES)} templates",
            "tempo_words": {k: list(v) for k, v in TEMPO_WORDS.items()},
            "dynamic_phrases": {k: list(v) for k, v in DYNAMIC_PHRASES.items()},
            "rhythm_phrases": {k: list(v) for k, v in RHYTHM_PHRASES.items()},
            "style_nouns": {k: list(v) for k, v in STYLE_NOUNS.items()},
        },
        "split_fractions": dict(zip(("train", "valid", "test"), SPLIT_FRACTIONS)),
    }


def check_captions(tracks: list[Track]) -> list[tuple[str, str]]:
    """(track id, held-out word) for every caption or tag using a held-out synonym; empty for a valid corpus."""
    bad: list[tuple[str, str]] = []
    for t in tracks:
        for text in (*t.captions, *t.tags):
            bad.extend((t.track_id, w) for w in heldout_hits(text))
    return bad


__all__ = [
    "GENERATOR_VERSION",
    "Clip",
    "CorpusSummary",
    "check_captions",
    "clip_id",
    "clip_split",
    "corpus_metadata",
    "corpus_stats",
    "describe",
    "make_clip",
    "make_corpus",
]
