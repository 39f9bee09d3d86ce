"""The objective registry: each entry's properties agree with what its head and its model actually do, and
configs are checked against the registries (objectives here, text representations in text/sampling.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from musicsearch.errors import ConfigError
from musicsearch.losses.registry import OBJECTIVES, objective
from musicsearch.models.config import ModelConfig
from musicsearch.models.registry import build_model, model_config
from musicsearch.text.sampling import SAMPLERS

TAGS = ("rock", "jazz", "piano", "calm")


def _debug_config(name: str) -> ModelConfig:
    return model_config("debug", objective=name, tags=TAGS)


def test_the_three_objectives_of_the_paper_are_registered() -> None:
    assert OBJECTIVES.names() == ["classification", "contrastive", "triplet"]
    with pytest.raises(ConfigError, match=r"unknown objective 'hinge'; known: classification, contrastive, triplet"):
        objective("hinge")


@pytest.mark.parametrize("name", ["contrastive", "triplet", "classification"])
def test_properties_describe_the_built_model(name: str) -> None:
    spec = objective(name)
    torch.manual_seed(0)
    model = build_model(_debug_config(name), pretrained_text=False).eval()
    assert (model.text_encoder is not None) == spec.text_tower
    param_names = set(model.state_dict())
    assert ("head.logit_scale" in param_names) == spec.learned_temperature
    assert ("head.fc_cls.weight" in param_names) == spec.tag_head
    if spec.tag_head:
        assert model.tag_embeddings().shape == (len(TAGS), model.config.joint_dim)
    # unit_audio: the head's score of an audio embedding does not change with its length
    if spec.unit_audio:
        audio = torch.randn(3, model.config.joint_dim, generator=torch.Generator().manual_seed(1))
        with torch.inference_mode():
            a, b = model.head.logits(audio), model.head.logits(7.5 * audio)  # type: ignore[operator]
        assert torch.allclose(a, b, atol=1e-5)
    # the loss is defined (finite, with a gradient) on a batch of min_batch items
    b = spec.min_batch
    wave = 0.1 * torch.randn(b, model.config.audio.window_samples, generator=torch.Generator().manual_seed(2))
    targets = torch.zeros(b, len(TAGS))
    targets[:, 0] = 1
    targets[-1, 1] = 1
    model.train()
    out = model(wave, ["rock"] * b, targets, torch.Generator().manual_seed(3))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert ("temperature" in out.stats) == spec.learned_temperature


def test_a_tag_head_needs_the_vocabulary() -> None:
    cfg = model_config("debug", objective="classification")
    with pytest.raises(ConfigError, match=r"classification model needs its tag vocabulary \(config\.tags\)"):
        objective("classification").build_head(cfg)


def test_text_rep_is_checked_against_the_sampler_registry() -> None:
    for rep in SAMPLERS:
        assert model_config("debug", text_rep=rep).text_rep == rep
    with pytest.raises(ConfigError, match=r"text_rep must be one of \('sentence', 'stochastic', 'tag'\), got 'words'"):
        model_config("debug", text_rep="words")
    with pytest.raises(ConfigError, match=r"objective must be one of .*'triplet'\), got 'hinge'"):
        ModelConfig(objective="hinge")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="a classification model has no text encoder"):
        ModelConfig(objective="classification")


def test_the_registry_imports_no_torch() -> None:
    probe = "import sys, musicsearch.losses.registry; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"
