"""``musicsearch`` itself: errors end as one line on stderr with the documented exit status, never a traceback."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest

from musicsearch.cli import query
from musicsearch.cli.main import main
from musicsearch.errors import MusicSearchError


def failing_open(exc: BaseException) -> Any:
    def open_(*args: object, **kwargs: object) -> Any:
        raise exc

    return open_


@pytest.mark.parametrize(
    ("exc", "code", "line"),
    [
        (
            MusicSearchError("bad\nmulti-line \udcff message"),
            2,
            "musicsearch query: error: bad multi-line \\udcff message",
        ),
        (
            OSError(errno.ENOSPC, "No space left on device", "/full/disk"),
            1,
            "musicsearch query: error: No space left on device (/full/disk)",
        ),
        (PermissionError(errno.EACCES, "Permission denied"), 1, "musicsearch query: error: Permission denied"),
    ],
)
def test_errors_are_one_line_with_an_exit_status(
    exc: BaseException,
    code: int,
    line: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Fault injection at the first thing ``query`` does after checking its input: opening the store."""
    monkeypatch.setattr(query.Searcher, "open", failing_open(exc))
    assert main(["query", "calm piano", "--store", str(tmp_path)]) == code
    out, err = capsys.readouterr()
    assert out == "" and err == line + "\n"


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "query" in capsys.readouterr().out
