"""Model shapes, parameter counts, checkpoint key layout, configs and our checkpoint format."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from musicsearch.errors import CheckpointError, ConfigError
from musicsearch.models.checkpoint import load_model_file, read_checkpoint, save_model
from musicsearch.models.config import ModelConfig
from musicsearch.models.dual_encoder import count_parameters
from musicsearch.models.registry import build_model, model_config


def test_paper_audio_encoder_shape_and_size() -> None:
    cfg = model_config("paper", text_encoder="glove")
    model = build_model(cfg).eval()
    n = count_parameters(model.audio_encoder)
    assert 4.5e6 < n < 4.7e6  # the paper: about 4.6 M
    assert cfg.audio.n_frames == 992 and cfg.audio.n_tokens == 62
    with torch.no_grad():
        tokens = model.audio_encoder.frontend(model.audio_encoder.audio_representation(torch.randn(1, 158_560)))
        assert tokens.shape == (1, 62, 256)
        assert model.encode_audio(torch.randn(2, 158_560)).shape == (2, 128)


def test_keys_follow_the_published_layout() -> None:
    model = build_model(model_config("paper", text_encoder="minilm"))
    keys = set(model.state_dict())
    for k in [
        "logit_scale",
        "head.logit_scale",
        "audio_encoder.cls_token",
        "audio_encoder.pos_embedding",
        "audio_encoder.audio_representation.spec_fn.window",
        "audio_encoder.audio_representation.mel_scale.fb",
        "audio_encoder.frontend.input_bn.weight",
        "audio_encoder.frontend.layer1.conv_3.weight",
        "audio_encoder.frontend.layer4.bn_2.running_var",
        "audio_encoder.frontend.fc.weight",
        "audio_encoder.transformer.layers.3.0.fn.norm.weight",
        "audio_encoder.transformer.layers.0.0.fn.fn.to_qkv.weight",
        "audio_encoder.transformer.layers.0.0.fn.fn.to_out.0.bias",
        "audio_encoder.transformer.layers.0.1.fn.fn.net.3.weight",
        "audio_projector.0.weight",
        "audio_projector.1.weight",
        "text_projector.1.weight",
    ]:
        assert k in keys, k
    sd = model.state_dict()
    assert sd["audio_encoder.pos_embedding"].shape == (1, 513, 256)
    assert sd["audio_encoder.transformer.layers.0.0.fn.fn.to_qkv.weight"].shape == (768, 256)
    assert "audio_encoder.transformer.layers.0.0.fn.fn.to_qkv.bias" not in keys
    assert "audio_encoder.frontend.layer2.conv_3.weight" not in keys
    assert model.logit_scale is model.head.logit_scale


@pytest.mark.parametrize(
    ("objective", "text", "rep"),
    [
        (o, t, r)
        for o in ("contrastive", "triplet")
        for t in ("tiny-bert", "glove")
        for r in ("tag", "sentence", "stochastic")
    ]
    + [("classification", None, "tag")],
)
def test_every_variant_is_a_config(objective: str, text: str | None, rep: str) -> None:
    cfg = model_config("debug", objective=objective, text_encoder=text, text_rep=rep, tags=("a", "b", "c"))
    model = build_model(cfg)
    wave = torch.randn(4, cfg.audio.window_samples)
    tags = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], dtype=torch.float32)
    out = model(wave, ["a", "b", "c", "a, b"], tags, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert model.audio_encoder.cls_token.grad is not None
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_classification_text_is_its_tag_rows() -> None:
    cfg = model_config("debug", objective="classification", tags=("rock", "jazz"))
    model = build_model(cfg)
    assert torch.equal(model.encode_text(["jazz"])[0], model.head.fc_cls.weight[1])
    with pytest.raises(ConfigError, match="only knows"):
        model.encode_text(["bossa nova"])


def test_bad_configs_rejected() -> None:
    with pytest.raises(ConfigError):
        model_config("nope")
    with pytest.raises(ConfigError, match="objective"):
        model_config("debug", objective="hinge")
    with pytest.raises(ConfigError, match="text_rep"):
        model_config("debug", text_rep="paragraph")


def test_checkpoint_round_trip_is_exact(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(model_config("debug", tags=("a", "b"))).eval()
    path = tmp_path / "m.safetensors"
    digest = save_model(model, path, meta={"note": "test"})
    loaded = load_model_file(path, sha256=digest)
    wave = torch.randn(2, 16000)
    with torch.no_grad():
        assert torch.equal(model.encode_audio(wave), loaded.encode_audio(wave))
        assert torch.equal(model.encode_text(["a b"]), loaded.encode_text(["a b"]))
    assert loaded.checkpoint_meta["note"] == "test"
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_model_file(path, sha256="0" * 64)


def test_checkpoint_mismatch_names_the_key(tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    model = build_model(model_config("debug")).eval()
    path = tmp_path / "m.safetensors"
    save_model(model, path)
    with safe_open(str(path), framework="pt") as f:
        md = f.metadata()
    state = load_file(str(path))
    state["audio_projector.1.weightX"] = state.pop("audio_projector.1.weight")
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad), metadata=md)
    with pytest.raises(CheckpointError, match=r"audio_projector\.1\.weight"):
        load_model_file(bad)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_model_file(corrupt)


def test_half_precision_and_frozen_text_are_small(tmp_path: Path) -> None:
    cfg = model_config("small").replace(text={"trainable": False})
    model = build_model(cfg).eval()
    full = tmp_path / "full.safetensors"
    small = tmp_path / "small.safetensors"
    save_model(model, full, include_frozen_text=True)
    save_model(model, small, half=True)
    assert small.stat().st_size < full.stat().st_size / 20
    loaded = load_model_file(small)
    wave = torch.randn(1, cfg.audio.window_samples)
    with torch.no_grad():
        a, b = model.encode_audio(wave), loaded.encode_audio(wave)
        assert torch.allclose(a, b, atol=5e-2, rtol=1e-2)
        assert torch.allclose(model.encode_text(["jazz"]), loaded.encode_text(["jazz"]), atol=1e-2)


def test_top_layers_trainable_and_only_they_are_stored(tmp_path: Path) -> None:
    cfg = model_config("small").replace(text={"trainable_layers": 1})
    model = build_model(cfg).eval()
    trainable = {n for n, p in model.text_encoder.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("model.encoder.layer.5.") for n in trainable)
    with torch.no_grad():
        for _n, p in model.text_encoder.named_parameters():
            if p.requires_grad:
                p.add_(0.01)  # as if fine-tuned
    path = tmp_path / "m.safetensors"
    save_model(model, path)
    _config, tensors, _meta, complete = read_checkpoint(path)
    assert not complete and {k for k in tensors if k.startswith("text_encoder.")} == {
        f"text_encoder.{n}" for n in trainable
    }
    loaded = load_model_file(path)
    with torch.no_grad():
        assert torch.allclose(model.encode_text(["calm piano"]), loaded.encode_text(["calm piano"]), atol=1e-6)
