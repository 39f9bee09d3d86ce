"""End to end: train a debug model on synthetic clips with the CLI, then `musicsearch eval` it; model resolution."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from conftest import write_tone_corpus
from musicsearch.cli.main import main
from musicsearch.data.manifest import read_manifest, write_manifest
from musicsearch.errors import CheckpointError
from musicsearch.fileio import sha256_file
from musicsearch.models.checkpoint import save_model
from musicsearch.models.loading import resolve_model
from musicsearch.models.registry import build_model, model_config


def _split_corpus(root: Path) -> Path:
    """16 tone clips: copy 0 train, copy 1 half valid / half test, with captions."""
    manifest = write_tone_corpus(root, seconds=1.2, copies=2)
    tracks = []
    for i, t in enumerate(read_manifest(manifest)):
        split = "train" if t.track_id.startswith("tone0") else ("valid" if i % 2 else "test")
        tracks.append(dataclasses.replace(t, split=split, captions=(f"a {t.tags[1]} {t.tags[2]} tone",)))
    write_manifest(manifest, tracks)
    return manifest


def test_train_then_eval_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = _split_corpus(tmp_path / "corpus")
    run_dir = tmp_path / "run"
    rc = main([
        "train", "--manifest", str(manifest), "--out", str(run_dir), "--preset", "debug", "--objective",
        "contrastive", "--text-encoder", "tiny-bert", "--epochs", "1", "--batch-size", "4", "--max-steps", "2",
        "--set", "warmup_epochs=0",
    ])  # fmt: skip
    assert rc == 0 and (run_dir / "best.safetensors").is_file()
    out = tmp_path / "report"
    rc = main([
        "eval", "--model", str(run_dir), "--suite", "corpus", "--manifest", str(manifest), "--out", str(out),
        "--cache-dir", str(tmp_path / "cache"), "--windows", "2", "--quiet",
    ])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'report.json'}" in printed and f"wrote {out / 'report.md'}" in printed
    report = json.loads((out / "report.json").read_text())
    run = report["runs"][0]
    assert run["model"]["source"] == "run" and run["model"]["name"] == "run"
    assert run["model"]["sha256"] == sha256_file(run_dir / "best.safetensors")
    sec = run["results"]["corpus"]
    assert sec["n_tracks"] == 4 and sec["window_policy"]["n_windows"] == 2
    for key in ("top50", "all"):
        assert 0.0 <= sec["tags"][key]["roc_auc"] <= 1.0 and 0.0 <= sec["tags"][key]["pr_auc"] <= 1.0
    s = sec["sentence"]
    assert s["n_pairs"] == 4 and 0.0 <= s["R@1"] <= s["R@5"] <= s["R@10"] == 1.0  # 4 tracks: all in the top 10
    assert 1.0 <= s["median_rank_1based"] <= 4.0
    md = (out / "report.md").read_text()
    assert "## Retrieval (layout of the paper's Table 2)" in md and "| run | manifest:manifest.jsonl:test | 4 |" in md
    # a second run of the same command reads the embedding cache
    rc = main([
        "eval", "--model", str(run_dir / "best.safetensors"), "--suite", "corpus", "--manifest", str(manifest),
        "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--windows", "2",
    ])  # fmt: skip
    assert rc == 0
    again = json.loads((out / "report.json").read_text())["runs"][0]
    assert again["results"]["corpus"]["embeddings"]["from_cache"] and again["model"]["source"] == "file"
    assert again["results"]["corpus"]["tags"] == sec["tags"]
    assert "| 50-tag ROC / PR |" in capsys.readouterr().out  # the table is printed without --quiet


def test_eval_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--model", str(tmp_path / "missing"), "--manifest", "m.jsonl"]) == 2
    assert "no model at" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path), "--dataset", "gtzan"]) == 2
    assert "one --root per --dataset" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path / "missing"), "--suite", "tables"]) == 2
    assert "unknown evaluation suite 'tables'" in capsys.readouterr().err


def test_resolve_model(tmp_path: Path) -> None:
    model = build_model(model_config("debug", objective="classification", tags=("a", "b")))
    digest = save_model(model, tmp_path / "m.safetensors")
    got = resolve_model(tmp_path / "m.safetensors")
    assert got.sha256 == digest and got.source == "file" and got.name == model.config.name
    assert not got.model.training and got.info()["objective"] == "classification"
    with pytest.raises(CheckpointError, match="expected"):
        resolve_model(tmp_path / "m.safetensors", sha256="0" * 64)
    with pytest.raises(CheckpointError, match=r"without best\.safetensors"):
        resolve_model(tmp_path)
    with pytest.raises(CheckpointError, match="no model at"):
        resolve_model(tmp_path / "nothing-here")
    (tmp_path / "run").mkdir()
    save_model(model, tmp_path / "run" / "best.safetensors")
    assert resolve_model(tmp_path / "run").source == "run"


@pytest.mark.slow
def test_eval_cli_all_suites_with_umap(tmp_path: Path) -> None:
    manifest = _split_corpus(tmp_path / "corpus")
    model = build_model(model_config("debug", objective="contrastive", text_encoder="tiny-bert"))
    save_model(model, tmp_path / "m.safetensors")
    tags = tmp_path / "tags.txt"
    tags.write_text("calm\nloud\nsine\n")
    out = tmp_path / "report"
    rc = main([
        "eval", "--model", str(tmp_path / "m.safetensors"), "--suite", "all", "--manifest", str(manifest),
        "--dataset", "manifest", "--root", str(manifest), "--out", str(out), "--cache-dir", str(tmp_path / "c"),
        "--probe-grid", "quick", "--probe-epochs", "3", "--tags", f"top50={tags}", "--tags", f"all={tags}",
        "--prompt", "a {} sound", "--umap", "--quiet",
    ])  # fmt: skip
    assert rc == 0
    run = json.loads((out / "report.json").read_text())["runs"][0]
    assert set(run["results"]) == {"corpus", "probe", "zeroshot"}
    assert run["results"]["corpus"]["tags"]["all"]["n_vocabulary"] == 3
    assert run["results"]["zeroshot"]["manifest"]["prompt"] == "a {} sound"
    assert (out / "umap.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "report.md").read_text()
    assert "## Zero-shot transfer" in md and "## Probing (mlp head" in md
