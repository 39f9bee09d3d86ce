"""Atomic writes keep the old content on failure and give files the usual permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from musicsearch.fileio import atomic_dir, atomic_path, atomic_write, write_json


def test_atomic_write_replaces_or_keeps(tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError), atomic_write(f) as fh:
        fh.write("half")
        raise RuntimeError("crash")
    assert f.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]  # no temporary left behind
    write_json(f, {"x": 1})
    assert f.read_text(encoding="utf-8").strip() == '{\n  "x": 1\n}'


def test_written_files_get_umask_permissions(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "a") as fh:
            fh.write("x")
        with atomic_path(tmp_path / "b") as tmp:
            tmp.unlink()  # a writer that replaces the file with one of its own (mode 0600)
            tmp.touch(mode=0o600)
    finally:
        os.umask(mask)
    for name in ("a", "b"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644


def test_atomic_dir_replaces_whole_folder_or_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(dest) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("crash while writing")
    assert sorted(p.name for p in dest.iterdir()) == ["old.txt"]  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left
    with atomic_dir(dest) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in dest.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
