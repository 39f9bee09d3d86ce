"""``musicsearch --help`` and argument errors import neither torch nor transformers (they are instant)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from musicsearch.cli import export, tag
from musicsearch.cli.main import COMMANDS, build_parser

HEAVY = ("torch", "transformers", "onnxruntime")

# One fresh interpreter: `--help`, each command's `--help`, and an argument error for each command.
PROBE = f"""
import json, sys
from musicsearch.cli.main import COMMANDS, main
codes = {{}}
for argv in [["--help"], []] + [[c, "--help"] for c in COMMANDS] + [[c, "--no-such-option"] for c in COMMANDS]:
    try:
        codes[" ".join(argv)] = main(argv)
    except SystemExit as exc:
        codes[" ".join(argv)] = exc.code
print(json.dumps({{"codes": codes, "loaded": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
"""


def test_help_and_argument_errors_import_no_torch() -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["loaded"] == [], f"imported by --help / argument errors: {out['loaded']}"
    codes = out["codes"]
    assert codes["--help"] == 0 and codes[""] == 2
    for name in COMMANDS:
        assert codes[f"{name} --help"] == 0, name
        assert codes[f"{name} --no-such-option"] == 2, name  # argparse's usage error


def test_console_script_help_lists_every_command() -> None:
    """The installed entry point (`python -m musicsearch`), in a subprocess, as a user runs it."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "musicsearch", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    for name, summary in COMMANDS.items():
        assert name in proc.stdout and summary[:30] in " ".join(proc.stdout.split())
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & set(HEAVY), imported & set(HEAVY)


def _registered_help(parser: argparse.ArgumentParser) -> dict[str, str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: str(a.help) for a in sub._choices_actions}


def test_the_help_table_matches_each_commands_own_line() -> None:
    """main.COMMANDS repeats each module's one-line help (so --help imports none): the two must agree."""
    assert _registered_help(build_parser("*")) == COMMANDS
    assert _registered_help(build_parser(None)) == COMMANDS


def test_repeated_constants_match_their_sources() -> None:
    from musicsearch.models.pretrained import PUBLISHED
    from musicsearch.teachers.musicnn import MODEL_NAMES

    assert tuple(PUBLISHED.names()) == export.PUBLISHED_NAMES
    assert tag.MODEL_NAMES == MODEL_NAMES
