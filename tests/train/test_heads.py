"""Head training of a musicnn tower on cached features with soft teacher targets (musicsearch.train.heads)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicsearch.data.manifest import Track, read_manifest
from musicsearch.errors import ConfigError
from musicsearch.models.checkpoint import load_model_file
from musicsearch.models.registry import PRESETS, build_model, model_config
from musicsearch.train.heads import BackboneFeatures, HeadTrainConfig, feature_columns, train_head


def test_feature_columns_slice_the_cached_layout() -> None:
    both_small, _ = PRESETS.get("musicnn-both-small")()  # MSD, MTT, own
    msd, _ = PRESETS.get("musicnn-msd")()
    mtt_small = PRESETS.get("musicnn-both-small")()[0].__class__(
        **{**both_small.__dict__, "backbones": ("MTT_musicnn",)}
    )
    np.testing.assert_array_equal(feature_columns(both_small, msd), np.arange(1506))
    cols = feature_columns(both_small, mtt_small)
    np.testing.assert_array_equal(cols, np.r_[np.arange(1506, 3012), np.arange(3012, 3140)])
    with pytest.raises(ConfigError):
        feature_columns(msd, both_small)


def test_residual_tower_starts_as_the_base_model() -> None:
    pytest.importorskip("musicnn.configuration", reason="needs `pip install --no-deps musicnn` (checkpoint files)")
    from musicsearch.train.heads import build_tower

    torch.manual_seed(0)
    base = build_model(model_config("small", text_encoder="tiny-bert")).eval()
    tower = build_tower("musicnn-msd-small-residual", base).eval()
    x = 0.1 * torch.randn(2, 48_000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(tower.encode_audio(x), base.encode_audio(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(tower.encode_text(["slow piano"]), base.encode_text(["slow piano"]))


def _windows(n: int, split_of: dict[int, str], prefix: str, tags: bool) -> list[Track]:
    return [
        Track(
            f"{prefix}{i}",
            f"/nonexistent/{prefix}{i // 4}.ogg",
            tags=("piano", "slow") if tags and i % 2 else (("drums", "fast") if tags else ()),
            captions=("a slow piano piece",) if tags and i % 2 else (),
            split=split_of.get(i % 10, "train"),
            start=3.0 * (i % 4),
            end=3.0 * (i % 4) + 3.0,
            metadata={"track": f"{prefix}{i // 4}"},
        )
        for i in range(n)
    ]


def test_train_head_on_cached_features(tmp_path) -> None:
    pytest.importorskip("musicnn.configuration", reason="needs `pip install --no-deps musicnn` (checkpoint files)")
    torch.manual_seed(0)
    base = build_model(model_config("small", text_encoder="tiny-bert"))
    rng = np.random.default_rng(0)
    real = _windows(40, {0: "valid", 1: "test"}, "r", tags=False)
    corpus = _windows(20, {0: "valid"}, "c", tags=True)
    # teacher probabilities that tell two kinds of window apart, and features that carry the same signal
    kind = np.arange(40) % 2
    probs = np.where(kind[:, None] == 1, 0.9, 0.05).astype(np.float32) * np.ones((1, 100), np.float32)
    probs[:, ::2] = 1.0 - probs[:, ::2]
    feats = rng.normal(size=(40, 3140)).astype(np.float32)
    feats[:, :10] += 3.0 * kind[:, None]
    real_feats = BackboneFeatures([w.track_id for w in real], feats, probs)
    corpus_feats = BackboneFeatures(
        [w.track_id for w in corpus], rng.normal(size=(20, 3140)).astype(np.float32), np.zeros((20, 100), np.float32)
    )
    cfg = HeadTrainConfig(preset="musicnn-msd-small", epochs=3, batch_size=16, seed=0)
    out = train_head(cfg, base, real, real_feats, corpus, corpus_feats, out_dir=tmp_path, name="m")
    assert out["windows"]["train"] > 0 and len(out["history"]) == 3
    assert all("soft" in h and np.isfinite(h["soft"]) for h in out["history"])
    model = load_model_file(tmp_path / "m.safetensors")
    assert model.config.audio.backbones == ("MSD_musicnn",) and model.config.audio.join_own
    # the own tower is the base model's; the backbone the pretrained network
    torch.testing.assert_close(model.audio_encoder.own.frontend.fc.weight, base.audio_encoder.frontend.fc.weight)
    from musicsearch.teachers.musicnn import load_pretrained

    torch.testing.assert_close(
        model.audio_encoder.backbones["MSD_musicnn"].dense.weight, load_pretrained("MSD_musicnn").dense.weight
    )
    test = read_manifest(tmp_path / "real_test.jsonl")
    assert test and all(t.split == "test" for t in test)
    # the same seed gives the same head (same process: float32 tolerance only for safety)
    out2 = train_head(cfg, base, real, real_feats, corpus, corpus_feats, out_dir=tmp_path / "again", name="m")
    for h1, h2 in zip(out["history"], out2["history"]):
        assert h2 == pytest.approx(h1, rel=1e-4, abs=1e-4)


def test_train_head_with_the_tag_ranking_loss(tmp_path) -> None:
    pytest.importorskip("musicnn.configuration", reason="needs `pip install --no-deps musicnn` (checkpoint files)")
    torch.manual_seed(0)
    base = build_model(model_config("small", text_encoder="tiny-bert"))
    rng = np.random.default_rng(0)
    real = _windows(40, {0: "valid", 1: "test"}, "r", tags=False)
    kind = np.arange(40) % 2
    # two kinds of window whose teachers rank different tags first
    probs = np.full((40, 100), 0.05, np.float32)
    probs[kind == 0, 3] = 0.95
    probs[kind == 1, 7] = 0.95
    feats = rng.normal(size=(40, 3140)).astype(np.float32)
    feats[:, :10] += 3.0 * kind[:, None]
    real_feats = BackboneFeatures([w.track_id for w in real], feats, probs)
    cfg = HeadTrainConfig(preset="musicnn-msd-small", epochs=4, batch_size=16, seed=0, soft_weight=0.0, rank_weight=1.0)
    out = train_head(cfg, base, real, real_feats, out_dir=tmp_path, name="m")
    ranks = [h["rank"] for h in out["history"]]
    assert all(np.isfinite(r) for r in ranks) and all("soft" not in h for h in out["history"])
    # the listwise loss is learned: it falls below its first epoch's value
    assert ranks[-1] < ranks[0]


def test_checkpoint_keeps_the_base_models_fine_tuned_text_layer(tmp_path) -> None:
    """A base model whose top MiniLM layer was fine-tuned: the trained head's checkpoint must store that layer
    (the frozen lower layers come back from PyPI) and load strictly."""
    pytest.importorskip("musicnn.configuration", reason="needs `pip install --no-deps musicnn` (checkpoint files)")
    torch.manual_seed(0)
    cfg = model_config("small", text_encoder="minilm").replace(text={"trainable_layers": 1})
    base = build_model(cfg).eval()
    real = _windows(20, {0: "valid", 1: "test"}, "r", tags=False)
    rng = np.random.default_rng(1)
    feats = BackboneFeatures(
        [w.track_id for w in real],
        rng.normal(size=(20, 3140)).astype(np.float32),
        rng.uniform(size=(20, 100)).astype(np.float32),
    )
    hcfg = HeadTrainConfig(preset="musicnn-msd-small-residual", epochs=1, batch_size=8, seed=0)
    train_head(hcfg, base, real, feats, out_dir=tmp_path, name="m")
    model = load_model_file(tmp_path / "m.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(["calm piano"]), base.encode_text(["calm piano"]))
