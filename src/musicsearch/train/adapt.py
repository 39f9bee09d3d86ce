"""Teacher-student domain adaptation: fine-tune a model on unlabelled real audio pseudo-tagged by musicnn.

The recipe (issue 8, the paper's conclusion): both musicnn teachers label windows of the user's recordings
(:mod:`musicsearch.teachers.pseudolabel`, thresholds calibrated per tag on the collection itself); the student (a
trained :class:`~musicsearch.models.dual_encoder.TextToMusic`, by default the shipped model) is fine-tuned on those
windows, with stochastic text over each window's confident tags, *together with* clips of the procedural corpus
with their true tags, so the text tower keeps its vocabulary and free-text queries while the audio tower learns
what real recordings of those tags sound like.

Steps, all resumable (a second call reuses what the first wrote in ``out_dir``):

1. ``labels/``: per-track teacher probabilities; ``thresholds.json``: the calibrated thresholds.
2. ``manifest.jsonl``: the pseudo-tagged windows (split by recording: train / valid / test) and the corpus clips;
   ``real_test.jsonl``: the held-out recordings' windows, for :func:`musicsearch.eval.suites.run_suite`.
3. ``cache/``: the decoded windows and clips; ``run/``: the fine-tuning run (``best.safetensors``).

>>> result = adapt(AdaptConfig(audio="~/Music", out_dir="runs/adapt"))     # doctest: +SKIP
>>> result.checkpoint                                                      # doctest: +SKIP
PosixPath('runs/adapt/run/best.safetensors')
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from musicsearch.data.datasets import file_duration
from musicsearch.data.manifest import Track, read_manifest, write_manifest
from musicsearch.errors import ConfigError, MusicSearchError
from musicsearch.fileio import write_json
from musicsearch.losses.registry import objective

__all__ = ["AdaptConfig", "AdaptResult", "adapt", "preset_of", "split_recordings", "text_encoder_of"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdaptConfig:
    """What :func:`adapt` does.

    Attributes:
        audio: a folder of recordings (scanned recursively) or a JSONL manifest of them (tags are ignored).
        out_dir: the adaptation folder.
        model: the student to start from: ``default``, a checkpoint file or a run folder.
        corpus: a manifest of the procedural corpus (true tags, splits); None synthesizes ``corpus_size`` clips
            into ``out_dir/corpus`` with ``musicsearch synth``'s generator.
        corpus_size: clips to synthesize when ``corpus`` is None.
        max_corpus: at most this many corpus training clips join each epoch (seeded choice).
        hop_seconds: seconds between labelled windows (the window is the student's: 3 s for ``small``).
        floor: lowest per-tag threshold (see :func:`~musicsearch.teachers.pseudolabel.calibrate_thresholds`).
        ceiling: highest per-tag threshold.
        max_tags: most tags a window keeps.
        valid_fraction: share of recordings whose windows validate the fine-tuning.
        test_fraction: share of recordings held out for evaluation (never trained on).
        epochs: fine-tuning epochs.
        lr: peak learning rate (cosine decay, no warm-up).
        batch_size: windows per step.
        seed: the one seed (splits, corpus choice, training).
        workers: decoding processes for the cache.
        device: ``auto``, ``cpu`` or ``cuda``.
        recipe: ``finetune``: fine-tune the whole student on thresholded pseudo-tags (above); ``soft``: a
            pretrained musicnn tower (``tower``) whose head learns from cached backbone features with the
            teachers' soft targets, pseudo-captions and corpus text (:mod:`musicsearch.train.heads`; ``epochs``
            are then head epochs, ``lr`` the head's learning rate).
        tower: (``soft``) the musicnn tower preset; its text side (and joined own tower) come from ``model``.
        soft_weight: (``soft``) weight of the soft-target loss.
        rank_weight: (``soft``) weight of the listwise tag-ranking loss (``HeadTrainConfig.rank_weight``).
        init_from: (``soft``) a checkpoint or model name of the same ``tower`` whose head the training starts
            from; empty: ``model`` itself when it is such a tower (continue training it, e.g. the shipped
            ``default`` on your own collection), else a new head.
        anchor_weight: (``soft``) keeps every window's embedding near the starting model's
            (``HeadTrainConfig.anchor_weight``): adapting to a collection then forgets less of the rest.
        wise: (``soft``) the trained head's weight in the adapted model: ``(1 - wise) * start + wise * trained``
            (WiSE-FT, ``HeadTrainConfig.wise``); 1 keeps the trained head, 0.2 keeps most of the start's knowledge.
    """

    audio: str
    out_dir: str
    model: str = "default"
    corpus: str | None = None
    corpus_size: int = 1500
    max_corpus: int = 1500
    hop_seconds: float = 9.0
    floor: float = 0.2
    ceiling: float = 0.5
    max_tags: int = 10
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    epochs: int = 3
    lr: float = 1e-4
    batch_size: int = 64
    seed: int = 0
    workers: int = 2
    device: str = "auto"
    recipe: str = "finetune"
    tower: str = "musicnn-both-small"
    soft_weight: float = 1.0
    rank_weight: float = 0.0
    init_from: str = ""
    anchor_weight: float = 0.0
    wise: float = 1.0


@dataclass(frozen=True)
class AdaptResult:
    """What :func:`adapt` made.

    Attributes:
        checkpoint: the adapted model (``out_dir/run/best.safetensors``).
        manifest: the training manifest (pseudo-tagged windows + corpus clips).
        real_test: the held-out recordings' windows (a manifest with split ``test``).
        n_windows: pseudo-tagged windows per split (``train``, ``valid``, ``test``), and ``unlabelled``: windows
            without a confident tag.
        n_corpus: corpus clips per split.
        hours: hours of real audio labelled.
        failed: recordings that could not be read, with reasons.
        tag_counts: windows per pseudo-tag (train split), most frequent first.
    """

    checkpoint: Path
    manifest: Path
    real_test: Path
    n_windows: dict[str, int]
    n_corpus: dict[str, int]
    hours: float
    failed: list[tuple[str, str]]
    tag_counts: dict[str, int]


def split_recordings(ids: Sequence[str], *, valid: float, test: float, seed: int) -> dict[str, str]:
    """Assign whole recordings to ``train`` / ``valid`` / ``test`` (seeded, independent of input order).

    With 3 or more recordings, ``valid`` and ``test`` get at least one each when their fraction is positive.

    Raises:
        ConfigError: fractions outside ``[0, 1)`` or summing to 1 or more.
    """
    if not (0 <= valid < 1 and 0 <= test < 1 and valid + test < 1):
        raise ConfigError(f"valid and test fractions must be in [0, 1) and sum below 1, got {valid}, {test}")
    unique = sorted(set(ids))
    order = [unique[i] for i in np.random.default_rng(seed).permutation(len(unique))]
    n = len(order)
    n_test = round(n * test) if n < 3 or test == 0 else max(1, round(n * test))
    n_valid = round(n * valid) if n < 3 or valid == 0 else max(1, round(n * valid))
    out = {tid: "test" for tid in order[:n_test]}
    out.update({tid: "valid" for tid in order[n_test : n_test + n_valid]})
    out.update({tid: "train" for tid in order[n_test + n_valid :]})
    return out


def preset_of(config: Any) -> str:
    """The preset whose audio tower a model config has (fine-tuning rebuilds the run config from it).

    Raises:
        ConfigError: no preset matches.
    """
    from musicsearch.models.registry import PRESETS

    for name in PRESETS.names():
        audio, _ = PRESETS.get(name)()
        if audio == config.audio:
            return name
    raise ConfigError("the model's audio tower matches no preset (paper, small, debug); adapt needs one of them")


def text_encoder_of(config: Any) -> str:
    """The short name (or id) of a model config's text tower, as ``musicsearch train --text-encoder`` takes it."""
    from musicsearch.models.registry import TEXT_ENCODERS

    mine = dataclasses.replace(config.text, trainable=True, trainable_layers=None)
    for name in TEXT_ENCODERS.names():
        if dataclasses.replace(TEXT_ENCODERS.get(name)(False), trainable=True, trainable_layers=None) == mine:
            return name
    return str(config.text.name)


def _recordings(audio: str) -> list[Track]:
    path = Path(audio).expanduser()
    if path.is_file():
        tracks = read_manifest(path)
    elif path.is_dir():
        from musicsearch.data.scan import scan_directory

        tracks = list(scan_directory(path).tracks)
    else:
        raise ConfigError(f"{audio} is neither a folder of recordings nor a manifest; give one of them")
    if not tracks:
        raise MusicSearchError(f"{audio} holds no audio files that can be read")
    return tracks


def _corpus(cfg: AdaptConfig, out: Path) -> Path:
    if cfg.corpus:
        p = Path(cfg.corpus)
        manifest = p / "manifest.jsonl" if p.is_dir() else p
        if not manifest.is_file():
            raise ConfigError(f"corpus manifest {manifest} does not exist; make it with `musicsearch synth`")
        return manifest
    from musicsearch.data.synth.corpus import make_corpus

    folder = out / "corpus"
    log.info("synthesizing %d corpus clips in %s", cfg.corpus_size, folder)
    make_corpus(folder, cfg.corpus_size, seed=cfg.seed, workers=cfg.workers)
    return folder / "manifest.jsonl"


def adapt(cfg: AdaptConfig, *, progress: Callable[[int, int], None] | None = None) -> AdaptResult:
    """Pseudo-label ``cfg.audio`` with the musicnn teachers and fine-tune ``cfg.model`` on it (module docstring).

    Args:
        cfg: the settings.
        progress: called with ``(done, total)`` recordings while labelling.

    Returns:
        :class:`AdaptResult`.

    Raises:
        ConfigError: bad settings, a missing corpus, or a model whose tower matches no preset.
        MusicSearchError: no readable recording, or no window with a confident tag.
    """
    from musicsearch.data.cache import build_audio_cache
    from musicsearch.models.loading import resolve_model
    from musicsearch.teachers.pseudolabel import calibrate_thresholds, pseudo_label, pseudo_tracks
    from musicsearch.train.config import TrainConfig
    from musicsearch.train.loop import train

    if cfg.epochs < 1 or cfg.max_corpus < 0 or cfg.batch_size < 2:
        raise ConfigError("adapt needs epochs >= 1, max_corpus >= 0 and batch_size >= 2")
    if cfg.wise != 1.0 and cfg.recipe != "soft":
        raise ConfigError(f"wise={cfg.wise} interpolates a trained head with its start: use it with --recipe soft")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = resolve_model(cfg.model)
    mcfg = base.model.config
    if not objective(mcfg.objective).text_tower:
        raise ConfigError("adapt fine-tunes a joint-embedding model (contrastive or triplet), not a classifier")
    if cfg.recipe == "soft":
        return _adapt_soft(cfg, base, out)
    if cfg.recipe != "finetune":
        raise ConfigError(f"recipe must be 'finetune' or 'soft', got {cfg.recipe!r}")
    preset = preset_of(mcfg)
    window_seconds = mcfg.audio.window_samples / 16000.0

    recordings = _recordings(cfg.audio)
    labels = pseudo_label(
        recordings, out / "labels", window_seconds=window_seconds, hop_seconds=cfg.hop_seconds, progress=progress
    )
    if len(labels) == 0:
        raise MusicSearchError(f"no recording of {cfg.audio} could be labelled; see the warnings above")
    thresholds = calibrate_thresholds(labels.probs, floor=cfg.floor, ceiling=cfg.ceiling)
    write_json(
        out / "thresholds.json",
        {
            "rule": "rate matching, clamped to [floor, ceiling]",
            "floor": cfg.floor,
            "ceiling": cfg.ceiling,
            "windows": len(labels),
            "thresholds": {t: round(float(v), 4) for t, v in zip(labels.tags, thresholds)},
            "expected_rate": {t: round(float(v), 4) for t, v in zip(labels.tags, labels.probs.mean(axis=0))},
        },
    )
    splits = split_recordings(labels.track_ids, valid=cfg.valid_fraction, test=cfg.test_fraction, seed=cfg.seed)
    windows = pseudo_tracks(labels, thresholds, max_tags=cfg.max_tags, splits=splits, id_prefix="real:")
    if not windows:
        raise MusicSearchError("no window got a confident tag from the teachers; lower --floor or add recordings")
    n_windows = {s: sum(1 for w in windows if w.split == s) for s in ("train", "valid", "test")}
    n_windows["unlabelled"] = len(labels) - len(windows)

    corpus_manifest = _corpus(cfg, out)
    corpus = read_manifest(corpus_manifest)
    rng = np.random.default_rng(cfg.seed)
    c_train = [t for t in corpus if t.split in (None, "train") and t.tags]
    c_valid = [t for t in corpus if t.split == "valid" and t.tags]
    if len(c_train) > cfg.max_corpus:
        c_train = [c_train[i] for i in sorted(rng.choice(len(c_train), cfg.max_corpus, replace=False))]
    keep_valid = min(len(c_valid), max(1, cfg.max_corpus // 8)) if cfg.max_corpus else 0
    c_valid = [c_valid[i] for i in sorted(rng.choice(len(c_valid), keep_valid, replace=False))] if keep_valid else []
    corpus_tracks = [
        dataclasses.replace(t, track_id=f"corpus:{t.track_id}", split=split)
        for split, part in (("train", c_train), ("valid", c_valid))
        for t in part
    ]
    mixed = [*(w for w in windows if w.split != "test"), *corpus_tracks]
    manifest = out / "manifest.jsonl"
    write_manifest(manifest, mixed)
    real_test = out / "real_test.jsonl"
    write_manifest(real_test, [w for w in windows if w.split == "test"])

    build_audio_cache(mixed, out / "cache", max_seconds=None, workers=cfg.workers, progress=progress is not None)
    tc = TrainConfig(
        manifest=str(manifest),
        out_dir=str(out / "run"),
        preset=preset,
        objective=mcfg.objective,
        text_encoder=text_encoder_of(mcfg),
        text_rep=mcfg.text_rep,
        epochs=cfg.epochs,
        warmup_epochs=0,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        seed=cfg.seed,
        cache_dir=str(out / "cache"),
        device=cfg.device,
        init_from=str(base.path),
        text_trainable=mcfg.text.trainable if mcfg.text.kind == "transformer" else None,
        text_trainable_layers=mcfg.text.trainable_layers if mcfg.text.kind == "transformer" else None,
        log_every=10,
        save_every=20,
    )
    train(tc)
    labelled = set(labels.track_ids)
    counts: dict[str, int] = {}
    for w in windows:
        if w.split == "train":
            for t in w.tags:
                counts[t] = counts.get(t, 0) + 1
    result = AdaptResult(
        checkpoint=out / "run" / "best.safetensors",
        manifest=manifest,
        real_test=real_test,
        n_windows=n_windows,
        n_corpus={"train": len(c_train), "valid": len(c_valid)},
        hours=sum(_seconds(t) for t in recordings if t.track_id in labelled) / 3600.0,
        failed=labels.failed,
        tag_counts=dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
    )
    write_json(
        out / "adapt.json",
        {
            "config": dataclasses.asdict(cfg),
            "base_model": base.info(),
            "preset": preset,
            "corpus_manifest": str(corpus_manifest),
            "checkpoint": str(result.checkpoint),
            "n_windows": result.n_windows,
            "n_corpus": result.n_corpus,
            "hours": result.hours,
            "failed": result.failed,
            "tag_counts": result.tag_counts,
        },
    )
    return result


def _adapt_soft(cfg: AdaptConfig, base: Any, out: Path) -> AdaptResult:
    """The ``soft`` recipe: windows every ``hop_seconds`` (split by recording), corpus windows, cached musicnn
    features, head training (:func:`musicsearch.train.heads.train_head`); the model lands in ``out/run``."""
    import shutil

    from musicsearch.train.heads import HeadTrainConfig, build_tower, extract_features, train_head

    recordings = _recordings(cfg.audio)
    splits = split_recordings(
        [t.track_id for t in recordings], valid=cfg.valid_fraction, test=cfg.test_fraction, seed=cfg.seed
    )
    window = 3.0
    real: list[Track] = []
    failed: list[tuple[str, str]] = []
    for t in recordings:
        try:
            dur = _seconds(t)
        except MusicSearchError as exc:
            log.warning("cannot read %s (%s); skipping it", t.track_id, exc)
            failed.append((t.track_id, str(exc)))
            continue
        starts = [0.0] if dur <= window else np.arange(0.0, dur - window + 1e-9, cfg.hop_seconds)
        offset = t.start or 0.0
        real += [
            Track(f"real:{t.track_id}@{offset + s:.2f}", t.audio_path, split=splits[t.track_id],
                  start=offset + float(s), end=offset + float(s) + window, metadata={"track": t.track_id})
            for s in starts
        ]  # fmt: skip
    if not real:
        raise MusicSearchError(f"no recording of {cfg.audio} could be read")
    corpus_manifest = _corpus(cfg, out)
    rng = np.random.default_rng(cfg.seed)
    corpus: list[Track] = []
    for t in read_manifest(corpus_manifest):
        if t.split in ("train", "valid", None) and t.tags and len(corpus) < cfg.max_corpus:
            s = float(rng.uniform(0.0, max(0.0, float(t.metadata.get("duration", 10.0)) - window)))
            corpus.append(dataclasses.replace(t, track_id=f"corpus:{t.track_id}", start=s, end=s + window))
    write_manifest(out / "windows.jsonl", real)
    write_manifest(out / "corpus_windows.jsonl", corpus)
    tower = build_tower(cfg.tower, base.model)
    real_feats = extract_features(tower, real, out / "features" / "real")
    corpus_feats = extract_features(tower, corpus, out / "features" / "corpus") if corpus else None
    init_from = cfg.init_from or (cfg.model if _same_tower(base.model.config.audio, tower.config.audio) else "")
    hcfg = HeadTrainConfig(preset=cfg.tower, feature_preset=cfg.tower, epochs=cfg.epochs, lr=cfg.lr,
                           batch_size=cfg.batch_size, soft_weight=cfg.soft_weight, rank_weight=cfg.rank_weight,
                           floor=cfg.floor, ceiling=cfg.ceiling, max_tags=cfg.max_tags, init_from=init_from,
                           anchor_weight=cfg.anchor_weight, wise=cfg.wise, seed=cfg.seed)  # fmt: skip
    summary = train_head(hcfg, base.model, real, real_feats, corpus, corpus_feats, out_dir=out, name="soft")
    (out / "run").mkdir(exist_ok=True)
    shutil.copyfile(out / "soft.safetensors", out / "run" / "best.safetensors")
    write_json(out / "adapt.json", {"config": dataclasses.asdict(cfg), "base_model": base.info(), **summary})
    n_windows = {s: sum(1 for w in real if w.split == s) for s in ("train", "valid", "test")}
    return AdaptResult(
        checkpoint=out / "run" / "best.safetensors",
        manifest=out / "windows.jsonl",
        real_test=out / "real_test.jsonl",
        n_windows={**n_windows, "unlabelled": 0},
        n_corpus={s: sum(1 for w in corpus if w.split == s) for s in ("train", "valid")},
        hours=sum(_seconds(t) for t in recordings if t.track_id not in dict(failed)) / 3600.0,
        failed=failed,
        tag_counts={},
    )


def _same_tower(a: Any, b: Any) -> bool:
    """Whether a head of tower ``a`` can start tower ``b`` (:func:`musicsearch.train.heads.train_head`'s
    ``init_from``): the same musicnn tower, or ``b`` the same with ``tag_inputs`` added."""
    same = a.kind == "musicnn" and dataclasses.replace(a, tag_inputs=b.tag_inputs) == b
    return bool(same and (b.tag_inputs or not a.tag_inputs))


def _seconds(track: Track) -> float:
    """Seconds of a track's segment (its whole file without ``start``/``end``)."""
    end = track.end if track.end is not None else file_duration(track)
    return max(0.0, end - (track.start or 0.0))
