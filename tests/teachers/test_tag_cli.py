"""``musicsearch tag`` run in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from musicsearch.assets import librosa_music_dir
from musicsearch.cli.main import main
from musicsearch.teachers.tagger import MusicnnTagger

pytest.importorskip("musicnn.configuration", reason="needs `pip install --no-deps musicnn` (checkpoint files)")

TRUMPET = librosa_music_dir() / "sorohanro-solo-trumpet.ogg"


def test_tag_prints_top_tags(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tag", str(TRUMPET), "--model", "MSD_musicnn", "--top", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    expected = MusicnnTagger.load("MSD_musicnn").top_tags(TRUMPET, k=3)
    assert len(lines) == 3
    assert [ln.split("\t")[0] for ln in lines] == [t for t, _ in expected]
    assert [float(ln.split("\t")[1]) for ln in lines] == pytest.approx([s for _, s in expected], abs=5e-4)
    assert lines[0].startswith("jazz\t")


def test_tag_several_files_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tag", str(TRUMPET), str(TRUMPET), "--json", "--top", "2"]) == 0
    records = [json.loads(ln) for ln in capsys.readouterr().out.strip().splitlines()]
    assert len(records) == 2 and records[0] == records[1]
    assert records[0]["model"] == "MTT_musicnn" and records[0]["patches"] == 1
    assert len(records[0]["tags"]) == 2 and set(records[0]["tags"][0]) == {"tag", "score"}


def test_tag_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tag", str(tmp_path / "missing.ogg")]) == 2
    assert "missing.ogg" in capsys.readouterr().err
    assert main(["tag", str(TRUMPET), "--top", "0"]) == 2
    assert "--top" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["tag", str(TRUMPET), "--model", "nope"])
