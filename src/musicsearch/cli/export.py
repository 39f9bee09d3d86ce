"""``musicsearch export``: write any loadable model in our checkpoint format, so later loads need no conversion.

Examples::

    musicsearch export --model ttmr/contrastive-bert-stochastic --weights mtr.tar.gz --out ttmr-cbs.safetensors
    musicsearch export --model ttmr/triplet-glove-tag --weights mtr/ --text-encoder-path glove.6B.300d.txt \\
        --out ttmr-tgt.safetensors
    musicsearch export --model runs/x/best.safetensors --out small.safetensors --half
"""

from __future__ import annotations

import argparse
import importlib

from musicsearch.errors import ConfigError
from musicsearch.models.checkpoint import load_model_file
from musicsearch.models.dual_encoder import TextToMusic
from musicsearch.models.pretrained import PUBLISHED, export_model, is_published, load_pretrained


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``export``."""
    p = subparsers.add_parser(
        "export",
        help="write a model (a published checkpoint or one of ours) as a musicsearch .safetensors file",
        description="Load a model (converting a published checkpoint) and write it in our format, with its "
        "source, conversion facts and checksum in the metadata; the written file is reloaded and compared.",
        epilog="published names: " + ", ".join(PUBLISHED.names()),
    )
    p.add_argument("--model", required=True, help="a published name (ttmr/...) or a model file / name")
    p.add_argument(
        "--weights", help="published models: an mtr.tar.gz, an unpacked mtr/ folder or a best.pth (default: cache)"
    )
    p.add_argument(
        "--text-encoder-path",
        help="BERT variants: folder with bert-base-uncased's config and tokenizer; GloVe variants: 300-d GloVe .txt",
    )
    p.add_argument("--ecals-tags", help="classification: the release's ecals_tags.json (or the ECALS folder)")
    p.add_argument("--cache-dir", help="download/extraction cache (default $MUSICSEARCH_CACHE/published)")
    p.add_argument("--no-download", action="store_true", help="never download; fail if no local weights are found")
    p.add_argument(
        "--safe-only",
        action="store_true",
        help="refuse checkpoints that need the full (code-running) unpickler",
    )
    p.add_argument("--out", required=True, help="destination .safetensors file")
    p.add_argument("--half", action="store_true", help="store weights as float16")
    p.add_argument("--no-verify", action="store_true", help="skip reloading the file and comparing embeddings")
    p.set_defaults(func=run)


def _load(args: argparse.Namespace) -> TextToMusic:
    if is_published(args.model):
        return load_pretrained(
            args.model,
            weights=args.weights,
            cache_dir=args.cache_dir,
            text_encoder_path=args.text_encoder_path,
            ecals_tags=args.ecals_tags,
            allow_pickle=not args.safe_only,
            download_missing=not args.no_download,
            progress=True,
        )
    extra = [f for f in ("weights", "text_encoder_path", "ecals_tags") if getattr(args, f)]
    if extra:
        raise ConfigError(f"--{extra[0].replace('_', '-')} applies to published (ttmr/...) models only")
    try:
        loading = importlib.import_module("musicsearch.models.loading")
    except ImportError:
        return load_model_file(args.model)
    resolved = loading.resolve_model(args.model)  # a ResolvedModel (its .model) or a model
    model: TextToMusic = getattr(resolved, "model", resolved)
    return model


def run(args: argparse.Namespace) -> int:
    """Load, export, verify; print the written file and its checksum."""
    model = _load(args)
    result = export_model(model, args.out, half=args.half, source=args.model, verify=not args.no_verify)
    check = "" if result.max_abs_diff is None else f"; reloaded embeddings differ by at most {result.max_abs_diff:.3g}"
    print(f"wrote {result.path} (sha256 {result.sha256}){check}")
    return 0
