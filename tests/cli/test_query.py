"""``musicsearch query``: results on a real (debug-model) store, ``~`` in every path, and hostile input, each a
one-line error with exit status 2 (in-process, and once in a real process with an undecodable argv byte)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from musicsearch.cli.main import main
from musicsearch.index.indexer import index_collection
from musicsearch.models.checkpoint import save_model
from musicsearch.models.registry import build_model, model_config

SR = 16000


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home folder with ``Music/`` (six tones), ``song.wav`` outside it, and ``music.store`` indexing Music
    with a seeded debug model."""
    root = tmp_path_factory.mktemp("home")
    torch.manual_seed(0)
    model = build_model(model_config("debug", text_encoder="tiny-bert"), pretrained_text=False)
    save_model(model, root / "debug.safetensors")
    music = root / "Music"
    music.mkdir()
    t = np.arange(2 * SR) / SR
    for i in range(6):
        wave = 0.3 * np.sin(2 * np.pi * (150 + 200 * i) * t)
        sf.write(music / f"tone {i}.wav", wave.astype(np.float32), SR)
    sf.write(root / "song.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), SR)
    report = index_collection(music, root / "music.store", model=root / "debug.safetensors", workers=0)
    assert report.added == 6
    return root


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_query_prints_ranked_results_with_paths_under_home(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(home))
    # quoted by the user, so the shell left "~" alone: the CLI expands it
    code, out, _ = run_cli(["query", "a low tone, no noise", "--store", "~/music.store", "-k", "3"], capsys)
    assert code == 0
    assert "query: 'a low tone' without 'noise'" in out
    rows = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [line.split()[0] for line in rows] == ["1", "2", "3"]
    code, out, _ = run_cli(["query", "--like", "~/song.wav", "--store", "~/music.store", "--json"], capsys)
    assert code == 0
    resp = json.loads(out)
    assert resp["like"] == "file:~/song.wav" and len(resp["results"]) == 6
    scores = [r["score"] for r in resp["results"]]
    assert scores == sorted(scores, reverse=True)
    code, out, _ = run_cli(
        ["query", "tone", "--filter", "folder=nowhere", "--store", str(home / "music.store")], capsys
    )
    assert code == 0 and "no tracks match these filters" in out


# (argv after `query`, fragment of the one error line); "STORE" stands for the real store
HOSTILE_CLI_INPUTS: list[tuple[list[str], str]] = [
    (["\udcff", "--store", "STORE"], "not valid UTF-8"),
    (["calm jazz \udce9", "--store", "STORE"], "not valid UTF-8"),
    (["", "--store", "STORE"], "empty"),
    (["   ", "--store", "STORE"], "empty"),
    (["x" * 100_000, "--store", "STORE"], "the limit is"),
    (["piano\x07", "--store", "STORE"], "control characters"),
    (["no vocals", "--store", "STORE"], "only what to leave out"),
    (["--store", "STORE"], "give a text query"),
    (["x", "-k", "0", "--store", "STORE"], "-k 0"),
    (["x", "-k", "-5", "--store", "STORE"], "-k -5"),
    (["x", "-k", "99999999999999999999", "--store", "STORE"], "from 1 to"),
    (["x", "--filter", "year>=abc", "--store", "STORE"], "whole number"),
    (["x", "--filter", "year>=\udcff", "--store", "STORE"], "not valid UTF-8"),
    (["x", "--filter", "bpm>100", "--store", "STORE"], "unknown key"),
    (["--like", "\udcff", "--store", "STORE"], "not an indexed track id or an audio file"),
    (["--like", "99999999999999999999", "--store", "STORE"], "not an indexed track id or an audio file"),
    (["--like", "~/no such file.wav", "--store", "STORE"], "not an indexed track id or an audio file"),
    (["x", "--text-weight", "nan", "--like", "tone 1.wav", "--store", "STORE"], "text_weight"),
    (["x", "--store", "\udcff"], "not a musicsearch store"),
    (["x", "--store", "~/no such store"], "not a musicsearch store"),
]


@pytest.mark.parametrize(("args", "match"), HOSTILE_CLI_INPUTS, ids=[str(i) for i in range(len(HOSTILE_CLI_INPUTS))])
def test_hostile_input_exits_2_with_one_line(
    home: Path, args: list[str], match: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(home))
    argv = ["query", *[str(home / "music.store") if a == "STORE" else a for a in args]]
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("musicsearch query: error: "), err
    assert match in lines[0]


def test_an_undecodable_argv_byte_is_one_line_in_a_real_process(home: Path) -> None:
    """The shell passes bytes; Python hands ``\\xff`` to the program as a lone surrogate."""
    env = {**os.environ, "HOME": str(home), "LC_ALL": "C.UTF-8"}
    argv: list[str | bytes] = [sys.executable, "-m", "musicsearch.cli.main", "query", b"caf\xe9 \xff"]
    argv += ["--store", str(home / "music.store")]
    proc = subprocess.run(argv, capture_output=True, env=env, timeout=300, check=False)
    err = proc.stderr.decode("utf-8", "backslashreplace")
    assert proc.returncode == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("musicsearch query: error: the query is not valid UTF-8 text"), err
