"""Indexing in a hostile world: the README's first commands on a new store, files that hang, swell or make the
model return NaN, a full disk, a read-only store, readers next to a long commit, and a kill inside a commit."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
from test_indexer import SR, save_debug_model, tone

from musicsearch.cli.main import main
from musicsearch.index.indexer import Store, index_collection, store_model
from musicsearch.models.loading import DEFAULT_MODEL


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_debug_model(tmp_path_factory.mktemp("model") / "debug.safetensors", seed=0)


def write_tones(root: Path, n: int, *, seconds: float = 1.5) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        name = f"t{i}.flac"
        sf.write(root / name, tone(200 + 90 * i, seconds + 0.25 * i), SR)
        names.append(name)
    return names


# -- a new store, and ~ in every path ------------------------------------------------------------------------------


def test_new_store_defaults_to_the_default_model(model_file: Path, tmp_path: Path) -> None:
    store = tmp_path / "s"
    assert store_model(store) == DEFAULT_MODEL  # new store: the shipped default
    assert store_model(store, model_file) == model_file  # given: as given
    write_tones(tmp_path / "music", 1)
    index_collection(tmp_path / "music", store, model=model_file, workers=0)
    assert store_model(store) == str(model_file.resolve())  # existing store: its own model


def test_readme_index_command_on_a_new_store_with_tilde_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    write_tones(home / "Music", 2, seconds=3.5)
    monkeypatch.setenv("HOME", str(home))
    # as typed with the shell's ~ left alone (quoted, or --store=~/...): the library expands it
    assert main(["index", "~/Music", "--store", "~/music.store", "--workers", "0", "--map", "none"]) == 0
    assert "2 added" in capsys.readouterr().out
    with Store.open("~/music.store") as st:
        assert st.settings.model_source == DEFAULT_MODEL and len(st) == 2
    report = index_collection("~/Music", "~/music.store", workers=0)  # the library, likewise
    assert (report.added, report.unchanged) == (0, 2)
    assert not (Path.cwd() / "~").exists()
