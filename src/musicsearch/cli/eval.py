"""``musicsearch eval --model PATH --suite corpus --manifest M [--out DIR] [--umap]``: the paper's evaluation.

Writes ``report.json`` (every number) and ``report.md`` (tables laid out like the paper's Tables 2 and 4) into
``--out``, optionally ``umap.png`` (the joint map of Fig. 3), and prints the Markdown tables.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from musicsearch.errors import ConfigError


def add_parser(sub: Any) -> None:
    """Register the ``eval`` subcommand."""
    p = sub.add_parser(
        "eval",
        help="evaluate models: tag/sentence retrieval, unseen queries, zero-shot, probing",
        description="Run evaluation suites (corpus, ecals, zeroshot, probe, all) for one or more models and write "
        "report.json + report.md (+ umap.png). See docs/evaluation.md.",
    )
    p.add_argument("--model", action="append", required=True, metavar="PATH",
                   help="a .safetensors checkpoint or a training run folder (repeat for several models)")  # fmt: skip
    p.add_argument("--suite", default="corpus", help="corpus, ecals, zeroshot, probe or all (default: corpus)")
    p.add_argument("--manifest", help="manifest for the corpus suite")
    p.add_argument("--split", default="test", help="manifest split evaluated by the corpus suite, or 'all'")
    p.add_argument("--dataset", action="append", default=[], metavar="NAME",
                   help="registered dataset for zeroshot/probe (gtzan, mtat, mtg-genre, ..., manifest); "
                   "repeat together with --root")  # fmt: skip
    p.add_argument("--root", action="append", default=[], metavar="DIR", help="dataset root, one per --dataset")
    p.add_argument("--no-check-audio", action="store_true", help="do not check that every dataset file exists")
    p.add_argument("--ecals-root", help="ECALS release folder (ecals_annotation/) for the ecals suite")
    p.add_argument("--npy-dir", help="ECALS audio folder of <msd id>.npy files (default ECALS_ROOT/npy)")
    p.add_argument("--tags", action="append", default=[], metavar="NAME=FILE",
                   help="corpus suite: a tag vocabulary to score instead of the defaults (FILE: one tag a line or "
                   "a JSON list); repeat for several")  # fmt: skip
    p.add_argument("--unseen", help="corpus.json (held-out synonyms) or a JSON {query: [tags]} file")
    p.add_argument("--out", default="eval_report", help="report folder (default: ./eval_report)")
    p.add_argument("--cache-dir", help="embedding cache (default ~/.cache/musicsearch/embeddings)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the embedding cache")
    p.add_argument(
        "--windows",
        type=int,
        help="windows per track (default 3 for retrieval, 8 for zero-shot and probing, as the paper)",
    )
    p.add_argument("--window-placement", choices=("release", "even"),
                   help="where windows go: 'release' (the paper's code; default of the ecals suite) or 'even' "
                   "(first at the start, last ending at the end; default of the other suites)")  # fmt: skip
    p.add_argument("--n-captions", type=int, default=1000, help="sentence-retrieval pairs (default 1000)")
    p.add_argument("--caption", default="random", choices=("random", "first", "tags"),
                   help="which caption of a track is its query (corpus suite)")  # fmt: skip
    p.add_argument("--prompt", help="template for label/tag texts, e.g. 'a {} song' (default: bare labels)")
    p.add_argument("--thresholds", default="valid", choices=("valid", "test"),
                   help="classification models: where per-tag thresholds are tuned")  # fmt: skip
    p.add_argument("--ties", default="pessimistic", choices=("pessimistic", "optimistic", "mean", "stable"),
                   help="tie rule of sentence-retrieval ranks")  # fmt: skip
    p.add_argument("--zeroshot-split", default=None, choices=("test", "valid", "train", "all"),
                   help="tracks zero-shot scores (default: the official test split; all: every track)")  # fmt: skip
    p.add_argument("--probe-head", default="mlp", choices=("mlp", "linear"))
    p.add_argument("--probe-grid", default="paper", choices=("paper", "quick"))
    p.add_argument("--probe-epochs", type=int, default=200, help="maximum probing epochs")
    p.add_argument("--probe-seeds", type=int, default=1,
                   help="probing runs (seeds SEED, SEED+1, ...), scores averaged (default 1: the paper)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32, help="audio windows per forward pass")
    p.add_argument("--workers", type=int, default=2, help="audio decoding threads")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--umap", action="store_true", help="also draw the joint map umap.png (first model)")
    p.add_argument("--quiet", action="store_true", help="no progress bars, no table on stdout")
    p.set_defaults(func=run)


def _read_tag_list(spec: str) -> tuple[str, list[str]]:
    if "=" not in spec:
        raise ConfigError(f"--tags {spec!r} must look like NAME=FILE")
    name, file = spec.split("=", 1)
    path = Path(file)
    if not path.is_file():
        raise ConfigError(f"tag list {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        tags = json.loads(text)
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ConfigError(f"tag list {path} must be a JSON list of strings")
    else:
        tags = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not tags:
        raise ConfigError(f"tag list {path} is empty")
    return name, tags


def _unseen(path: str | None) -> Any:
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"unseen-query file {p} does not exist")
    obj = json.loads(p.read_text(encoding="utf-8"))
    if isinstance(obj, dict) and "heldout_synonyms" in obj:
        return str(p)  # a corpus.json: the suite inverts its held-out synonyms
    if not isinstance(obj, dict) or not all(isinstance(v, str | list) for v in obj.values()):
        raise ConfigError(f"{p} must be a corpus.json or a JSON object {{query: [tags]}}")
    return obj


def _progress_factory(bars: list[Any]) -> Callable[[str, int], Callable[[int], None]]:
    from tqdm import tqdm

    def factory(desc: str, total: int) -> Callable[[int], None]:
        bar = tqdm(total=total, desc=desc, unit="track", leave=False)
        bars.append(bar)
        return bar.update

    return factory


def run(args: argparse.Namespace) -> int:
    """Load each model, run the suite, write the report, print the tables."""
    from musicsearch.eval.figures import umap_figure
    from musicsearch.eval.report import markdown_report, write_report
    from musicsearch.eval.suites import SUITES, SuiteOptions, map_inputs, run_suite
    from musicsearch.models.loading import resolve_model

    SUITES.get(args.suite)  # an unknown suite fails before any model is loaded
    if len(args.dataset) != len(args.root):
        raise ConfigError(f"give one --root per --dataset ({len(args.dataset)} datasets, {len(args.root)} roots)")
    bars: list[Any] = []
    opts = SuiteOptions(
        manifest=args.manifest,
        split=args.split,
        datasets=tuple(zip(args.dataset, args.root)),
        dataset_options={"check_audio": False} if args.no_check_audio else {},
        ecals_root=args.ecals_root,
        ecals_npy_dir=args.npy_dir,
        tag_vocabularies=dict(_read_tag_list(s) for s in args.tags) or None,
        n_windows=args.windows,
        window_placement=args.window_placement,
        n_captions=args.n_captions,
        caption_policy=args.caption,
        seed=args.seed,
        prompt=args.prompt,
        unseen_queries=_unseen(args.unseen),
        thresholds=args.thresholds,
        ties=args.ties,
        zeroshot_split=args.zeroshot_split,
        probe_head=args.probe_head,
        probe_grid=args.probe_grid,
        probe_max_epochs=args.probe_epochs,
        probe_seeds=args.probe_seeds,
        cache_dir=args.cache_dir,
        use_cache=not args.no_cache,
        batch_size=args.batch_size,
        device=args.device,
        num_workers=args.workers,
        progress=None if args.quiet else _progress_factory(bars),
    )
    runs = []
    first_model = None
    try:
        for spec in args.model:
            resolved = resolve_model(spec, device=args.device)
            first_model = first_model or resolved.model
            runs.append(run_suite(resolved.model, args.suite, opts, model_info=resolved.info()))
        json_path, md_path = write_report(runs, args.out)
        written = [json_path, md_path]
        if args.umap and first_model is not None:
            inputs = map_inputs(first_model, opts)
            written.append(
                umap_figure(
                    Path(args.out) / "umap.png",
                    audio=inputs.audio,
                    tags=inputs.tags,
                    tag_names=inputs.tag_names,
                    captions=inputs.captions,
                    title=inputs.title,
                    random_state=args.seed,
                )
            )
    finally:
        for bar in bars:
            bar.close()
    if not args.quiet:
        print(markdown_report(runs))
    for path in written:
        print(f"wrote {path}")
    return 0
