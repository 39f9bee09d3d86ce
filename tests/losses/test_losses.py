"""Losses against plain NumPy / loop oracles on seeded data (paper section 5)."""

from __future__ import annotations

import math

import numpy as np
import torch

from musicsearch.losses import ClassificationHead, ContrastiveHead, TripletHead, negative_weights, triplet_hinge


def _norm(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_info_nce_matches_loop_oracle() -> None:
    rng = np.random.default_rng(0)
    a, t = rng.standard_normal((6, 8)), rng.standard_normal((6, 8))
    head = ContrastiveHead(init_temperature=0.2)
    got = float(head(torch.tensor(a, dtype=torch.float64), torch.tensor(t, dtype=torch.float64)))
    an, tn = _norm(a), _norm(t)
    scale = 1 / 0.2
    total = 0.0
    for i in range(6):
        la = [scale * an[i] @ tn[j] for j in range(6)]
        lt = [scale * tn[i] @ an[j] for j in range(6)]
        total += -la[i] + math.log(sum(math.exp(v) for v in la))
        total += -lt[i] + math.log(sum(math.exp(v) for v in lt))
    assert abs(got - total / 12) < 1e-9


def test_logit_scale_init_and_clamp() -> None:
    head = ContrastiveHead(init_temperature=0.2, max_logit_scale=100.0)
    assert abs(head.temperature() - 0.2) < 1e-6
    with torch.no_grad():
        head.logit_scale.fill_(10.0)
    assert abs(float(head.scale()) - 100.0) < 1e-6


def test_triplet_hinge_matches_formula() -> None:
    rng = np.random.default_rng(1)
    a, p, n = (_norm(rng.standard_normal((5, 4))) for _ in range(3))
    expect = np.mean([max(0.0, 0.4 - a[i] @ p[i] + a[i] @ n[i]) for i in range(5)])
    got = float(triplet_hinge(*(torch.tensor(x) for x in (a, p, n)), margin=0.4))
    assert abs(got - expect) < 1e-12


def test_negative_weights_zero_for_supersets_and_grow_with_share() -> None:
    tags = torch.tensor(
        [[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.float32
    )  # track 1 has all of track 0's tags
    sim = torch.zeros(4, 4)
    w = negative_weights(sim, tags, tags)
    assert w[0, 0] == 0 and w[0, 1] == 0  # self and superset excluded
    assert w[0, 2] > w[0, 3] > 0  # half the anchor's tags beats none
    sim2 = sim.clone()
    sim2[0, 3] = 0.9
    assert negative_weights(sim2, tags, tags)[0, 3] > w[0, 3]  # harder (more similar) -> heavier
    # oracle: exp(sim) * (1 + share), zero where share == 1
    for i in range(4):
        for j in range(4):
            share = float((tags[i] * tags[j]).sum() / tags[i].sum())
            expect = 0.0 if share >= 1 else math.exp(0.0) * (1 + share)
            assert abs(float(w[i, j]) - expect) < 1e-6


def test_triplet_head_uses_sampled_negatives_and_is_seeded() -> None:
    torch.manual_seed(0)
    a, t = torch.randn(8, 16), torch.randn(8, 16)
    tags = (torch.rand(8, 10) > 0.6).float()
    tags[:, 0] = 1
    head = TripletHead(margin=0.4)
    l1 = head(a, t, tags, torch.Generator().manual_seed(3))
    l2 = head(a, t, tags, torch.Generator().manual_seed(3))
    assert torch.equal(l1, l2)
    # oracle: resample the same negatives with the same generator and compute by hand
    g = torch.Generator().manual_seed(3)
    an, tn = torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(t, dim=-1)
    sim = an @ tn.t()
    neg_t = torch.multinomial(negative_weights(sim, tags, tags), 1, generator=g).squeeze(1)
    neg_a = torch.multinomial(negative_weights(sim.t().contiguous(), tags, tags), 1, generator=g).squeeze(1)
    expect = 0.5 * (triplet_hinge(an, tn, tn[neg_t], 0.4) + triplet_hinge(tn, an, an[neg_a], 0.4))
    assert torch.allclose(l1, expect)


def test_classification_bce_matches_numpy() -> None:
    torch.manual_seed(0)
    head = ClassificationHead(4, 3)
    x = torch.randn(5, 4, dtype=torch.float32)
    y = (torch.rand(5, 3) > 0.5).float()
    got = float(head(x, y))
    z = (torch.nn.functional.normalize(x, dim=-1) @ head.fc_cls.weight.t()).detach().numpy().astype(np.float64)
    p = 1 / (1 + np.exp(-z))
    yn = y.numpy()
    expect = -np.mean(yn * np.log(p) + (1 - yn) * np.log(1 - p))
    assert abs(got - expect) < 1e-5
