"""The ``musicsearch`` command: one file per subcommand, each a thin call of library functions.

Each subcommand module in :data:`COMMANDS` defines ``add_parser(subparsers) -> None`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from musicsearch import __version__
from musicsearch.errors import MusicSearchError

# Subcommand modules under musicsearch.cli, in the order `--help` lists them, with their one-line help. The help
# is repeated here so that `musicsearch --help` imports no subcommand module (some pull in numpy, torch or
# transformers); tests/cli/test_lazy_imports.py checks that each module registers the same line.
COMMANDS: dict[str, str] = {
    "demo": "build, index and search a demo collection, then serve the web page",
    "scan": "make a manifest (JSONL) from a folder of audio files",
    "cache": "decode a manifest's audio once into a memory-mapped cache (16 kHz float32 .npy)",
    "train": "train a model (CPU, one GPU, or torchrun DDP)",
    "synth": "make a labelled synthetic music corpus (procedural MIDI rendered with FluidSynth)",
    "eval": "evaluate models: tag/sentence retrieval, unseen queries, zero-shot, probing",
    "export": "write a model as a musicsearch .safetensors file, or its two towers as ONNX (--onnx)",
    "tag": "top tags of audio files from a pretrained musicnn tagger",
    "index": "index a folder or manifest of audio into a store (incremental, resumable)",
    "query": "search a store by text, by example, or both",
    "serve": "serve a store's search API and web page",
    "gather": "gather real, redistributable recordings (Debian game-music packages) into a manifest",
    "adapt": "adapt a model to your recordings with musicnn teachers (pseudo-labels, no labels needed)",
}


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv``: its first word that is not an option (top-level options take no value)."""
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(command: str | None = "*") -> argparse.ArgumentParser:
    """The argument parser.

    Args:
        command: the subcommand whose full parser is wanted (its module is imported); the others get a
            placeholder with their one-line help, which is all ``musicsearch --help`` shows. ``"*"`` (the default)
            imports and registers every subcommand; ``None`` none of them.

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(prog="musicsearch", description="Universal text-to-music retrieval.")
    parser.add_argument("--version", action="version", version=f"musicsearch {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, summary in COMMANDS.items():
        if command in ("*", name):
            module = importlib.import_module(f"musicsearch.cli.{name}")
            module.add_parser(sub)
        else:
            sub.add_parser(name, help=summary)
    return parser


def _one_line(message: object) -> str:
    """An error message on one line, whatever it quotes (a path with newlines, undecodable bytes: ``\\udcff``)."""
    text = " ".join(str(message).split("\n")).strip()
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI in-process and return its exit status (tests call this directly).

    Bad input (a :class:`~musicsearch.errors.MusicSearchError`) exits with status 2 and one line on stderr, no
    traceback; so does an operating-system error (a full disk, a folder without permission) with status 1.
    Arguments that are not valid UTF-8 reach the commands as lone surrogates (Python's ``surrogateescape``) and
    are refused by them as such.
    """
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_of(words))  # only the named subcommand's module is imported
    args = parser.parse_args(words)
    # our own log lines at INFO (-v: DEBUG); other libraries' only from WARNING up (-vv: everything at DEBUG)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose >= 2 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("musicsearch").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MusicSearchError as exc:
        print(f"musicsearch {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"musicsearch {args.command}: error: {_one_line(exc.strerror or exc)}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"musicsearch {args.command}: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":  # `python -m musicsearch.cli.main`, as torchrun runs it
    entry()
