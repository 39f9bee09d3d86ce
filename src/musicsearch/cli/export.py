"""``musicsearch export``: write any loadable model in our checkpoint format, so later loads need no conversion.

Examples::

    musicsearch export --model ttmr/contrastive-bert-stochastic --weights mtr.tar.gz --out ttmr-cbs.safetensors
    musicsearch export --model ttmr/triplet-glove-tag --weights mtr/ --text-encoder-path glove.6B.300d.txt \\
        --out ttmr-tgt.safetensors
    musicsearch export --model runs/x/best.safetensors --out small.safetensors --half
    musicsearch export --onnx --model default          # both towers as ONNX, into the cache used on first use
    musicsearch export --onnx --model default --out default-onnx/ --int8

The published names are listed by ``musicsearch export --help``; this module imports no torch until it runs.
"""

from __future__ import annotations

import argparse
import importlib
from typing import TYPE_CHECKING

from musicsearch.errors import ConfigError

if TYPE_CHECKING:
    from musicsearch.models.dual_encoder import TextToMusic

#: The published checkpoints' names (``musicsearch.models.pretrained.PUBLISHED``, which imports torch), for
#: ``--help``; tests/cli/test_lazy_imports.py checks the two agree.
PUBLISHED_NAMES: tuple[str, ...] = (
    "ttmr/classification-binary-tag",
    "ttmr/contrastive-bert-caption",
    "ttmr/contrastive-bert-stochastic",
    "ttmr/contrastive-bert-tag",
    "ttmr/triplet-bert-caption",
    "ttmr/triplet-bert-stochastic",
    "ttmr/triplet-bert-tag",
    "ttmr/triplet-glove-caption",
    "ttmr/triplet-glove-stochastic",
    "ttmr/triplet-glove-tag",
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``export``."""
    p = subparsers.add_parser(
        "export",
        help="write a model as a musicsearch .safetensors file, or its two towers as ONNX (--onnx)",
        description="Load a model (converting a published checkpoint) and write it in our format, with its "
        "source, conversion facts and checksum in the metadata; the written file is reloaded and compared. "
        "With --onnx, write both towers as ONNX (text.onnx, audio.onnx, tokenizer.json, export.json with the "
        "weights' checksum) and check them against torch; query and serve then encode text without torch.",
        epilog="published names: " + ", ".join(PUBLISHED_NAMES),
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
    p.add_argument(
        "--out",
        help="destination .safetensors file; with --onnx a folder (default: the ONNX cache, "
        "$MUSICSEARCH_CACHE/onnx/<weights checksum>, where query and serve look)",
    )
    p.add_argument("--half", action="store_true", help="store weights as float16")
    p.add_argument("--onnx", action="store_true", help="export both towers to ONNX instead (see above)")
    p.add_argument(
        "--int8",
        action="store_true",
        help="with --onnx: int8 dynamic quantisation of both graphs (smaller, faster, less exact; not the default)",
    )
    p.add_argument("--no-verify", action="store_true", help="skip reloading the file and comparing embeddings")
    p.set_defaults(func=run)


def _load(args: argparse.Namespace) -> tuple[TextToMusic, str]:
    """The model and the SHA-256 of the weights file it came from."""
    from musicsearch.models.checkpoint import load_model_file
    from musicsearch.models.pretrained import is_published, load_pretrained

    if is_published(args.model):
        published = load_pretrained(
            args.model,
            weights=args.weights,
            cache_dir=args.cache_dir,
            text_encoder_path=args.text_encoder_path,
            ecals_tags=args.ecals_tags,
            allow_pickle=not args.safe_only,
            download_missing=not args.no_download,
            progress=True,
        )
        src = published.checkpoint_meta.get("source", {})
        return published, str(src.get("best_pth_sha256", ""))
    extra = [f for f in ("weights", "text_encoder_path", "ecals_tags") if getattr(args, f)]
    if extra:
        raise ConfigError(f"--{extra[0].replace('_', '-')} applies to published (ttmr/...) models only")
    try:
        loading = importlib.import_module("musicsearch.models.loading")
    except ImportError:
        from musicsearch.fileio import sha256_file

        return load_model_file(args.model), sha256_file(args.model)
    resolved = loading.resolve_model(args.model)
    return resolved.model, resolved.sha256


def run(args: argparse.Namespace) -> int:
    """Load, export, verify; print the written file (or ONNX folder) and its checksum (or parity)."""
    if args.int8 and not args.onnx:
        raise ConfigError("--int8 applies to --onnx exports only")
    if args.out is None and not args.onnx:
        raise ConfigError("give --out FILE.safetensors (or --onnx to export ONNX into the cache)")
    if args.onnx and args.half:
        raise ConfigError("--half applies to .safetensors exports; for a smaller ONNX export use --int8")
    model, sha256 = _load(args)
    if args.onnx:
        from musicsearch.models.onnx import export_dir_for, export_onnx

        if not sha256:
            raise ConfigError(
                f"model {args.model!r} has no weights checksum to record; export it to .safetensors first"
            )
        out = args.out or export_dir_for(sha256, int8=args.int8)
        folder = export_onnx(model, out, weights_sha256=sha256, source=args.model, int8=args.int8)
        import json

        diff = json.loads((folder / "export.json").read_text(encoding="utf-8")).get("parity_max_abs_diff", {})
        parity = ", ".join(f"{k} {v:.3g}" for k, v in sorted(diff.items()) if v is not None)
        print(f"wrote {folder} (weights sha256 {sha256}); largest difference to torch: {parity}")
        return 0
    from musicsearch.models.export import export_model

    result = export_model(model, args.out, half=args.half, source=args.model, verify=not args.no_verify)
    check = "" if result.max_abs_diff is None else f"; reloaded embeddings differ by at most {result.max_abs_diff:.3g}"
    print(f"wrote {result.path} (sha256 {result.sha256}){check}")
    return 0
