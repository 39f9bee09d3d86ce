"""Head training of a musicnn tower on cached features with soft teacher targets (musicsearch.train.heads)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from musicsearch.data.manifest import Track, read_manifest
from musicsearch.errors import ConfigError
from musicsearch.models.checkpoint import load_model_file
from musicsearch.models.registry import PRESETS, build_model, model_config
from musicsearch.train.heads import BackboneFeatures, HeadTrainConfig, feature_columns, head_inputs, train_head


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


def test_head_inputs_insert_the_cached_probabilities_before_the_own_feature() -> None:
    both_small, _ = PRESETS.get("musicnn-both-small")()  # the cached layout: MSD, MTT, own; probs MSD, MTT
    tags, _ = PRESETS.get("musicnn-both-small-residual-tags")()
    rng = np.random.default_rng(0)
    cached = BackboneFeatures(["a", "b", "c"], rng.normal(size=(3, 3140)).astype(np.float32),
                              rng.random(size=(3, 100)).astype(np.float32))  # fmt: skip
    x = head_inputs(both_small, tags, cached)
    assert x.shape == (3, 3240) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:, :3012], cached.features[:, :3012])
    np.testing.assert_array_equal(x[:, 3012:3112], cached.probs)
    np.testing.assert_array_equal(x[:, 3112:], cached.features[:, 3012:])
    mtt_tags = dataclasses.replace(tags, backbones=("MTT_musicnn",))
    y = head_inputs(both_small, mtt_tags, cached)
    want = np.c_[cached.features[:, 1506:3012], cached.probs[:, 50:], cached.features[:, 3012:]]
    np.testing.assert_array_equal(y, want)
    # without tag inputs, head_inputs is the plain column slice
    np.testing.assert_array_equal(head_inputs(both_small, both_small, cached), cached.features)
    with pytest.raises(ConfigError, match="head_inputs"):
        feature_columns(both_small, tags)
    with pytest.raises(ConfigError, match="probabilities"):
        head_inputs(both_small, tags, BackboneFeatures(cached.ids, cached.features, cached.probs[:, :50]))


def test_a_tag_input_tower_starts_as_the_plain_checkpoint(tmp_path) -> None:
    pytest.importorskip("musicnn.configuration", reason="needs `pip install --no-deps musicnn` (checkpoint files)")
    from musicsearch.models.checkpoint import save_model
    from musicsearch.train.heads import _start_from, build_tower

    torch.manual_seed(0)
    base = build_model(model_config("small", text_encoder="tiny-bert")).eval()
    plain = build_tower("musicnn-both-small-residual", base).eval()
    with torch.no_grad():  # a trained-looking head: every weight non-zero
        for p in [*plain.audio_encoder.head.parameters(), *plain.audio_projector.parameters()]:
            p.copy_(0.05 * torch.randn_like(p))
    save_model(plain, tmp_path / "plain.safetensors")
    tags = build_tower("musicnn-both-small-residual-tags", base).eval()
    _start_from(tags, str(tmp_path / "plain.safetensors"))
    w = tags.audio_encoder.head[1].weight
    assert w.shape == (512, 3240) and torch.count_nonzero(w[:, 3012:3112]) == 0
    x = 0.1 * torch.randn(2, 48_000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(tags.encode_audio(x), plain.encode_audio(x), rtol=1e-5, atol=1e-5)


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


def _tagged_corpus() -> tuple[list[Track], BackboneFeatures]:
    """20 tagged corpus windows (two tag sets, a valid split) with random cached features (seeded)."""
    corpus = _windows(20, {0: "valid"}, "c", tags=True)
    c_feats = BackboneFeatures(
        [w.track_id for w in corpus],
        np.random.default_rng(1).normal(size=(20, 3140)).astype(np.float32),
        np.zeros((20, 100), np.float32),
    )
    return corpus, c_feats


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


def test_row_weighted_info_nce_matches_plain_loop_and_info_nce() -> None:
    from musicsearch.losses.contrastive import info_nce
    from musicsearch.train.heads import row_weighted_info_nce

    rng = np.random.default_rng(3)
    a = rng.normal(size=(5, 6))
    t = rng.normal(size=(5, 6))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    w = np.array([1.0, 0.0, 2.5, 1.0, 0.3])
    scale = 7.0

    def oracle(weights: np.ndarray) -> float:
        total = 0.0
        for i in range(5):
            a2t = [scale * float(a[i] @ t[j]) for j in range(5)]
            t2a = [scale * float(t[i] @ a[j]) for j in range(5)]
            ce = [np.log(np.sum(np.exp(row))) - row[i] for row in (np.array(a2t), np.array(t2a))]
            total += weights[i] * 0.5 * (ce[0] + ce[1])
        return total / 5

    at, tt = torch.from_numpy(a).float(), torch.from_numpy(t).float()
    got = row_weighted_info_nce(at, tt, torch.tensor(scale), torch.from_numpy(w))
    # float32 cosines (~1e-7) times scale 7 through log-sum-exp: inside 1e-5 relative
    assert abs(float(got) - oracle(w)) <= 1e-5 * max(1.0, oracle(w))
    ones = row_weighted_info_nce(at, tt, torch.tensor(scale), torch.ones(5))
    torch.testing.assert_close(ones, info_nce(at, tt, torch.tensor(scale)), rtol=1e-5, atol=1e-6)


def _genre_setup() -> tuple[list[Track], BackboneFeatures]:
    from musicsearch.teachers.musicnn import MSD_LABELS, MTT_LABELS

    real = _windows(40, {0: "valid", 1: "test"}, "r", tags=False)
    kind = np.arange(40) % 2
    rng = np.random.default_rng(0)
    # two kinds of window: the teachers call one `classical`, the other `rock` (both teachers' columns)
    probs = np.full((40, 100), 0.05, np.float32)
    for genre, k in (("classical", 0), ("rock", 1)):
        for off, labels in ((0, MSD_LABELS), (50, MTT_LABELS)):
            if genre in labels:
                probs[kind == k, off + list(labels).index(genre)] = 0.9
    feats = rng.normal(size=(40, 3140)).astype(np.float32)
    feats[:, :10] += 3.0 * kind[:, None]
    return real, BackboneFeatures([w.track_id for w in real], feats, probs)


def test_train_head_genre_ranking_and_power_knobs(tmp_path) -> None:
    pytest.importorskip("musicnn.configuration", reason="needs `pip install --no-deps musicnn` (checkpoint files)")
    torch.manual_seed(0)
    base = build_model(model_config("small", text_encoder="tiny-bert"))
    real, feats = _genre_setup()
    cfg = HeadTrainConfig(preset="musicnn-msd-small", epochs=4, batch_size=16, seed=0, soft_weight=0.0,
                          genre_rank_weight=1.0, genre_rank_power=3.0)  # fmt: skip
    out = train_head(cfg, base, real, feats, out_dir=tmp_path, name="g")
    genre = [h["genre_rank"] for h in out["history"]]
    assert all(np.isfinite(g) for g in genre) and all("rank" not in h for h in out["history"])
    assert genre[-1] < genre[0]  # the genre ranking is learned
    # the power changes the target, so the loss values differ from the plain target's
    plain = train_head(dataclasses.replace(cfg, genre_rank_power=1.0), base, real, feats, name="p")
    assert plain["history"][0]["genre_rank"] != pytest.approx(genre[0], rel=1e-3)
    with pytest.raises(ConfigError, match="rank_power"):
        train_head(dataclasses.replace(cfg, rank_power=0.0), base, real, feats)


def test_train_head_corpus_weight_and_init_from(tmp_path) -> None:
    pytest.importorskip("musicnn.configuration", reason="needs `pip install --no-deps musicnn` (checkpoint files)")
    torch.manual_seed(0)
    base = build_model(model_config("small", text_encoder="tiny-bert"))
    real, feats = _genre_setup()
    corpus, c_feats = _tagged_corpus()
    cfg = HeadTrainConfig(preset="musicnn-msd-small", epochs=2, batch_size=16, seed=0)
    one = train_head(cfg, base, real, feats, corpus, c_feats, out_dir=tmp_path, name="one")
    heavy = train_head(dataclasses.replace(cfg, corpus_weight=4.0), base, real, feats, corpus, c_feats)
    # the first step is the same model on the same batch: only the corpus rows' weight differs
    assert heavy["history"][0]["contrastive"] > one["history"][0]["contrastive"] * 1.2
    # init_from: the training starts from a trained head; with lr 0 it stays that head
    start = load_model_file(tmp_path / "one.safetensors")
    again = train_head(dataclasses.replace(cfg, epochs=1, lr=0.0, init_from=str(tmp_path / "one.safetensors")),
                       base, real, feats, corpus, c_feats, out_dir=tmp_path, name="again")  # fmt: skip
    model = load_model_file(again["checkpoint"])
    for name, p in start.state_dict().items():
        if name.startswith(("audio_encoder.head.", "audio_projector.")):
            torch.testing.assert_close(model.state_dict()[name], p)
    with pytest.raises(ConfigError, match="init_from"):
        train_head(dataclasses.replace(cfg, preset="musicnn-both-small", init_from=str(tmp_path / "one.safetensors")),
                   base, real, feats)  # fmt: skip


def test_anchor_loss_matches_a_plain_loop() -> None:
    from musicsearch.train.heads import anchor_loss

    rng = np.random.default_rng(3)
    a, s = rng.normal(size=(6, 8)), rng.normal(size=(6, 8))
    want = np.mean([1.0 - a[i] @ s[i] / (np.linalg.norm(a[i]) * np.linalg.norm(s[i])) for i in range(6)])
    got = anchor_loss(torch.from_numpy(a).float(), torch.from_numpy(s).float())
    assert abs(float(got) - want) <= 1e-6  # float32 cosines of 8 terms
    assert float(anchor_loss(torch.from_numpy(a).float(), 3.0 * torch.from_numpy(a).float())) == pytest.approx(
        0.0, abs=1e-6
    )


def _genre_base() -> tuple[torch.nn.Module, list[Track], BackboneFeatures]:
    """A small base model (seeded) and :func:`_genre_setup`'s windows; skips without the musicnn checkpoints."""
    pytest.importorskip("musicnn.configuration", reason="needs `pip install --no-deps musicnn` (checkpoint files)")
    torch.manual_seed(0)
    return build_model(model_config("small", text_encoder="tiny-bert")), *_genre_setup()


def test_anchor_keeps_a_fine_tuned_head_near_its_start(tmp_path) -> None:
    base, real, feats = _genre_base()
    cfg = HeadTrainConfig(preset="musicnn-msd-small", epochs=2, batch_size=16, seed=0)
    start_path = train_head(cfg, base, real, feats, out_dir=tmp_path, name="start")["checkpoint"]
    start = load_model_file(start_path).eval()
    tune = dataclasses.replace(cfg, epochs=6, lr=2e-4, genre_rank_weight=5.0, init_from=start_path)
    x = torch.from_numpy(feats.features[:, feature_columns(PRESETS.get("musicnn-both-small")()[0],
                                                            start.config.audio)])  # fmt: skip

    def drift(anchor: float) -> float:
        out = train_head(dataclasses.replace(tune, anchor_weight=anchor), base, real, feats, out_dir=tmp_path,
                         name=f"a{anchor}")  # fmt: skip
        if anchor:
            assert all("anchor" in h and h["anchor"] >= 0 for h in out["history"])
        tuned = load_model_file(out["checkpoint"]).eval()
        with torch.no_grad():
            cos = torch.nn.functional.cosine_similarity(tuned.joint_from_features(x), start.joint_from_features(x))
        return float(1.0 - cos.mean())

    free, anchored = drift(0.0), drift(100.0)
    assert free > 0.0 and anchored < 0.5 * free
    with pytest.raises(ConfigError, match="anchor_weight"):
        train_head(dataclasses.replace(cfg, anchor_weight=-1.0), base, real, feats)


def test_train_head_with_tag_inputs(tmp_path) -> None:
    base, real, feats = _genre_base()
    plain = HeadTrainConfig(preset="musicnn-both-small-residual", epochs=1, batch_size=16, seed=0)
    start = train_head(plain, base, real, feats, out_dir=tmp_path, name="plain")["checkpoint"]
    cfg = dataclasses.replace(plain, preset="musicnn-both-small-residual-tags", epochs=2, genre_rank_weight=1.0,
                              init_from=start)  # fmt: skip
    out = train_head(cfg, base, real, feats, out_dir=tmp_path, name="t")
    model = load_model_file(out["checkpoint"]).eval()
    assert model.config.audio.tag_inputs and model.audio_encoder.head[1].weight.shape[1] == 3240
    # the head reads the probabilities: its weights for them were trained away from their zero start
    assert torch.count_nonzero(model.audio_encoder.head[1].weight[:, 3012:3112]) > 0


def test_track_means_average_each_recordings_windows() -> None:
    from musicsearch.train.heads import track_means

    windows = _windows(8, {}, "r", tags=False)  # recordings r0 (windows 0-3) and r1 (4-7)
    values = np.arange(16, dtype=np.float32).reshape(8, 2)
    got = track_means(values, windows)
    np.testing.assert_allclose(got[:4], np.tile(values[:4].mean(axis=0), (4, 1)))
    np.testing.assert_allclose(got[4:], np.tile(values[4:].mean(axis=0), (4, 1)))


def test_genre_track_targets_change_the_genre_loss(tmp_path) -> None:
    base, real, feats = _genre_base()
    # one window of each recording disagrees with the rest: the track target smooths it away
    probs = feats.probs.copy()
    probs[::4] = probs[1::4]
    feats = BackboneFeatures(feats.ids, feats.features, probs)
    cfg = HeadTrainConfig(preset="musicnn-msd-small", epochs=1, batch_size=16, seed=0, genre_rank_weight=1.0)
    own = train_head(cfg, base, real, feats)["history"][0]["genre_rank"]
    track = train_head(dataclasses.replace(cfg, genre_track_targets=True), base, real, feats)["history"][0]
    assert np.isfinite(track["genre_rank"]) and track["genre_rank"] != pytest.approx(own, rel=1e-4)


def test_head_inputs_from_a_cache_of_a_tag_input_tower() -> None:
    tags, _ = PRESETS.get("musicnn-both-small-residual-tags")()
    plain, _ = PRESETS.get("musicnn-both-small-residual")()
    rng = np.random.default_rng(1)
    probs = rng.random(size=(2, 100)).astype(np.float32)
    body, own = rng.normal(size=(2, 3012)).astype(np.float32), rng.normal(size=(2, 128)).astype(np.float32)
    cached = BackboneFeatures(["a", "b"], np.c_[body, probs, own], probs)  # the tag tower's own layout
    np.testing.assert_array_equal(head_inputs(tags, tags, cached), cached.features)
    np.testing.assert_array_equal(head_inputs(tags, plain, cached), np.c_[body, own])


def test_wise_saves_the_interpolation_of_start_and_trained_head(tmp_path) -> None:
    from musicsearch.train.heads import TRAINED

    base, real, feats = _genre_base()
    cfg = HeadTrainConfig(preset="musicnn-msd-small", epochs=2, batch_size=16, seed=0)
    start_path = train_head(cfg, base, real, feats, out_dir=tmp_path, name="start")["checkpoint"]
    tune = dataclasses.replace(cfg, epochs=3, lr=1e-3, genre_rank_weight=5.0, init_from=start_path)
    full = train_head(tune, base, real, feats, out_dir=tmp_path, name="full")
    part = train_head(dataclasses.replace(tune, wise=0.25), base, real, feats, out_dir=tmp_path, name="part")
    assert part["best_epoch"] == full["best_epoch"]  # the same training; only what is saved differs
    s, f, p = (load_model_file(c).state_dict() for c in (start_path, full["checkpoint"], part["checkpoint"]))
    moved = 0
    for k, v in f.items():
        if k.startswith(TRAINED):
            want = 0.75 * s[k].double() + 0.25 * v.double()
            torch.testing.assert_close(p[k].double(), want, atol=1e-6, rtol=1e-5)
            moved += int(not torch.allclose(v, s[k]))
        else:  # frozen parts: the start's
            torch.testing.assert_close(p[k], v, msg=k)
    assert moved > 0  # the fine-tuning did move the head, so the check above can fail
    with pytest.raises(ConfigError, match="wise"):
        train_head(dataclasses.replace(cfg, wise=1.5), base, real, feats)
    with pytest.raises(ConfigError, match="init_from"):  # a plain tower's fresh head is random: nothing to fall back to
        train_head(dataclasses.replace(cfg, wise=0.5), base, real, feats)


def test_text_projection_trains_the_projection_and_nothing_else_of_the_text_side(tmp_path) -> None:
    base, real, feats = _genre_base()
    cfg = HeadTrainConfig(preset="musicnn-msd-small", epochs=3, batch_size=16, seed=0, lr=1e-3,
                          genre_rank_weight=1.0, text_projection=True)  # fmt: skip
    out = train_head(cfg, base, real, feats, out_dir=tmp_path, name="tp")
    model = load_model_file(out["checkpoint"]).eval()
    words = ["classical", "rock", "a calm piano piece"]
    with torch.no_grad():
        # the encoder is the base model's; only the projection after it was trained
        enc = base.eval().text_encoder(words)
        torch.testing.assert_close(model.text_encoder(words), enc)
        torch.testing.assert_close(model.encode_text(words), model.text_projector(enc))
        moved = (model.encode_text(words) - base.encode_text(words)).abs().max()
    assert moved > 1e-3
    # a frozen text side (the default) saves the base model's projection
    frozen = train_head(dataclasses.replace(cfg, text_projection=False), base, real, feats, out_dir=tmp_path, name="f")
    with torch.no_grad():
        kept = load_model_file(frozen["checkpoint"]).eval()
        torch.testing.assert_close(kept.encode_text(words), base.encode_text(words))


def test_wise_mixes_a_trained_text_projection_too(tmp_path) -> None:
    from musicsearch.train.heads import TEXT_TRAINED, TRAINED

    base, real, feats = _genre_base()
    cfg = HeadTrainConfig(preset="musicnn-msd-small", epochs=2, batch_size=16, seed=0)
    start_path = train_head(cfg, base, real, feats, out_dir=tmp_path, name="start")["checkpoint"]
    tune = dataclasses.replace(cfg, lr=1e-3, genre_rank_weight=5.0, init_from=start_path, text_projection=True)
    full = train_head(tune, base, real, feats, out_dir=tmp_path, name="full")
    part = train_head(dataclasses.replace(tune, wise=0.5), base, real, feats, out_dir=tmp_path, name="part")
    s, f, p = (load_model_file(c).state_dict() for c in (start_path, full["checkpoint"], part["checkpoint"]))
    text_keys = [k for k in f if k.startswith(TEXT_TRAINED)]
    assert text_keys and any(not torch.allclose(f[k], s[k]) for k in text_keys)
    for k in [*text_keys, *(k for k in f if k.startswith(TRAINED))]:
        torch.testing.assert_close(p[k].double(), 0.5 * s[k].double() + 0.5 * f[k].double(), atol=1e-6, rtol=1e-5)


def test_text_anchor_keeps_the_trained_words_near_their_start(tmp_path) -> None:
    base, real, feats = _genre_base()
    cfg = HeadTrainConfig(preset="musicnn-msd-small", epochs=4, batch_size=16, seed=0, lr=3e-3,
                          genre_rank_weight=5.0, text_projection=True)  # fmt: skip
    words = ["classical", "rock", "jazz", "pop"]
    with torch.no_grad():
        start = base.eval().encode_text(words)

    def drift(weight: float) -> float:
        out = train_head(dataclasses.replace(cfg, text_anchor_weight=weight), base, real, feats, out_dir=tmp_path,
                         name=f"t{weight}")  # fmt: skip
        if weight:
            assert all("text_anchor" in h and h["text_anchor"] >= 0 for h in out["history"])
        with torch.no_grad():
            now = load_model_file(out["checkpoint"]).eval().encode_text(words)
        return float(1.0 - torch.nn.functional.cosine_similarity(now, start).mean())

    free, anchored = drift(0.0), drift(100.0)
    assert free > 0.0 and anchored < 0.5 * free
    with pytest.raises(ConfigError, match="text_anchor_weight"):
        train_head(dataclasses.replace(cfg, text_projection=False, text_anchor_weight=1.0), base, real, feats)


def test_text_real_only_keeps_the_corpus_from_moving_the_words(tmp_path) -> None:
    base, real, feats = _genre_base()
    corpus, c_feats = _tagged_corpus()
    # only the corpus texts' contrastive term is left: real windows have no text and no teacher terms
    cfg = HeadTrainConfig(preset="musicnn-msd-small", epochs=2, batch_size=16, seed=0, lr=1e-3, weight_decay=0.0,
                          soft_weight=0.0, pseudo_captions=False, text_projection=True)  # fmt: skip
    words = ["a slow piano piece", "drums", "fast"]

    def text_of(c: HeadTrainConfig, name: str) -> torch.Tensor:
        out = train_head(c, base, real, feats, corpus, c_feats, out_dir=tmp_path, name=name)
        with torch.no_grad():
            return load_model_file(out["checkpoint"]).eval().encode_text(words)

    with torch.no_grad():
        start = base.eval().encode_text(words)
    assert (text_of(cfg, "all") - start).abs().max() > 1e-3  # the corpus moves the words ...
    torch.testing.assert_close(text_of(dataclasses.replace(cfg, text_real_only=True), "real"), start)  # ... or not
    with pytest.raises(ConfigError, match="text_real_only"):
        train_head(dataclasses.replace(cfg, text_projection=False, text_real_only=True), base, real, feats)


def test_keep_loss_matches_a_plain_loop() -> None:
    from musicsearch.train.heads import keep_distributions, keep_loss

    rng = np.random.default_rng(5)
    a, w, a0 = rng.normal(size=(5, 8)), rng.normal(size=(7, 8)), rng.normal(size=(5, 8))
    scale = 12.0

    def dist(x: np.ndarray) -> np.ndarray:
        rows = []
        for i in range(x.shape[0]):
            z = [scale * x[i] @ w[j] / (np.linalg.norm(x[i]) * np.linalg.norm(w[j])) for j in range(w.shape[0])]
            e = np.exp(np.array(z) - max(z))
            rows.append(e / e.sum())
        return np.array(rows)

    p0, p = dist(a0), dist(a)
    want = np.mean([sum(p0[i, j] * np.log(p0[i, j] / p[i, j]) for j in range(7)) for i in range(5)])
    t = lambda x: torch.from_numpy(x).float()  # noqa: E731
    start = keep_distributions(t(a0), t(w), scale)
    np.testing.assert_allclose(start.numpy(), p0, rtol=1e-4, atol=1e-6)  # float32 softmax of 7 logits up to 12
    assert abs(float(keep_loss(t(a), t(w), start, scale)) - want) <= 1e-4 * max(1.0, want)
    # the start itself (any norm) has nothing to keep
    assert float(keep_loss(3.0 * t(a0), t(w), start, scale)) == pytest.approx(0.0, abs=1e-5)


def test_keep_weight_keeps_the_corpus_windows_view_of_the_words(tmp_path) -> None:
    from musicsearch.train.heads import keep_distributions

    base, real, feats = _genre_base()
    corpus, c_feats = _tagged_corpus()
    cfg = HeadTrainConfig(preset="musicnn-msd-small", epochs=2, batch_size=16, seed=0)
    start_path = train_head(cfg, base, real, feats, corpus, c_feats, out_dir=tmp_path, name="start")["checkpoint"]
    tune = dataclasses.replace(cfg, epochs=5, lr=3e-3, genre_rank_weight=5.0, init_from=start_path,
                               text_projection=True)  # fmt: skip
    words = ["drums", "fast", "piano", "slow"]  # the corpus's tags
    start = load_model_file(start_path).eval()
    cols = feature_columns(PRESETS.get("musicnn-both-small")()[0], start.config.audio)
    x = torch.from_numpy(c_feats.features[:, cols])
    scale = float(start.logit_scale.detach().exp())  # the scale the loss compares at

    def view(path: str) -> torch.Tensor:
        m = load_model_file(path).eval()
        with torch.no_grad():
            return keep_distributions(m.joint_from_features(x), m.encode_text(words), scale)

    p0 = view(start_path)

    def moved(weight: float) -> float:
        out = train_head(dataclasses.replace(tune, keep_weight=weight), base, real, feats, corpus, c_feats,
                         out_dir=tmp_path, name=f"k{weight}")  # fmt: skip
        if weight:
            assert all("keep" in h and h["keep"] >= 0 for h in out["history"])
        p = view(out["checkpoint"])
        return float((p0 * (p0 / p).log()).sum(dim=-1).mean())  # KL(start || new) per window, as the loss

    free, kept = moved(0.0), moved(100.0)
    assert free > 0.0 and kept < 0.5 * free
    with pytest.raises(ConfigError, match="keep_weight"):
        train_head(dataclasses.replace(cfg, keep_weight=1.0), base, real, feats)  # no corpus: no words to keep
    with pytest.raises(ConfigError, match="keep_weight"):
        train_head(dataclasses.replace(cfg, keep_weight=-1.0), base, real, feats, corpus, c_feats)
