"""The pretrained musicnn audio towers: shapes, frozen and trainable parameter sets, checkpoint round trip,
determinism, and (with the ``musicnn`` package) agreement of the backbone with the teacher tagger."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicsearch.errors import ConfigError
from musicsearch.models.checkpoint import load_model_file, save_model
from musicsearch.models.config import ModelConfig
from musicsearch.models.musicnn_tower import MusicnnAudioEncoder, backbone_dim
from musicsearch.models.registry import PRESETS, build_model, model_config
from musicsearch.teachers.musicnn import log_mel, log_mel_batch

TOWERS = (
    "musicnn-mtt",
    "musicnn-msd",
    "musicnn-both",
    "musicnn-both-small",
    "musicnn-msd-small",
    "musicnn-both-small-residual",
    "musicnn-both-small-residual-tags",
)


def _model(preset: str, **audio: object) -> torch.nn.Module:
    cfg = model_config(preset, text_encoder="tiny-bert")
    if audio:
        cfg = cfg.replace(audio=dict(audio))
    torch.manual_seed(0)
    return build_model(cfg, pretrained_audio=False)


def _waves(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(n, 48_000, generator=g)


@pytest.mark.parametrize("preset", TOWERS)
def test_shapes(preset: str) -> None:
    model = _model(preset).eval()
    enc = model.audio_encoder
    assert isinstance(enc, MusicnnAudioEncoder)
    cfg = model.config.audio
    n_nets = len(cfg.backbones)
    assert backbone_dim(cfg) == n_nets * 1506 + (50 * n_nets if cfg.tag_inputs else 0) + (128 if cfg.join_own else 0)
    with torch.no_grad():
        feats, logits = enc.backbone(_waves(3))
        emb = model.encode_audio(_waves(3))
    assert feats.shape == (3, backbone_dim(cfg))
    assert [tuple(lg.shape) for lg in logits] == [(3, 50)] * n_nets
    assert emb.shape == (3, model.config.joint_dim)


def test_tag_inputs_are_the_networks_probabilities_before_the_own_feature() -> None:
    plain = _model("musicnn-both-small-residual").eval()
    tags = _model("musicnn-both-small-residual-tags").eval()
    enc, ref = tags.audio_encoder, plain.audio_encoder
    enc.backbones.load_state_dict(ref.backbones.state_dict())
    enc.own.load_state_dict(ref.own.state_dict())
    x = _waves(3, seed=5)
    with torch.no_grad():
        feats, logits = enc.backbone(x)
        want, want_logits = ref.backbone(x)
    assert feats.shape == (3, 2 * 1506 + 100 + 128)
    torch.testing.assert_close(feats[:, :3012], want[:, :3012])
    torch.testing.assert_close(feats[:, 3012:3112], torch.sigmoid(torch.cat(want_logits, dim=1)))
    torch.testing.assert_close(feats[:, 3112:], want[:, 3012:])  # the own tower's feature stays last
    for a, b in zip(logits, want_logits):
        torch.testing.assert_close(a, b)


def test_dense_layer_readout() -> None:
    model = _model("musicnn-both", backbone_layer="dense").eval()
    with torch.no_grad():
        feats, _ = model.audio_encoder.backbone(_waves(2))
    assert feats.shape == (2, 400)


def test_config_validation() -> None:
    cfg = model_config("musicnn-msd", text_encoder="tiny-bert")
    with pytest.raises(ConfigError, match="backbones"):
        cfg.replace(audio={"backbones": ("MSD_vgg",)})
    with pytest.raises(ConfigError, match="47,872"):
        cfg.replace(audio={"window_samples": 16_000})
    # a config written to a checkpoint comes back equal (tuples included)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_frozen_backbone_gets_no_gradient_and_keeps_eval_statistics() -> None:
    model = _model("musicnn-both-small")
    enc = model.audio_encoder
    backbone_params = {id(p) for m in (enc.backbones, enc.own) for p in m.parameters()}
    trainable = {id(p) for p in model.audio_encoder.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in enc.head.parameters()}
    assert not trainable & backbone_params
    model.train()
    assert not enc.backbones.training and not enc.own.training and enc.head.training
    before = {k: v.clone() for k, v in enc.backbones.state_dict().items()}
    loss = model.encode_audio(_waves(2)).square().sum()
    loss.backward()
    assert all(p.grad is None for m in (enc.backbones, enc.own) for p in m.parameters())
    assert all(p.grad is not None for p in enc.head.parameters())
    after = enc.backbones.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running statistics untouched


def test_trainable_backbone_gets_gradients() -> None:
    model = _model("musicnn-msd", backbone_trainable=True)
    enc = model.audio_encoder
    assert all(p.requires_grad for p in enc.backbones.parameters())
    model.train()
    assert enc.backbones.training
    model.encode_audio(_waves(2)).square().sum().backward()
    net = enc.backbones["MSD_musicnn"]
    assert net.timbral_74.conv.weight.grad is not None and net.timbral_74.conv.weight.grad.abs().sum() > 0
    # the tag output layer is not on the embedding path
    assert net.out.weight.grad is None


def test_deterministic_and_batch_independent() -> None:
    model = _model("musicnn-both-small").eval()
    x = _waves(4, seed=1)
    with torch.no_grad():
        a = model.encode_audio(x)
        b = model.encode_audio(x)
        singles = torch.cat([model.encode_audio(x[i : i + 1]) for i in range(4)])
    assert torch.equal(a, b)
    # batched and single-window convolutions may sum in another order: float32 tolerance
    torch.testing.assert_close(singles, a, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("preset", "half"), [("musicnn-both-small", False), ("musicnn-both-small", True),
                                               ("musicnn-msd-small-residual", False)])  # fmt: skip
def test_checkpoint_round_trip(tmp_path, preset: str, half: bool) -> None:
    model = _model(preset).eval()
    path = tmp_path / "m.safetensors"
    save_model(model, path, half=half)
    loaded = load_model_file(path)
    assert loaded.config == model.config
    assert isinstance(loaded.audio_encoder, MusicnnAudioEncoder)
    x = _waves(2, seed=2)
    with torch.no_grad():
        want, got = model.encode_audio(x), loaded.encode_audio(x)
    if half:
        # float16 weights: relative error of ~1e-3 per weight, accumulated through the network
        cos = torch.nn.functional.cosine_similarity(want, got)
        assert float(cos.min()) > 0.99
    else:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_presets_are_registered() -> None:
    assert set(TOWERS) <= set(PRESETS.names())
    assert model_config("paper").audio.kind == "transformer"  # the paper's tower is unchanged


def test_log_mel_batch_matches_log_mel() -> None:
    x = _waves(3, seed=3)
    batch = log_mel_batch(x)
    for i in range(3):
        torch.testing.assert_close(batch[i], log_mel(x[i]), rtol=1e-5, atol=1e-5)


def test_pretrained_backbone_matches_the_teacher() -> None:
    pytest.importorskip("musicnn.configuration", reason="needs `pip install --no-deps musicnn` (checkpoint files)")
    from musicsearch.teachers.tagger import MusicnnTagger

    model = build_model(model_config("musicnn-both", text_encoder="tiny-bert")).eval()
    x = _waves(2, seed=4)
    with torch.no_grad():
        _, logits = model.audio_encoder.backbone(x)
    for name, lg in zip(model.config.audio.backbones, logits):
        tagger = MusicnnTagger.load(name)
        for i in range(2):
            probs, _ = tagger.run_patches(tagger.patches(x[i].numpy()))
            np.testing.assert_allclose(torch.sigmoid(lg[i]).numpy(), probs[0], atol=1e-5)
