"""Speed flags of training: bf16 autocast (``amp``) and ``torch.compile`` (``compile``), exercised on CPU."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from musicsearch.models.checkpoint import load_model_file
from musicsearch.train.config import TrainConfig, load_train_config
from musicsearch.train.loop import Trainer


def _base(tone_corpus: Path, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict(
        manifest=str(tone_corpus),
        preset="debug",
        objective="contrastive",
        text_encoder="tiny-bert",
        epochs=1,
        warmup_epochs=0,
        batch_size=4,
        lr=1e-3,
        log_every=1,
        seed=0,
        device="cpu",
    )
    base.update(kw)
    return base


def _step_losses(out_dir: Path) -> list[float]:
    lines = (out_dir / "log.jsonl").read_text(encoding="utf-8").splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "samples_per_s" in r]


def test_flags_default_off_and_settable_by_override(tmp_path: Path) -> None:
    cfg = load_train_config(None, [], manifest="m.jsonl", out_dir=str(tmp_path))
    assert cfg.amp is False and cfg.compile is False
    cfg = load_train_config(None, ["amp=true", "compile=true"], manifest="m.jsonl", out_dir=str(tmp_path))
    assert cfg.amp is True and cfg.compile is True


def test_amp_on_cpu_trains_in_bfloat16_with_finite_losses_and_a_loadable_checkpoint(
    tone_corpus: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trainer = Trainer(TrainConfig(out_dir=str(tmp_path / "amp"), amp=True, **_base(tone_corpus)))
    assert trainer.precision == "bfloat16-autocast"
    with trainer._autocast():  # the context the training step runs under really computes in bfloat16
        assert (torch.ones(2, 3) @ torch.ones(3, 2)).dtype == torch.bfloat16
    with caplog.at_level(logging.INFO, logger="musicsearch.train.loop"):
        result = trainer.fit()
    assert "precision bfloat16-autocast" in caplog.text
    losses = _step_losses(tmp_path / "amp")
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert result.best_path is not None
    model = load_model_file(result.best_path)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast leaves the weights float32
    plain = Trainer(TrainConfig(out_dir=str(tmp_path / "fp32"), **_base(tone_corpus)))
    assert plain.precision == "float32"


@pytest.mark.slow
def test_compile_keeps_plain_checkpoint_keys_and_eager_outputs_and_resumes(
    tone_corpus: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plain = Trainer(TrainConfig(out_dir=str(tmp_path / "plain"), max_steps=2, **_base(tone_corpus))).fit()
    with caplog.at_level(logging.INFO, logger="musicsearch.train.loop"):
        trainer = Trainer(TrainConfig(out_dir=str(tmp_path / "comp"), max_steps=2, compile=True, **_base(tone_corpus)))
        comp = trainer.fit()
    if not trainer.compiled:  # a machine without a working inductor toolchain: the fallback test covers it
        assert "training continues without compilation" in caplog.text
    else:
        assert "audio tower compiled" in caplog.text
    assert plain.best_path is not None and comp.best_path is not None
    a = load_model_file(plain.best_path).state_dict()
    b = load_model_file(comp.best_path).state_dict()
    assert a.keys() == b.keys() and not any("_orig_mod" in k for k in b)
    last = torch.load(comp.last_path, weights_only=False)["model"]
    assert last.keys() == a.keys()
    assert all(math.isfinite(v) for v in _step_losses(tmp_path / "comp"))
    # compilation must not change the math: the trained (compiled) tower against the same weights loaded eagerly,
    # in eval mode (dropout draws differ between eager and inductor); float32 reductions may be reordered
    eager = load_model_file(comp.best_path).eval()
    wave = torch.randn(3, trainer.mcfg.audio.window_samples, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = eager.audio_encoder(wave)
        got = trainer.model.eval().audio_encoder(wave)
    scale = float(want.abs().max())
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * scale), float((got - want).abs().max())
    resumed = Trainer(TrainConfig(out_dir=str(tmp_path / "comp"), compile=True, **_base(tone_corpus)))
    assert resumed.global_step == 2
    assert resumed.fit().global_step == 2  # the one epoch (2 steps) was already done: nothing left to train


def test_compile_falls_back_to_eager_with_a_warning_without_a_cxx_compiler(
    tone_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", (None, str(tmp_path / "no-such-g++")))
    monkeypatch.setattr(inductor_config, "fx_graph_cache", False)  # a cached kernel would need no compiler
    torch._dynamo.reset()
    with caplog.at_level(logging.WARNING, logger="musicsearch.train.loop"):
        trainer = Trainer(TrainConfig(out_dir=str(tmp_path / "r"), max_steps=1, compile=True, **_base(tone_corpus)))
    assert trainer.compiled is False
    assert "compile=true but torch.compile cannot run on cpu" in caplog.text and "C++ compiler" in caplog.text
    result = trainer.fit()
    assert result.global_step == 1 and result.best_path is not None
    assert all(math.isfinite(v) for v in _step_losses(tmp_path / "r"))
    load_model_file(result.best_path)
