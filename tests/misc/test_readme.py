"""The README's commands and Python examples, run as written on a temporary home with a few real recordings.

The fenced code blocks are read from README.md itself, so a change to the README changes what runs here. A
command runs from a temporary folder whose ``.venv`` is this test run's environment, with ``HOME`` pointing at a
temporary home holding ``~/Music`` (4 s excerpts of six of the shipped real recordings, one of them
``~/Music/song.flac`` as the README names it). The few changes made to the README's text before running it are
listed in :data:`SUBSTITUTIONS` and :data:`NOT_RUN`, each with its reason; every one of them must still match the
README, so a README edit that makes one stale fails here.

* Fast (default run): every command line parses with the real argument parser, every Python example compiles and
  its imports resolve; the "Search your music" commands (not ``serve``) and its Python example run in-process,
  verbatim (the shell's ``~`` expansion done by ``bash`` itself), and so does the "Python library" example.
* Slow (``-m slow``): every block in a real shell, ``serve`` included (answered over HTTP, then stopped), the
  demo and the training example with the sizes below.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf

from musicsearch.audio.io import load_audio
from musicsearch.cli.main import build_parser, main

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
ASSETS = REPO / "src" / "musicsearch" / "assets" / "librosa_music"
SR = 16000
CLIP_SECONDS = 4.0

#: ``~/Music`` of the temporary home: file under Music -> shipped recording it is a 4 s excerpt of.
MUSIC = {
    "song.flac": "kevin-macleod-sugar-plum-fairy",
    "trumpet.wav": "sorohanro-solo-trumpet",
    "drum and bass.ogg": "admiralbob77-choice-drum-bass",
    "Brahms/Hungarian Dances/05 Hungarian Dance No 5.flac": "brahms-hungarian-dance-5-string-orchestra",
    "waltz.flac": "setuniman-sweet-waltz",
    "ragtime.wav": "lena-orsa-pistachio-ice-cream-ragtime",
}

#: README text -> what runs instead, and why. Sizes only: the commands stay the same.
SUBSTITUTIONS: list[tuple[str, str, str]] = [
    (
        "make demo ",
        'make -C "$REPO" -o .venv/.installed demo DEMO_ARGS="--no-serve --n 4 --dir $PWD/.cache/demo" ',
        "the demo's 200 clips become 4 and it stops before serving (the README's own --no-serve); it runs in the "
        "repository (where the Makefile is) with its collection in the temporary folder, and `make` does not "
        "reinstall the environment this test runs in (-o .venv/.installed)",
    ),
    ("--n 2000", "--n 48", "a 48-clip corpus instead of 2000: the smallest whose train split fills a batch of 32"),
    ("--epochs 20", "--epochs 1", "one epoch instead of 20"),
]
#: README command lines not run, and why.
NOT_RUN: dict[str, str] = {
    "make test": "it is the command that runs this test",
}
#: The server runs on a free port rather than 8000 (which another program may hold), and is stopped once it
#: has answered.
SERVE = ".venv/bin/musicsearch serve "


def code_blocks(language: str, text: str | None = None) -> list[str]:
    """The fenced code blocks of README.md in ``language`` (``bash``, ``python``), in order."""
    text = README.read_text(encoding="utf-8") if text is None else text
    return [m.group(2) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S) if m.group(1) == language]


def command_lines(block: str) -> list[str]:
    """The command lines of a shell block, ``\\``-continued lines joined."""
    return [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def substituted(line: str) -> str:
    """``line`` with :data:`SUBSTITUTIONS` applied."""
    for old, new, _ in SUBSTITUTIONS:
        line = line.replace(old, new)
    return line


def bash_words(line: str, home: Path) -> list[str]:
    """The words ``bash`` makes of a command line (quotes removed, ``~`` expanded with ``HOME=home``), the
    trailing comment dropped."""
    script = 'printf "%s\\0" ' + line
    out = subprocess.run(
        ["bash", "-c", script], env={**os.environ, "HOME": str(home)}, capture_output=True, check=True
    ).stdout
    return out.decode().split("\0")[:-1]


def make_home(root: Path) -> Path:
    """A home folder with ``Music/`` as in :data:`MUSIC`."""
    home = root / "home"
    for name, asset in MUSIC.items():
        path = home / "Music" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        wave = load_audio(ASSETS / f"{asset}.ogg", sample_rate=SR, offset=0.0, duration=CLIP_SECONDS)
        sf.write(path, wave, SR)
    return home


def workdir(root: Path) -> Path:
    """The folder the README's commands run from: its ``.venv`` is this test run's environment."""
    cwd = root / "cwd"
    cwd.mkdir()
    (cwd / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    return cwd


def result_rows(out: str) -> list[list[str]]:
    """The rows of ``musicsearch query``'s result table."""
    return [line.split() for line in out.splitlines() if re.match(r"^\s*\d+\s+\d\.\d{3}\s", line)]


# ------------------------------------------------------------------------------------------------------ fast


def test_readme_blocks_are_what_this_test_knows() -> None:
    text = README.read_text(encoding="utf-8")
    for old, _, why in SUBSTITUTIONS:
        assert old in text, f"README no longer holds {old!r} ({why}): update SUBSTITUTIONS"
    shell = [line for block in code_blocks("bash") for line in command_lines(block)]
    for line in NOT_RUN:
        assert any(s.startswith(line) for s in shell), f"README no longer has {line!r}: update NOT_RUN"
    assert sum(s.startswith(SERVE) for s in shell) == 1
    assert len(code_blocks("python")) == 3 and len(code_blocks("bash")) == 3


def test_readme_commands_parse_and_python_examples_import(tmp_path: Path) -> None:
    """Every ``musicsearch`` line is accepted by the real parser; every Python example compiles and the names it
    imports exist."""
    parser = build_parser()
    lines = [line for block in code_blocks("bash") for line in command_lines(block)]
    commands = [line for line in lines if line.startswith(".venv/bin/musicsearch ")]
    assert len(commands) >= 7
    for line in commands:
        words = bash_words(line, tmp_path)
        assert words[0] == ".venv/bin/musicsearch"
        parser.parse_args(words[1:])  # exits (SystemExit) on an unknown command or flag
    assert all(line.startswith((".venv/bin/musicsearch ", "make ")) for line in lines), lines
    for block in code_blocks("python"):
        tree = ast.parse(block, filename="README.md")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"README imports {alias.name} from {node.module}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    importlib.import_module(alias.name)


def test_readme_search_your_music_runs_verbatim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The "Search your music" commands in-process, exactly as ``bash`` would pass them, then its Python
    example; ``serve`` is left to the slow test."""
    home = make_home(tmp_path)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(workdir(tmp_path))
    block = next(b for b in code_blocks("bash") if "--store ~/music.store" in b)
    outputs = []
    for line in command_lines(block):
        if line.startswith(SERVE):
            continue
        words = bash_words(line, home)
        assert main(words[1:]) == 0, line
        outputs.append(capsys.readouterr().out)
    index_out, text_out, like_out = outputs
    assert f"{len(MUSIC)} added, 0 updated, 0 unchanged, 0 removed, 0 failed" in index_out
    settings = json.loads((home / "music.store" / "store.json").read_text(encoding="utf-8"))
    assert settings["model_source"] == "default"  # a new store defaults to the default model
    assert "query: 'slow sad piano' without 'vocals'" in text_out
    assert len(result_rows(text_out)) == len(MUSIC)
    assert f"like: file:{home}/Music/song.flac" in like_out
    like_rows = result_rows(like_out)
    assert len(like_rows) == len(MUSIC) and like_rows[0][-1] == "song"  # a file finds its own indexed copy first
    assert float(like_rows[0][2]) > 0.999
    (example,) = [b for b in code_blocks("python") if "from musicsearch.search.api import search" in b]
    exec(compile(example, "README.md", "exec"), {"__name__": "__readme__"})
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [r[0] for r in rows] == ["1", "2", "3", "4", "5"]
    assert all(0.0 <= float(r[1]) <= 1.0 for r in rows)
    assert {" ".join(r[2:-1]) for r in rows} <= set(MUSIC)


def library_example() -> str:
    """The "Python library" section's example."""
    (block,) = [b for b in code_blocks("python") if "musicsearch.load_model()" in b]
    return block


def check_library_output(out: str, home: Path) -> None:
    """What the library example prints: the song's shapes and window starts, one cosine per text, then the
    three best tracks of the collection the example indexed."""
    lines = out.splitlines()
    shapes = re.match(r"^\((\d+),\) \((\d+), (\d+)\) \[(.*)\]$", lines[0])
    assert shapes, lines[0]
    dim, n, dim2 = int(shapes[1]), int(shapes[2]), int(shapes[3])
    assert dim == dim2 and n >= 1 and len(shapes[4].split()) == n
    cosines = [float(x) for x in lines[1].strip("[]").split()]
    assert len(cosines) == 2 and all(-1.0 <= c <= 1.0 for c in cosines)
    rows = [line.split() for line in lines[2:]]
    assert [r[0] for r in rows] == ["1", "2", "3"]
    assert {" ".join(r[2:]) for r in rows} <= set(MUSIC)
    assert (home / "music.store" / "store.json").is_file()


def test_readme_python_library_runs_verbatim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The "Python library" example in-process on a fresh home: load, embed, index ``~/Music``, search."""
    home = make_home(tmp_path)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(workdir(tmp_path))
    capsys.readouterr()
    exec(compile(library_example(), "README.md", "exec"), {"__name__": "__readme__"})
    check_library_output(capsys.readouterr().out, home)


# ------------------------------------------------------------------------------------------------------ slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def shell(line: str, cwd: Path, env: dict[str, str], timeout: float = 1800) -> str:
    """Run one command line in ``bash`` and return its output; fail with the output if it fails."""
    proc = subprocess.run(
        ["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"{line}\nexit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def run_python(example: str, cwd: Path, env: dict[str, str]) -> str:
    """Run a README Python example in the environment's interpreter; return its output, failing on an error."""
    proc = subprocess.run(
        [str(cwd / ".venv" / "bin" / "python"), "-"],
        input=example,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, f"{example}\n{proc.stderr[-4000:]}"
    return proc.stdout


@contextlib.contextmanager
def serving(line: str, cwd: Path, env: dict[str, str]) -> Iterator[str]:
    """Start the README's ``serve`` line on a free port; yield its base URL once ``/api/health`` answers."""
    port = free_port()
    proc = subprocess.Popen(
        ["bash", "-c", f"exec {line} --port {port}"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            assert proc.poll() is None, f"serve exited {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}"
            try:
                with urllib.request.urlopen(f"{base}/api/health", timeout=10) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "serve did not answer /api/health in 10 minutes"
            time.sleep(1)
        yield base
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_readme_runs_in_a_real_shell(tmp_path: Path) -> None:
    """Every README block in ``bash`` and the environment's Python, in README order, with only the changes of
    :data:`SUBSTITUTIONS` and :data:`NOT_RUN`."""
    home = make_home(tmp_path)
    cwd = workdir(tmp_path)
    env = {**os.environ, "HOME": str(home), "REPO": str(REPO)}
    python_blocks = iter(code_blocks("python"))
    for number, block in enumerate(code_blocks("bash")):
        for line in command_lines(block):
            if any(line.startswith(skip) for skip in NOT_RUN):
                continue
            run = substituted(line)
            if line.startswith(SERVE):
                with serving(run.split("#")[0].strip(), cwd, env) as base:
                    url = f"{base}/api/search?q={urllib.request.quote('a calm piano piece')}&k=3"
                    with urllib.request.urlopen(url, timeout=120) as resp:
                        body = json.loads(resp.read())
                    assert [r["rank"] for r in body["results"]] == [1, 2, 3]
                continue
            out = shell(run, cwd, env)
            if line.startswith("make demo"):
                assert "4/4 skipped the web page (--no-serve)" in out
            elif " query " in line:
                assert result_rows(out), out
        if number >= 1:  # each later block is followed in the README by its Python example
            example = next(python_blocks)
            out = run_python(example, cwd, env)
            if "search(" in example:
                assert [line.split()[0] for line in out.splitlines()] == ["1", "2", "3", "4", "5"]
    check_library_output(run_python(library_example(), cwd, env), home)
    assert (cwd / "runs" / "mine" / "best.safetensors").is_file()
    assert (cwd / ".cache" / "demo" / "store" / "store.json").is_file()  # the demo wrote into the temporary folder
