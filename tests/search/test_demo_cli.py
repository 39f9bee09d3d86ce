"""`musicsearch demo --no-serve` end to end: collection, index, example queries (a debug model stands in for the
default one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from musicsearch.cli.main import main
from musicsearch.search.demo import DEMO_QUERIES


def test_demo_builds_indexes_and_queries(tone_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--manifest",
                str(tone_corpus),
                "--out",
                str(run),
                "--preset",
                "debug",
                "--text-encoder",
                "tiny-bert",
                "--epochs",
                "1",
                "--batch-size",
                "4",
                "--set",
                "warmup_epochs=0",
            ]
        )
        == 0
    )
    capsys.readouterr()
    args = ["demo", "--dir", str(tmp_path / "demo"), "--n", "4", "--model", str(run), "--no-serve", "--workers", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "12 embedded, 0 failed" in out  # 4 procedural clips + 8 real recordings
    for q in DEMO_QUERIES:
        assert f"[{q.kind}]" in out
    assert out.count(" 1. rel ") == len(DEMO_QUERIES)
    assert (tmp_path / "demo" / "real" / "sorohanro-solo-trumpet.txt").is_file()  # licences travel with the audio
    # a second run reuses everything: nothing re-rendered or re-embedded
    assert main(args) == 0
    assert "0 embedded, 0 failed" in capsys.readouterr().out
