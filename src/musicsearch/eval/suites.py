"""Named evaluation suites: one call runs a model through a whole part of the paper's protocol.

=========== ===================================================================================================
suite       what it runs
=========== ===================================================================================================
``corpus``  a manifest's test split: tag retrieval (the manifest's 50 most frequent tags and its whole
            vocabulary), sentence retrieval on up to 1,000 (track, caption) pairs, and unseen queries (the
            held-out synonyms of a synthetic corpus's ``corpus.json`` beside the manifest, or given ones)
``ecals``   the ECALS release layout: tag retrieval on the 50-tag list and all 1,054 tags, and the 1,000-caption
            sentence test (``multiquery_samples.json``) -- the paper's Table 2
``zeroshot`` zero-shot transfer on registered datasets (``load_dataset(name, root)``) -- Table 4
``probe``   MLP (or linear) probing of frozen track embeddings on registered datasets -- Table 4
``all``     every suite whose inputs are given
=========== ===================================================================================================

:func:`run_suite` returns one JSON-ready dict with every number and the metadata needed to read it (model
identity, datasets, track counts, window policy, conventions, timing). Track embeddings come from
:func:`musicsearch.eval.embeddings.embed_tracks` (computed once, cached, reused by every metric).
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import musicsearch
from musicsearch.data.manifest import SPLITS, Track, read_manifest, tag_vocabulary
from musicsearch.data.sources.ecals import read_ecals
from musicsearch.data.sources.labels import LabelledDataset
from musicsearch.data.sources.registry import load_dataset
from musicsearch.errors import ConfigError, MusicSearchError
from musicsearch.eval import published
from musicsearch.eval.embeddings import TrackEmbeddings, audio_identity, cached_embeddings, embed_tracks
from musicsearch.eval.metrics import TieRule
from musicsearch.eval.probing import ProbeConfig, paper_grid, probe_dataset
from musicsearch.eval.report import to_jsonable
from musicsearch.eval.retrieval import (
    CaptionPolicy,
    classifier_thresholds,
    evaluate_sentence_retrieval,
    evaluate_tag_retrieval,
    evaluate_unseen_queries,
    is_classification,
    select_caption_pairs,
    unseen_queries_from_corpus,
    vocabulary_index,
)
from musicsearch.eval.zeroshot import evaluate_zeroshot, zeroshot_rows
from musicsearch.models.inference import embed_texts, normalize
from musicsearch.registry import Registry

__all__ = [
    "REPORT_FORMAT",
    "RETRIEVAL_WINDOWS",
    "SUITES",
    "TRANSFER_WINDOWS",
    "MapInputs",
    "SuiteOptions",
    "map_inputs",
    "run_suite",
    "suite_names",
]

log = logging.getLogger(__name__)

REPORT_FORMAT = "musicsearch-eval/1"
RETRIEVAL_WINDOWS = 3
"""Windows per track for the retrieval suites (the paper: 3 for the retrieval test)."""
TRANSFER_WINDOWS = 8
"""Windows per track for zero-shot and probing (the paper: 8 for transfer)."""

ProgressFactory = Callable[[str, int], Callable[[int], None]]
"""``factory(description, total) -> update(n)``: how a caller (the CLI) shows embedding progress."""

CONVENTIONS: dict[str, str] = {
    "scores": "fractions in [0, 1] (the paper prints percent)",
    "median_rank": "median_rank_1based counts the first place as 1; median_rank_0based as 0 (the paper's Table 2)",
    "mAP@10": "one relevant track per caption: reciprocal rank cut at 10",
    "ties": "tie rule of the ranks in sentence retrieval (irrelevant for cosine scores)",
    "skipped_labels": "tags/labels without a positive (or negative) in the evaluated tracks are left out of macro "
    "means and counted",
    "track_embedding": "mean of the window embeddings (placed as window_policy says), before L2 normalisation",
}


@dataclass(frozen=True)
class SuiteOptions:
    """Inputs and choices of the suites (every field has a default; give the inputs a suite needs).

    Attributes:
        manifest: JSONL manifest for ``corpus``.
        split: the manifest split evaluated by ``corpus`` (``"all"``: every track).
        datasets: ``(name, root)`` pairs for ``zeroshot`` / ``probe`` (see ``load_dataset``).
        dataset_options: keyword options passed to every ``load_dataset`` call.
        ecals_root: the ECALS release folder for ``ecals``.
        ecals_npy_dir: its ``<msd id>.npy`` audio folder (default ``ecals_root/npy``).
        tag_vocabularies: ``corpus``: ``{name: tags}`` replacing the default ``{"top50": 50 most frequent,
            "all": every tag}`` (e.g. the ECALS lists).
        n_windows: windows per track; default 3 for the retrieval suites and 8 for transfer.
        window_placement: where the windows go (:data:`~musicsearch.eval.embeddings.WINDOW_PLACEMENTS`):
            ``release`` (the paper's release: on a 30 s track 3 windows start at 0 / 6.7 / 13.4 s) or ``even``
            (ours: first at the start, last ending at the end, 0 / 10.0 / 20.1 s); default ``release`` for
            ``ecals`` (to match the paper's numbers) and ``even`` for every other suite.
        n_captions: sentence-retrieval pairs (the paper: 1,000).
        caption_policy: which caption of a track is its query (``random``, ``first``, ``tags``).
        seed: seed of the caption draw and of probing.
        prompt: template for tag / label / query texts (``"a {} song"``); ``None``: bare texts (the paper).
        unseen_queries: ``{query: tags}``, or a ``corpus.json`` path; default the ``corpus.json`` beside the
            manifest when it exists.
        thresholds: classification sentence retrieval: pick per-tag thresholds on the ``"valid"`` split (when
            it has tracks) or on the evaluated ``"test"`` tracks themselves.
        ties: tie rule of the sentence-retrieval ranks.
        zeroshot_split: the tracks ``zeroshot`` scores: ``test``, ``valid``, ``train`` or ``all``; default the
            official test split (every track for datasets without one). Zero-shot trains nothing, so ``all`` is
            fair and, on small sets (VGMIDI: 40-41 test pieces of 204), five times less noisy.
        probe_head: ``mlp`` or ``linear``.
        probe_grid: ``paper`` (12 configs) or ``quick`` (one config: lr 1e-3, batch 64, no dropout).
        probe_max_epochs: maximum probing epochs.
        probe_patience: early-stopping patience in epochs.
        probe_seeds: probing runs, with seeds ``seed``, ``seed + 1``, ...; the reported scores are their means
            (and ``<score>_std`` their standard deviations). One piece of a 40-piece test split is 2.5 points, and
            the MLP's initialisation alone moves that much; averaging tells a model's probe from the probe's own
            noise. 1 is the paper's protocol.
        cache_dir: embedding cache folder (default ``~/.cache/musicsearch/embeddings``).
        use_cache: read and write the embedding cache.
        batch_size: audio windows per forward pass.
        device: where the model runs (default its device).
        num_workers: decoding threads.
        progress: ``factory(description, total) -> update(n)`` for embedding progress (the CLI's tqdm).
    """

    manifest: str | None = None
    split: str = "test"
    datasets: tuple[tuple[str, str], ...] = ()
    dataset_options: Mapping[str, Any] = field(default_factory=dict)
    ecals_root: str | None = None
    ecals_npy_dir: str | None = None
    tag_vocabularies: Mapping[str, Sequence[str]] | None = None
    n_windows: int | None = None
    window_placement: str | None = None
    n_captions: int = 1000
    caption_policy: CaptionPolicy = "random"
    seed: int = 0
    prompt: str | None = None
    unseen_queries: Mapping[str, Sequence[str] | str] | str | None = None
    thresholds: str = "valid"
    ties: TieRule = "pessimistic"
    zeroshot_split: str | None = None
    probe_head: str = "mlp"
    probe_grid: str = "paper"
    probe_max_epochs: int = 200
    probe_patience: int = 20
    probe_seeds: int = 1
    cache_dir: str | None = None
    use_cache: bool = True
    batch_size: int = 32
    device: str | None = None
    num_workers: int = 2
    progress: ProgressFactory | None = None

    def to_json(self) -> dict[str, Any]:
        """The options as recorded in a report (callables left out)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "progress"}
        if isinstance(self.unseen_queries, Mapping):
            out["unseen_queries"] = f"{len(self.unseen_queries)} given queries"
        return to_jsonable(out)


SuiteFn = Callable[[Any, SuiteOptions], dict[str, Any]]
SUITES: Registry[SuiteFn] = Registry("evaluation suite")


def suite_names() -> list[str]:
    """Registered suite names, sorted."""
    return SUITES.names()


# ----------------------------------------------------------------------------------------------------------------
# embeddings
# ----------------------------------------------------------------------------------------------------------------
def _embed(
    model: Any, tracks: Sequence[Track], name: str, opts: SuiteOptions, n_windows: int, placement: str = "even"
) -> TrackEmbeddings:
    update = opts.progress(f"embedding {name}", len(tracks)) if opts.progress is not None else None
    return embed_tracks(
        model,
        tracks,
        dataset=name,
        n_windows=n_windows,
        cache_dir=opts.cache_dir,
        use_cache=opts.use_cache,
        batch_size=opts.batch_size,
        device=opts.device,
        num_workers=opts.num_workers,
        progress=update,
        placement=placement,
    )


def _windows(opts: SuiteOptions, default: int) -> int:
    return int(opts.n_windows) if opts.n_windows is not None else default


def _placement(opts: SuiteOptions, default: str) -> str:
    """The window placement: ``opts.window_placement`` if given, else the suite's ``default``."""
    return opts.window_placement if opts.window_placement is not None else default


# ----------------------------------------------------------------------------------------------------------------
# retrieval suites (corpus, ecals)
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class _RetrievalInputs:
    name: str  # dataset name for reports
    tracks: list[Track]  # evaluated tracks
    vocabularies: dict[str, tuple[str, list[str]]]  # key -> (description, tags)
    valid_tracks: list[Track]  # for classification thresholds
    require_captions: bool
    caption_policy: CaptionPolicy
    unseen: Mapping[str, Sequence[str] | str] | None
    unseen_source: str
    info: dict[str, Any]
    placement: str  # window placement (WINDOW_PLACEMENTS)


def _retrieval(model: Any, inp: _RetrievalInputs, opts: SuiteOptions) -> dict[str, Any]:
    if not inp.tracks:
        raise MusicSearchError(f"{inp.name}: no tracks to evaluate")
    n_windows = _windows(opts, RETRIEVAL_WINDOWS)
    emb = _embed(model, inp.tracks, inp.name, opts, n_windows, inp.placement)
    t0 = time.perf_counter()
    idx = emb.ok_indices
    x = emb.embeddings[idx]
    tracks = [inp.tracks[i] for i in idx]
    track_tags = [t.tags for t in tracks]
    out: dict[str, Any] = {
        "dataset": inp.name,
        **inp.info,
        "n_tracks": len(tracks),
        "window_policy": emb.policy.to_json(),
        "embeddings": emb.summary(),
        "tags": {},
    }
    for key, (desc, vocab) in inp.vocabularies.items():
        out["tags"][key] = evaluate_tag_retrieval(model, x, track_tags, vocab, vocabulary_name=desc, prompt=opts.prompt)
    pairs = select_caption_pairs(
        tracks, n=opts.n_captions, seed=opts.seed, policy=inp.caption_policy, require_captions=inp.require_captions
    )
    thresholds, source = None, ""
    embed_seconds = 0.0 if emb.from_cache else emb.seconds
    valid_wall = 0.0  # wall time of embedding the validation split, not a metric cost
    if is_classification(model):
        valid = inp.valid_tracks if opts.thresholds == "valid" else []
        t1 = time.perf_counter()
        v_emb = _embed(model, valid, f"{inp.name}:valid", opts, n_windows, inp.placement) if valid else None
        valid_wall = time.perf_counter() - t1
        if v_emb is not None and v_emb.ok.any():
            embed_seconds += 0.0 if v_emb.from_cache else v_emb.seconds
            v_idx = v_emb.ok_indices
            thresholds = classifier_thresholds(model, v_emb.embeddings[v_idx], [valid[i].tags for i in v_idx])
            source = f"valid split ({v_idx.size} tracks)"
        else:
            thresholds = classifier_thresholds(model, x, track_tags)
            source = "the evaluated tracks themselves (no validation split used; optimistic)"
    out["sentence"] = evaluate_sentence_retrieval(
        model, x, pairs, ties=opts.ties, thresholds=thresholds, threshold_source=source
    )
    out["sentence"]["caption_policy"] = inp.caption_policy
    out["sentence"]["seed"] = opts.seed
    if inp.unseen:
        out["unseen"] = evaluate_unseen_queries(model, x, track_tags, inp.unseen, prompt=opts.prompt)
        out["unseen"]["source"] = inp.unseen_source
    metric_seconds = time.perf_counter() - t0 - valid_wall
    out["seconds"] = {"embedding": round(embed_seconds, 3), "metrics": round(metric_seconds, 3)}
    return out


def _unseen_for_manifest(opts: SuiteOptions, manifest: Path) -> tuple[Any, str]:
    if isinstance(opts.unseen_queries, Mapping):
        return opts.unseen_queries, "given"
    if isinstance(opts.unseen_queries, str):
        return unseen_queries_from_corpus(opts.unseen_queries), opts.unseen_queries
    beside = manifest.parent / "corpus.json"
    if beside.is_file():
        try:
            return unseen_queries_from_corpus(beside), str(beside)
        except MusicSearchError as exc:
            log.warning("no unseen queries from %s: %s", beside, exc)
    return None, ""


@SUITES.register("corpus")
def corpus_suite(model: Any, opts: SuiteOptions) -> dict[str, Any]:
    """Tag retrieval, sentence retrieval and unseen queries on a manifest's ``opts.split`` tracks."""
    if not opts.manifest:
        raise ConfigError("the corpus suite needs a manifest (--manifest M)")
    path = Path(opts.manifest)
    every = read_manifest(path)
    tracks = every if opts.split == "all" else [t for t in every if t.split == opts.split]
    if not tracks:
        raise MusicSearchError(
            f"manifest {path} has no {opts.split!r} tracks; give it a test split or evaluate --split all"
        )
    vocab = tag_vocabulary(every)
    if opts.tag_vocabularies is not None:
        vocabularies = {k: (f"given list '{k}'", list(v)) for k, v in opts.tag_vocabularies.items()}
    else:
        vocabularies = {
            "top50": (f"the manifest's {min(50, len(vocab))} most frequent tags", vocab[:50]),
            "all": (f"all {len(vocab)} tags of the manifest", vocab),
        }
    unseen, source = _unseen_for_manifest(opts, path)
    inp = _RetrievalInputs(
        name=f"manifest:{path.name}:{opts.split}",
        tracks=tracks,
        vocabularies=vocabularies,
        valid_tracks=[t for t in every if t.split == "valid" and t.tags],
        require_captions=False,
        caption_policy=opts.caption_policy,
        unseen=unseen,
        unseen_source=source,
        info={"kind": "corpus", "manifest": str(path.resolve()), "split": opts.split},
        placement=_placement(opts, "even"),
    )
    return {"corpus": _retrieval(model, inp, opts)}


@SUITES.register("ecals")
def ecals_suite(model: Any, opts: SuiteOptions) -> dict[str, Any]:
    """The paper's Table 2 on the ECALS release: 50 / 1,054-tag retrieval and the 1,000-caption test."""
    if not opts.ecals_root:
        raise ConfigError("the ecals suite needs the ECALS release folder (--ecals-root DIR)")
    splits = ("valid", "test") if is_classification(model) and opts.thresholds == "valid" else ("test",)
    corpus = read_ecals(opts.ecals_root, npy_dir=opts.ecals_npy_dir, splits=splits)
    test = [t for t in corpus.tracks if t.split == "test"]
    vocabularies = {
        "top50": ("the ECALS 50-tag list", published.ecals_tags(50)),
        "all": (f"all {len(corpus.tags)} ECALS tags", list(corpus.tags)),
    }
    inp = _RetrievalInputs(
        name="ecals:test",
        tracks=test,
        vocabularies=vocabularies,
        valid_tracks=[t for t in corpus.tracks if t.split == "valid" and t.tags],
        require_captions=True,
        caption_policy="first",
        unseen=opts.unseen_queries if isinstance(opts.unseen_queries, Mapping) else None,
        unseen_source="given" if isinstance(opts.unseen_queries, Mapping) else "",
        info={"kind": "ecals", "root": str(Path(opts.ecals_root).resolve())},
        placement=_placement(opts, "release"),
    )
    return {"ecals": _retrieval(model, inp, opts)}


# ----------------------------------------------------------------------------------------------------------------
# transfer suites (zeroshot, probe)
# ----------------------------------------------------------------------------------------------------------------
def _load(opts: SuiteOptions) -> list[LabelledDataset]:
    if not opts.datasets:
        raise ConfigError("this suite needs a dataset (--dataset NAME --root DIR)")
    return [load_dataset(name, root, **dict(opts.dataset_options)) for name, root in opts.datasets]


def _dataset_key(ds: LabelledDataset) -> str:
    return f"{ds.name}:{ds.root}"


def _dataset_embeddings(
    model: Any, ds: LabelledDataset, rows: np.ndarray | None, opts: SuiteOptions
) -> tuple[np.ndarray, np.ndarray, TrackEmbeddings]:
    """(N, D) embeddings and (N,) ok mask over the whole dataset; only ``rows`` are embedded unless the whole
    dataset is cached already (rows outside ``rows`` are then marked not ok)."""
    n_windows = _windows(opts, TRANSFER_WINDOWS)
    placement = _placement(opts, "even")
    name = _dataset_key(ds)
    everything = list(ds.tracks)
    if rows is None or rows.size == len(ds):
        emb = _embed(model, everything, name, opts, n_windows, placement)
        return emb.embeddings, emb.ok.copy(), emb
    full = cached_embeddings(
        model, everything, dataset=name, n_windows=n_windows, cache_dir=opts.cache_dir, placement=placement
    )
    if full is not None and opts.use_cache:
        return full.embeddings, full.ok.copy(), full
    part = _embed(model, [everything[i] for i in rows], f"{name}:rows", opts, n_windows, placement)
    x = np.zeros((len(ds), part.embeddings.shape[1]), dtype=np.float32)
    ok = np.zeros(len(ds), dtype=bool)
    x[rows] = part.embeddings
    ok[rows] = part.ok
    return x, ok, part


@SUITES.register("zeroshot")
def zeroshot_suite(model: Any, opts: SuiteOptions) -> dict[str, Any]:
    """Zero-shot transfer on each dataset of ``opts.datasets``."""
    out: dict[str, Any] = {}
    if opts.zeroshot_split not in (None, *SPLITS, "all"):  # before any dataset is loaded
        raise ConfigError(f"zeroshot_split must be one of {(*SPLITS, 'all')}, got {opts.zeroshot_split!r}")
    for ds in _load(opts):
        rows, _ = zeroshot_rows(ds, opts.zeroshot_split)
        if ds.metric == "f1":  # thresholds tuned on validation as well
            rows = np.union1d(rows, ds.split_indices("valid"))
        x, ok, emb = _dataset_embeddings(model, ds, rows, opts)
        t0 = time.perf_counter()
        res = evaluate_zeroshot(model, x, ds, prompt=opts.prompt, ok=ok, split=opts.zeroshot_split)
        res["embeddings"] = emb.summary()
        res["window_policy"] = emb.policy.to_json()
        res["dataset_info"] = ds.summary() | {"info": ds.info}
        res["seconds"] = {"embedding": 0.0 if emb.from_cache else round(emb.seconds, 3),
                          "metrics": round(time.perf_counter() - t0, 3)}  # fmt: skip
        out[ds.name] = res
    return {"zeroshot": out}


def _grid(opts: SuiteOptions) -> list[ProbeConfig]:
    head = opts.probe_head
    if head not in ("mlp", "linear"):
        raise ConfigError(f"probe head must be mlp or linear, got {head!r}")
    if opts.probe_grid == "paper":
        return paper_grid(head)  # type: ignore[arg-type]
    if opts.probe_grid == "quick":
        return [ProbeConfig(head=head, lr=1e-3, batch_size=64, dropout=0.0)]  # type: ignore[arg-type]
    raise ConfigError(f"probe grid must be 'paper' or 'quick', got {opts.probe_grid!r}")


@SUITES.register("probe")
def probe_suite(model: Any, opts: SuiteOptions) -> dict[str, Any]:
    """Probing (frozen embeddings -> MLP or linear head) on each dataset of ``opts.datasets``."""
    out: dict[str, Any] = {}
    grid = _grid(opts)
    if opts.probe_seeds < 1:
        raise ConfigError(f"probe_seeds must be 1 or more, got {opts.probe_seeds}")
    seeds = [opts.seed + i for i in range(opts.probe_seeds)]
    for ds in _load(opts):
        x, ok, emb = _dataset_embeddings(model, ds, None, opts)
        t0 = time.perf_counter()
        keep = np.flatnonzero(ok)
        runs = [
            probe_dataset(
                x[keep], ds.subset(keep), grid=grid, max_epochs=opts.probe_max_epochs, patience=opts.probe_patience,
                seed=seed,
            ).to_json()
            for seed in seeds
        ]  # fmt: skip
        result = runs[0]
        res: dict[str, Any] = {"dataset": ds.name, "head": opts.probe_head, "grid": opts.probe_grid,
                               "metric": ds.metric, "n_tracks": int(keep.size)}  # fmt: skip
        keys = [k for k in ("accuracy", "roc_auc", "pr_auc", "f1_valid_threshold", "f1_best_threshold")
                if all(r["test"].get(k) is not None for r in runs)]  # fmt: skip
        scores = {k: [float(r["test"][k]) for r in runs] for k in keys}
        for key in ("accuracy", "roc_auc", "pr_auc", "f1_valid_threshold"):
            if key in result["test"]:  # None (undefined on this split) stays None
                res[key] = float(np.mean(scores[key])) if key in scores else None
        if ds.metric == "f1":
            res["f1"] = float(np.mean(scores["f1_best_threshold"])) if "f1_best_threshold" in scores else None
            res["f1_note"] = "per-label thresholds tuned on test (the paper's convention); see f1_valid_threshold"
        if len(seeds) > 1:
            res["seeds"] = seeds
            res["per_seed"] = [{k: scores[k][i] for k in keys} for i in range(len(seeds))]
            for key in keys:
                res[f"{key}_std"] = float(np.std(scores[key]))
        res["probe"] = result
        res["embeddings"] = emb.summary()
        res["window_policy"] = emb.policy.to_json()
        res["dataset_info"] = ds.summary() | {"info": ds.info}
        res["seconds"] = {"embedding": 0.0 if emb.from_cache else round(emb.seconds, 3),
                          "metrics": round(time.perf_counter() - t0, 3)}  # fmt: skip
        out[ds.name] = res
    return {"probe": out}


@SUITES.register("all")
def all_suite(model: Any, opts: SuiteOptions) -> dict[str, Any]:
    """Every suite whose inputs are given (corpus: a manifest; ecals: its root; probe + zeroshot: datasets)."""
    out: dict[str, Any] = {}
    if opts.manifest:
        out.update(corpus_suite(model, opts))
    if opts.ecals_root:
        out.update(ecals_suite(model, opts))
    if opts.datasets:
        out.update(probe_suite(model, opts))  # first: embeds whole datasets, which zero-shot then reuses
        out.update(zeroshot_suite(model, opts))
    if not out:
        raise ConfigError("the 'all' suite needs at least one input: --manifest, --ecals-root or --dataset/--root")
    return out


# ----------------------------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------------------------
def _model_info(model: Any, given: Mapping[str, Any] | None) -> dict[str, Any]:
    cfg = model.config
    info: dict[str, Any] = {
        "name": cfg.name,
        "config_name": cfg.name,
        "objective": cfg.objective,
        "text_encoder": cfg.text.name if cfg.text.kind != "none" else None,
        "text_rep": cfg.text_rep,
        "joint_dim": cfg.joint_dim,
        "window_samples": cfg.audio.window_samples,
    }
    info.update(dict(given or {}))
    info["audio_identity"] = audio_identity(model)
    return info


def run_suite(
    model: Any,
    suite: str,
    options: SuiteOptions | None = None,
    *,
    model_info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run a named suite and return every number with its metadata.

    Args:
        model: a :class:`~musicsearch.models.dual_encoder.TextToMusic` (any objective).
        suite: a name of :data:`SUITES` (``corpus``, ``ecals``, ``zeroshot``, ``probe``, ``all``).
        options: inputs and choices (:class:`SuiteOptions`).
        model_info: identity of the model for the report (e.g. :meth:`ResolvedModel.info`: path, checksum).

    Returns:
        ``{"format", "suite", "model": {name, objective, text_encoder, text_rep, audio_identity, ...},
        "meta": {created, versions, conventions, options, seconds}, "results": {section: {...}}}`` where the
        sections are ``corpus``, ``ecals`` (tag retrieval ``tags.top50`` / ``tags.all``, ``sentence``,
        ``unseen``), ``zeroshot`` and ``probe`` (keyed by dataset name). JSON-ready (NaN becomes ``None``).

    Raises:
        ConfigError: unknown suite or missing inputs; MusicSearchError / ManifestError: bad data.
    """
    opts = options or SuiteOptions()
    fn = SUITES.get(suite)
    t0 = time.perf_counter()
    results = fn(model, opts)
    return to_jsonable(
        {
            "format": REPORT_FORMAT,
            "suite": suite,
            "model": _model_info(model, model_info),
            "meta": {
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "musicsearch": musicsearch.__version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
                "conventions": CONVENTIONS,
                "options": opts.to_json(),
                "seconds": round(time.perf_counter() - t0, 3),
            },
            "results": results,
        }
    )


# ----------------------------------------------------------------------------------------------------------------
# inputs of the joint map (the paper's Fig. 3)
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MapInputs:
    """Embeddings for one joint map: audio tracks, tag texts and captions (all L2-normalised).

    Attributes:
        audio: ``(Na, D)`` track embeddings.
        tags: ``(Nt, D)`` tag embeddings (text, or classifier rows).
        tag_names: the Nt tags.
        captions: ``(Nc, D)`` caption embeddings (empty for a classification model).
        caption_texts: the Nc captions.
        track_tags: the first tag of each of the Na tracks (for colouring), ``""`` if none.
        title: a description of the data.
    """

    audio: np.ndarray
    tags: np.ndarray
    tag_names: list[str]
    captions: np.ndarray
    caption_texts: list[str]
    track_tags: list[str]
    title: str


def map_inputs(model: Any, opts: SuiteOptions, *, max_tracks: int = 500, max_captions: int = 200) -> MapInputs:
    """Embeddings for the joint map of a retrieval dataset (the manifest's split, else the ECALS test split).

    Track embeddings come from the same cache as the suites (so after a suite run nothing is re-encoded).

    Args:
        model: the model.
        opts: the suite options (``manifest`` or ``ecals_root``, windows, cache, seed).
        max_tracks: at most this many tracks (a seeded draw).
        max_captions: at most this many captions.

    Raises:
        ConfigError: if neither a manifest nor an ECALS root is given.
    """
    if opts.manifest:
        every = read_manifest(opts.manifest)
        tracks = every if opts.split == "all" else [t for t in every if t.split == opts.split]
        name, vocab = f"manifest:{Path(opts.manifest).name}:{opts.split}", tag_vocabulary(every)[:50]
        policy: CaptionPolicy = opts.caption_policy
        placement = _placement(opts, "even")
    elif opts.ecals_root:
        corpus = read_ecals(opts.ecals_root, npy_dir=opts.ecals_npy_dir, splits=("test",))
        tracks, name, vocab, policy = list(corpus.tracks), "ecals:test", published.ecals_tags(50), "first"
        placement = _placement(opts, "release")
    else:
        raise ConfigError("the joint map needs a manifest or an ECALS root")
    if not tracks:
        raise MusicSearchError(f"{name}: no tracks for the joint map")
    emb = _embed(model, tracks, name, opts, _windows(opts, RETRIEVAL_WINDOWS), placement)
    idx = emb.ok_indices
    rng = np.random.default_rng(opts.seed)
    if idx.size > max_tracks:
        idx = np.sort(rng.choice(idx, size=max_tracks, replace=False))
    chosen = [tracks[i] for i in idx]
    audio = normalize(emb.embeddings[idx])
    if is_classification(model):
        known = [(t, i) for t, i in zip(vocab, vocabulary_index(model.config.tags, vocab)) if i is not None]
        tag_names = [t for t, _ in known]
        rows = np.array([i for _, i in known], dtype=np.int64)
        weights = model.tag_embeddings().detach().float().cpu().numpy()  # (V, D) classifier rows
        tags = normalize(weights[rows]) if rows.size else np.zeros((0, audio.shape[1]), dtype=np.float32)
        captions, texts = np.zeros((0, audio.shape[1]), dtype=np.float32), []
    else:
        tag_names = list(vocab)
        tags = normalize(embed_texts(model, tag_names))
        pairs = select_caption_pairs(chosen, n=max_captions, seed=opts.seed, policy=policy)
        texts = [p.caption for p in pairs]
        captions = normalize(embed_texts(model, texts))
    return MapInputs(
        audio=audio,
        tags=np.asarray(tags, dtype=np.float32),
        tag_names=tag_names,
        captions=captions,
        caption_texts=texts,
        track_tags=[t.tags[0] if t.tags else "" for t in chosen],
        title=f"{model.config.name} on {name}",
    )
