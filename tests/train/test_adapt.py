"""``adapt``: recordings split by track, preset recovery, and a whole debug-scale adaptation through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from musicsearch.assets import librosa_music_dir
from musicsearch.cli.main import main
from musicsearch.data.manifest import Track, read_manifest, write_manifest
from musicsearch.errors import ConfigError
from musicsearch.models.checkpoint import load_model_file, save_model
from musicsearch.models.registry import build_model, model_config
from musicsearch.train.adapt import AdaptConfig, adapt, preset_of, split_recordings, text_encoder_of


def test_split_recordings_is_seeded_and_order_free() -> None:
    ids = [f"r{i}" for i in range(20)]
    a = split_recordings(ids, valid=0.1, test=0.1, seed=3)
    b = split_recordings(list(reversed(ids)) + ids[:5], valid=0.1, test=0.1, seed=3)
    assert a == b
    assert sorted(a.values()).count("test") == 2 and sorted(a.values()).count("valid") == 2
    small = split_recordings(["x", "y", "z"], valid=0.1, test=0.1, seed=0)
    assert sorted(small.values()) == ["test", "train", "valid"]
    with pytest.raises(ConfigError, match="fractions"):
        split_recordings(ids, valid=0.6, test=0.5, seed=0)


def test_preset_of_recovers_the_audio_tower() -> None:
    assert preset_of(model_config("debug", objective="contrastive")) == "debug"
    assert preset_of(model_config("small", objective="triplet", text_encoder="glove")) == "small"
    for name in ("tiny-bert", "minilm", "glove"):
        assert text_encoder_of(model_config("debug", text_encoder=name)) == name


def test_adapt_cli_end_to_end(tone_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("musicnn.configuration", reason="needs `pip install --no-deps musicnn` (checkpoint files)")
    base = tmp_path / "base.safetensors"
    cfg = model_config("debug", objective="contrastive", text_encoder="tiny-bert", tags=("low", "high"))
    save_model(build_model(cfg), base)
    clips = sorted(librosa_music_dir().glob("*.ogg"))[:4]
    recordings = tmp_path / "recordings.jsonl"
    write_manifest(recordings, [Track(p.stem, str(p), start=0.0, end=8.0) for p in clips])
    out = tmp_path / "adapt"
    args = ["adapt", str(recordings), "--out", str(out), "--model", str(base), "--corpus", str(tone_corpus),
            "--hop", "2", "--epochs", "1", "--batch-size", "4", "--workers", "0", "--floor", "0.1"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "adapted model:" in printed
    mixed = read_manifest(out / "manifest.jsonl")
    real = [t for t in mixed if t.track_id.startswith("real:")]
    corpus = [t for t in mixed if t.track_id.startswith("corpus:")]
    assert len(corpus) == 8 and real
    assert all(t.end is not None and t.start is not None and t.end - t.start == pytest.approx(1.0) for t in real)
    test_windows = read_manifest(out / "real_test.jsonl")
    assert test_windows and {t.metadata["track"] for t in test_windows}.isdisjoint({t.metadata["track"] for t in real})
    summary = json.loads((out / "adapt.json").read_text())
    assert summary["preset"] == "debug" and summary["n_corpus"]["train"] == 8
    thresholds = json.loads((out / "thresholds.json").read_text())["thresholds"]
    assert all(0.1 <= v <= 0.5 for v in thresholds.values())
    adapted = load_model_file(out / "run" / "best.safetensors")
    assert adapted.config.audio == cfg.audio
    # a second run resumes: the labels are read back, the finished run is not trained again
    assert main(args) == 0


def test_adapt_soft_continues_a_musicnn_model_with_an_anchor(tone_corpus: Path, tmp_path: Path) -> None:
    """``--recipe soft`` with a ``--model`` that is itself the tower (as the shipped default is) continues it:
    its own tower and projection are kept, its head starts the training (with lr 0 the head comes back
    unchanged), and the anchor and ranking terms are trained."""
    pytest.importorskip("musicnn.configuration", reason="needs `pip install --no-deps musicnn` (checkpoint files)")
    import torch

    from musicsearch.train.heads import build_tower

    torch.manual_seed(0)
    small = build_model(model_config("small", text_encoder="tiny-bert"))
    start = build_tower("musicnn-msd-small-residual", small).eval()
    with torch.no_grad():  # a trained-looking head
        for p in [*start.audio_encoder.head.parameters(), *start.audio_projector.parameters()]:
            p.copy_(0.05 * torch.randn_like(p))
    start_path = tmp_path / "start.safetensors"
    save_model(start, start_path)
    clips = sorted(librosa_music_dir().glob("*.ogg"))[:3]
    recordings = tmp_path / "recordings.jsonl"
    write_manifest(recordings, [Track(p.stem, str(p), start=0.0, end=9.0) for p in clips])
    common = ["adapt", str(recordings), "--model", str(start_path), "--corpus", str(tone_corpus), "--recipe", "soft",
              "--tower", "musicnn-msd-small-residual", "--hop", "3", "--epochs", "1", "--batch-size", "4",
              "--workers", "0", "--anchor-weight", "10", "--rank-weight", "1"]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "still"), "--lr", "0"]) == 0
    summary = json.loads((tmp_path / "still" / "adapt.json").read_text())
    assert summary["config"]["init_from"] == str(start_path)
    assert all("anchor" in h and "rank" in h for h in summary["history"])
    still = load_model_file(tmp_path / "still" / "run" / "best.safetensors")
    for name, p in start.state_dict().items():
        if name.startswith(("audio_encoder.head.", "audio_projector.", "own_projector.", "audio_encoder.own.")):
            torch.testing.assert_close(still.state_dict()[name], p)
    assert main([*common, "--out", str(tmp_path / "moved"), "--lr", "1e-3"]) == 0
    moved = load_model_file(tmp_path / "moved" / "run" / "best.safetensors")
    assert not torch.equal(
        moved.state_dict()["audio_encoder.head.1.weight"], start.state_dict()["audio_encoder.head.1.weight"]
    )
    torch.testing.assert_close(
        moved.state_dict()["own_projector.1.weight"], start.state_dict()["own_projector.1.weight"]
    )
    # --wise 0.5: the same training, saved halfway between the start and the trained head
    assert main([*common, "--out", str(tmp_path / "half"), "--lr", "1e-3", "--wise", "0.5"]) == 0
    half = load_model_file(tmp_path / "half" / "run" / "best.safetensors")
    for name in ("audio_encoder.head.1.weight", "audio_projector.1.weight"):
        mid = 0.5 * (start.state_dict()[name].double() + moved.state_dict()[name].double())
        torch.testing.assert_close(half.state_dict()[name].double(), mid, atol=1e-6, rtol=1e-5)
    with pytest.raises(ConfigError, match="wise"):  # the finetune recipe has no head to interpolate
        adapt(AdaptConfig(audio=str(recordings), out_dir=str(tmp_path / "ft"), model=str(start_path), wise=0.5))
