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

# Subcommand modules under musicsearch.cli, in the order `--help` lists them.
COMMANDS: list[str] = [
    "demo",
    "scan",
    "cache",
    "train",
    "synth",
    "eval",
    "export",
    "tag",
    "index",
    "query",
    "serve",
    "gather",
    "adapt",
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="musicsearch", description="Universal text-to-music retrieval.")
    parser.add_argument("--version", action="version", version=f"musicsearch {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"musicsearch.cli.{name}")
        module.add_parser(sub)
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
    parser = build_parser()
    args = parser.parse_args(argv)
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
