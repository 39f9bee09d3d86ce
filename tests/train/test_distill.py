"""Distilling a teacher's audio embeddings into a student's audio tower (musicsearch.train.distill)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicsearch.errors import ConfigError
from musicsearch.models.registry import build_model, model_config
from musicsearch.train.distill import DistillConfig, cosine_distill_loss, distill_audio_tower, embed_windows


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(model_config("debug"))


def _waves(n: int, samples: int) -> np.ndarray:
    """Tones of different pitch and loudness in a little noise: windows a teacher tells apart."""
    rng = np.random.default_rng(0)
    t = np.arange(samples) / 16_000.0
    freq = rng.uniform(80.0, 2_000.0, size=(n, 1))
    amp = rng.uniform(0.05, 0.5, size=(n, 1))
    return (amp * np.sin(2 * np.pi * freq * t) + 0.01 * rng.normal(size=(n, samples))).astype(np.float32)


@pytest.fixture(scope="module")
def fixture() -> tuple[np.ndarray, np.ndarray]:
    teacher = _model(1)
    waves = _waves(32, teacher.config.audio.window_samples)
    return waves, embed_windows(teacher, waves)


def test_cosine_distill_loss_matches_a_plain_loop() -> None:
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    oracle = 0.0
    for i in range(5):
        oracle += 1.0 - float(s[i] @ t[i]) / (np.linalg.norm(s[i]) * np.linalg.norm(t[i]))
    got = float(cosine_distill_loss(torch.from_numpy(s).float(), torch.from_numpy(t).float()))
    assert got == pytest.approx(oracle / 5, rel=1e-5, abs=1e-6)
    # unit rows: half the mean squared distance
    su, tu = s / np.linalg.norm(s, axis=1, keepdims=True), t / np.linalg.norm(t, axis=1, keepdims=True)
    assert got == pytest.approx(0.5 * np.mean(np.sum((su - tu) ** 2, axis=1)), rel=1e-5, abs=1e-6)


def test_embed_windows_gives_unit_rows_of_the_joint_space(fixture) -> None:
    _, target = fixture
    assert target.shape == (32, model_config("debug").joint_dim)
    assert target.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(target, axis=1), 1.0, rtol=1e-5)


def test_distillation_moves_the_student_towards_the_teacher(fixture) -> None:
    waves, target = fixture
    student = _model(0)
    text_before = {k: v.clone() for k, v in student.state_dict().items() if k.startswith("text_")}
    grads_before = {n: p.requires_grad for n, p in student.named_parameters()}
    start = float(np.mean(1.0 - np.sum(embed_windows(student, waves[24:]) * target[24:], axis=1)))
    cfg = DistillConfig(epochs=5, batch_size=8, lr=3e-3, warmup_steps=2, log_every=0, seed=0)
    result = distill_audio_tower(student, waves, target, train_idx=np.arange(24), valid_idx=np.arange(24, 32), cfg=cfg)

    assert len(result.history) == 5 and all(np.isfinite(h["distill"]) for h in result.history)
    assert all(h["samples_per_s"] > 0 for h in result.history)
    # the training loss falls, and the kept epoch validates better than the untrained student
    assert result.history[-1]["distill"] < result.history[0]["distill"]
    assert result.best_valid < start
    assert result.best_valid == pytest.approx(min(h["valid"] for h in result.history), abs=1e-5)
    # the model holds the best epoch's weights: its validation loss recomputed here is the recorded one
    now = float(np.mean(1.0 - np.sum(embed_windows(student, waves[24:]) * target[24:], axis=1)))
    assert now == pytest.approx(result.best_valid, abs=1e-4)
    # the text side is untouched, and which parameters are trainable is as before
    for k, v in text_before.items():
        torch.testing.assert_close(student.state_dict()[k], v, rtol=0, atol=0)
    assert {n: p.requires_grad for n, p in student.named_parameters()} == grads_before
    assert not student.training


def test_the_same_seed_gives_the_same_run(fixture) -> None:
    waves, target = fixture
    cfg = DistillConfig(epochs=2, batch_size=8, lr=3e-3, warmup_steps=2, log_every=0, seed=3)
    runs = []
    for _ in range(2):
        student = _model(0)
        runs.append(distill_audio_tower(student, waves, target, train_idx=np.arange(24), valid_idx=np.arange(24, 32),
                                        cfg=cfg))  # fmt: skip
    for h1, h2 in zip(runs[0].history, runs[1].history):  # same process: float32 tolerance only for safety
        assert h2["distill"] == pytest.approx(h1["distill"], rel=1e-4, abs=1e-5)
        assert h2["valid"] == pytest.approx(h1["valid"], rel=1e-4, abs=1e-5)


def test_the_contrastive_term_runs_on_rows_with_text(fixture) -> None:
    waves, target = fixture
    student = _model(0)
    text = np.zeros_like(target)
    rng = np.random.default_rng(1)
    rows = np.arange(0, 24, 2)  # every other training window has a text
    t = rng.normal(size=(rows.size, target.shape[1])).astype(np.float32)
    text[rows] = t / np.linalg.norm(t, axis=1, keepdims=True)
    cfg = DistillConfig(epochs=1, batch_size=8, lr=1e-3, contrastive_weight=0.5, log_every=1, seed=0)
    result = distill_audio_tower(student, waves, target, train_idx=np.arange(24), cfg=cfg, text=text)
    assert np.isfinite(result.history[0]["contrastive"]) and result.history[0]["contrastive"] > 0
    assert np.isnan(result.best_valid) and result.best_epoch == 1


def test_bad_input_is_refused(fixture) -> None:
    waves, target = fixture
    student = _model(0)
    with pytest.raises(ConfigError, match="one per window"):
        distill_audio_tower(student, waves, target[:5], train_idx=np.arange(5))
    with pytest.raises(ConfigError, match="joint space"):
        distill_audio_tower(student, waves, np.zeros((32, 3), np.float32), train_idx=np.arange(5))
    with pytest.raises(ConfigError, match="no training windows"):
        distill_audio_tower(student, waves, target, train_idx=[])
    with pytest.raises(ConfigError, match="needs text"):
        distill_audio_tower(student, waves, target, train_idx=np.arange(5), cfg=DistillConfig(contrastive_weight=1.0))
