"""ONNX exports: parity with torch for every shipped model and a musicnn tower, and stale or damaged exports are
refused (never a wrong embedding)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from musicsearch.cli.main import main
from musicsearch.models.checkpoint import save_model
from musicsearch.models.inference import embed_texts
from musicsearch.models.loading import SHIPPED_DIR, resolve_model, shipped_models
from musicsearch.models.onnx import (
    AUDIO_FILE,
    EXPORT_FILE,
    PARITY_TOLERANCE,
    TEXT_FILE,
    TOKENIZER_FILE,
    ExportedModel,
    StaleExportError,
    export_dir_for,
    export_onnx,
    parity_inputs,
    weights_of,
)
from musicsearch.models.registry import build_model, model_config

SHIPPED = sorted(json.loads((SHIPPED_DIR / "models.json").read_text(encoding="utf-8"))["models"])


def _reference(model: torch.nn.Module, texts: list[str], windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        audio = model.eval().encode_audio(torch.from_numpy(windows)).numpy()
    return embed_texts(model, texts), audio


@pytest.fixture(scope="module")
def default_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    resolved = resolve_model("default")
    out = export_onnx(
        resolved.model, tmp_path_factory.mktemp("onnx") / "default", weights_sha256=resolved.sha256, source="default"
    )
    return out, resolved.sha256


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_model_exports_within_tolerance(
    name: str, default_export: tuple[Path, str], tmp_path: Path
) -> None:
    """Both towers, checked here independently of export_onnx's own check, on texts and windows other than the
    ones the exporter traced with (other batch sizes and token lengths)."""
    assert name in shipped_models()
    resolved = resolve_model(name)
    if name == "default":
        folder, sha = default_export
    else:
        folder, sha = export_onnx(resolved.model, tmp_path / name, weights_sha256=resolved.sha256), resolved.sha256
    assert weights_of(name) == (Path(resolved.path), sha)
    meta = json.loads((folder / EXPORT_FILE).read_text(encoding="utf-8"))
    assert meta["weights_sha256"] == sha and meta["config_name"] == resolved.model.config.name
    assert {TEXT_FILE, AUDIO_FILE, TOKENIZER_FILE} <= set(meta["files"])
    exported = ExportedModel.open(folder, weights_sha256=sha)
    texts, windows = parity_inputs(resolved.model.config.audio.window_samples)
    texts = [*texts, "piano", "a slow song with strings and a choir, recorded live in a church"]
    rng = np.random.default_rng(7)
    windows = np.concatenate([windows, np.clip(0.2 * rng.standard_normal((2, windows.shape[1])), -1, 1)])
    windows = windows.astype(np.float32)
    ref_text, ref_audio = _reference(resolved.model, texts, windows)
    got_text, got_audio = exported.encode_text(texts), exported.encode_audio(windows, batch_size=2)
    assert got_text.shape == ref_text.shape and got_audio.shape == ref_audio.shape
    assert np.abs(got_text - ref_text).max() <= PARITY_TOLERANCE
    assert np.abs(got_audio - ref_audio).max() <= PARITY_TOLERANCE
    one = exported.encode_text(["calm piano"])  # a batch of one: no padding
    assert np.abs(one - ref_text[:1]).max() <= PARITY_TOLERANCE


@pytest.mark.parametrize("preset", ["musicnn-msd-small-residual", "musicnn-both-small-residual-tags"])
def test_a_musicnn_tower_exports_within_tolerance(tmp_path: Path, preset: str) -> None:
    """The musicnn towers (pretrained backbones + head, a residual own tower, the networks' tag probabilities as
    head inputs) export through the same code."""
    torch.manual_seed(0)
    model = build_model(model_config(preset, text_encoder="tiny-bert")).eval()
    ckpt = tmp_path / "m.safetensors"
    save_model(model, ckpt)
    _, sha = weights_of(ckpt)  # type: ignore[misc]
    folder = export_onnx(model, tmp_path / "onnx", weights_sha256=sha)
    exported = ExportedModel.open(folder, weights_sha256=sha)
    texts, windows = parity_inputs(model.config.audio.window_samples)
    ref_text, ref_audio = _reference(model, texts, windows)
    assert np.abs(exported.encode_audio(windows) - ref_audio).max() <= PARITY_TOLERANCE
    assert np.abs(exported.encode_text(texts) - ref_text).max() <= PARITY_TOLERANCE


# --- stale or damaged exports --------------------------------------------------------------------------------


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_an_export_of_other_weights_is_refused(default_export: tuple[Path, str]) -> None:
    folder, _ = default_export
    other = "0" * 64
    with pytest.raises(StaleExportError, match=r"made from weights .* not 000000000000.*musicsearch export --onnx"):
        ExportedModel.open(folder, weights_sha256=other)


@pytest.mark.parametrize("name", [TEXT_FILE, AUDIO_FILE, TOKENIZER_FILE])
def test_an_altered_file_is_refused(name: str, default_export: tuple[Path, str], tmp_path: Path) -> None:
    """One byte changed in the middle (same size): the checksum in export.json catches it."""
    folder, sha = default_export
    copy = _copy(folder, tmp_path / "x")
    data = bytearray((copy / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / name).write_bytes(bytes(data))
    with pytest.raises(StaleExportError, match=re.escape(f"{name} does not match its checksum")):
        ExportedModel.open(copy, weights_sha256=sha)


def test_truncated_missing_and_unreadable_exports_are_refused(default_export: tuple[Path, str], tmp_path: Path) -> None:
    folder, sha = default_export
    copy = _copy(folder, tmp_path / "x")
    with open(copy / TEXT_FILE, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(StaleExportError, match=r"text\.onnx does not match"):
        ExportedModel.open(copy, weights_sha256=sha)
    (copy / TEXT_FILE).unlink()
    with pytest.raises(StaleExportError, match=r"text\.onnx cannot be read"):
        ExportedModel.open(copy, weights_sha256=sha)
    (copy / EXPORT_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(StaleExportError, match=r"export\.json is unreadable"):
        ExportedModel.open(copy, weights_sha256=sha)
    (copy / EXPORT_FILE).unlink()
    with pytest.raises(StaleExportError, match=r"no ONNX export"):
        ExportedModel.open(copy, weights_sha256=sha)


def test_a_damaged_graph_opened_without_file_checks_fails_loudly(
    default_export: tuple[Path, str], tmp_path: Path
) -> None:
    """Even with ``verify_files=False`` (size checked only), a graph ONNX Runtime cannot parse is an error."""
    folder, sha = default_export
    copy = _copy(folder, tmp_path / "x")
    size = (copy / AUDIO_FILE).stat().st_size
    (copy / AUDIO_FILE).write_bytes(b"\0" * size)
    exported = ExportedModel.open(copy, weights_sha256=sha, verify_files=False)
    with pytest.raises(StaleExportError, match=r"audio\.onnx cannot be loaded"):
        exported.encode_audio(np.zeros((1, exported.window_samples), np.float32))


def test_export_cli_writes_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``musicsearch export --onnx --model procedural`` with no --out: the cache folder keyed by the checksum."""
    monkeypatch.setenv("MUSICSEARCH_CACHE", str(tmp_path))
    assert main(["export", "--onnx", "--model", "procedural"]) == 0
    _, sha = weights_of("procedural")  # type: ignore[misc]
    folder = export_dir_for(sha)
    assert folder.parent == tmp_path / "onnx"
    assert f"wrote {folder}" in capsys.readouterr().out
    ExportedModel.open(folder, weights_sha256=sha)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_export_cli_refuses_bad_combinations(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--model", "default", "--int8", "--out", "x.safetensors"]) == 2
    assert "--int8 applies to --onnx" in capsys.readouterr().err
    assert main(["export", "--model", "default"]) == 2
    assert "give --out" in capsys.readouterr().err


def test_int8_export_is_smaller_and_close(tmp_path: Path) -> None:
    """``--int8``: both graphs quantised (smaller files), embeddings still pointing the same way as float32."""
    torch.manual_seed(0)
    model = build_model(model_config("debug", text_encoder="tiny-bert"), pretrained_text=False).eval()
    f32 = export_onnx(model, tmp_path / "f32", weights_sha256="a" * 64)
    i8 = export_onnx(model, tmp_path / "i8", weights_sha256="a" * 64, int8=True)
    meta = json.loads((i8 / EXPORT_FILE).read_text(encoding="utf-8"))
    assert meta["int8"] is True
    for name in (TEXT_FILE, AUDIO_FILE):
        assert (i8 / name).stat().st_size < (f32 / name).stat().st_size
    a, b = ExportedModel.open(f32, weights_sha256="a" * 64), ExportedModel.open(i8, weights_sha256="a" * 64)
    texts, windows = parity_inputs(model.config.audio.window_samples)
    for x, y in ((a.encode_text(texts), b.encode_text(texts)), (a.encode_audio(windows), b.encode_audio(windows))):
        cos = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
        assert cos.min() > 0.9, cos
