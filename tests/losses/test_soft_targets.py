"""The soft-target loss against a plain-loop oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from musicsearch.losses.soft_targets import SoftTargetHead, soft_target_loss, tag_ranking_loss


def _oracle(audio: np.ndarray, text: np.ndarray, targets: np.ndarray, scale: float, bias: float) -> float:
    total = 0.0
    for b in range(audio.shape[0]):
        for k in range(text.shape[0]):
            cos = float(audio[b] @ text[k]) / (np.linalg.norm(audio[b]) * np.linalg.norm(text[k]))
            q = 1.0 / (1.0 + math.exp(-(scale * cos + bias)))
            p = float(targets[b, k])
            total -= p * math.log(q) + (1.0 - p) * math.log(1.0 - q)
    return total / (audio.shape[0] * text.shape[0])


def test_soft_target_loss_matches_plain_loop() -> None:
    rng = np.random.default_rng(0)
    audio = rng.normal(size=(5, 8)).astype(np.float32)
    text = rng.normal(size=(7, 8)).astype(np.float32)
    targets = rng.uniform(size=(5, 7)).astype(np.float32)
    for scale, bias in ((10.0, -2.0), (1.0, 0.5), (30.0, 0.0)):
        got = soft_target_loss(
            torch.from_numpy(audio), torch.from_numpy(text), torch.from_numpy(targets),
            torch.tensor(scale), torch.tensor(bias),
        )  # fmt: skip
        want = _oracle(audio.astype(np.float64), text.astype(np.float64), targets.astype(np.float64), scale, bias)
        # float32 cosines (|error| ~1e-7) times scale 30, through log-sigmoid: well inside 1e-5 relative
        assert abs(float(got) - want) <= 1e-5 * max(1.0, abs(want))


def test_head_probs_and_gradient_direction() -> None:
    head = SoftTargetHead(init_scale=10.0, init_bias=-2.0)
    audio = torch.tensor([[1.0, 0.0]], requires_grad=True)
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    probs = head.probs(audio, text)
    torch.testing.assert_close(probs, torch.sigmoid(torch.tensor([[8.0, -2.0]])))
    # the teacher says tag 1 is certain: the loss pulls the audio towards tag 1's text
    loss = head(audio, text, torch.tensor([[0.0, 1.0]]))
    loss.backward()
    assert audio.grad is not None and float(audio.grad[0, 1]) < 0
    assert head.log_scale.grad is not None and head.bias.grad is not None


def _rank_oracle(audio: np.ndarray, text: np.ndarray, targets: np.ndarray, scale: float, power: float = 1.0) -> float:
    total = 0.0
    for b in range(audio.shape[0]):
        logits = [scale * float(audio[b] @ text[k]) / (np.linalg.norm(audio[b]) * np.linalg.norm(text[k]))
                  for k in range(text.shape[0])]  # fmt: skip
        top = max(logits)
        log_z = top + math.log(sum(math.exp(x - top) for x in logits))
        powered = [float(targets[b, k]) ** power for k in range(text.shape[0])]
        mass = sum(powered)
        for k in range(text.shape[0]):
            if mass > 0:
                total -= powered[k] / mass * (logits[k] - log_z)
    return total / audio.shape[0]


def test_tag_ranking_loss_matches_plain_loop() -> None:
    rng = np.random.default_rng(1)
    audio = rng.normal(size=(6, 8)).astype(np.float32)
    text = rng.normal(size=(5, 8)).astype(np.float32)
    targets = rng.uniform(size=(6, 5)).astype(np.float32)
    targets[2] = 0.0  # a window the teachers call nothing: no ranking to learn, contributes 0
    for scale in (1.0, 10.0, 30.0):
        got = tag_ranking_loss(torch.from_numpy(audio), torch.from_numpy(text), torch.from_numpy(targets),
                               torch.tensor(scale))  # fmt: skip
        want = _rank_oracle(audio.astype(np.float64), text.astype(np.float64), targets.astype(np.float64), scale)
        # float32 cosines (~1e-7) times scale 30 through log-softmax: inside 1e-5 relative
        assert abs(float(got) - want) <= 1e-5 * max(1.0, abs(want))


def test_tag_ranking_loss_prefers_the_teachers_top_tag() -> None:
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([[0.9, 0.3]])  # the teacher ranks tag 0 first
    right = tag_ranking_loss(torch.tensor([[1.0, 0.2]]), text, targets, torch.tensor(10.0))
    wrong = tag_ranking_loss(torch.tensor([[0.2, 1.0]]), text, targets, torch.tensor(10.0))
    assert float(right) < float(wrong)
    # the same probabilities scaled down by half rank the same: only the normalised distribution matters
    half = tag_ranking_loss(torch.tensor([[1.0, 0.2]]), text, targets / 2, torch.tensor(10.0))
    torch.testing.assert_close(half, right)


def test_tag_ranking_loss_power_matches_plain_loop() -> None:
    rng = np.random.default_rng(2)
    audio = rng.normal(size=(6, 8)).astype(np.float32)
    text = rng.normal(size=(5, 8)).astype(np.float32)
    targets = rng.uniform(size=(6, 5)).astype(np.float32)
    targets[4] = 0.0
    for power in (0.5, 2.0, 4.0):
        got = tag_ranking_loss(torch.from_numpy(audio), torch.from_numpy(text), torch.from_numpy(targets),
                               torch.tensor(10.0), power)  # fmt: skip
        want = _rank_oracle(audio.astype(np.float64), text.astype(np.float64), targets.astype(np.float64), 10.0, power)
        # float32 probabilities raised to the power 4 (relative error ~4 * 6e-8) and cosines times 10: inside 1e-5
        assert abs(float(got) - want) <= 1e-5 * max(1.0, abs(want))


def test_tag_ranking_loss_power_sharpens_towards_the_top_tag() -> None:
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([[0.6, 0.4]])
    scale = torch.tensor(10.0)
    # an audio embedding that already puts tag 0 first: a sharper target asks more of it, so the optimum moves
    # further towards tag 0 and the gradient on the tag-1 side grows
    grads = []
    for power in (1.0, 4.0):
        audio = torch.tensor([[1.0, 1.0]], requires_grad=True)
        tag_ranking_loss(audio, text, targets, scale, power).backward()
        assert audio.grad is not None
        grads.append(float(audio.grad[0, 0]))
    assert grads[1] < grads[0] < 0  # both pull towards tag 0; the sharper target pulls harder
    with pytest.raises(ValueError, match="power"):
        tag_ranking_loss(torch.tensor([[1.0, 1.0]]), text, targets, scale, 0.0)
