"""Losses against plain NumPy / loop oracles on seeded data (paper section 5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from musicsearch.errors import ConfigError
from musicsearch.losses.classification import ClassificationHead
from musicsearch.losses.contrastive import ContrastiveHead
from musicsearch.losses.triplet import TripletHead, negative_weights, triplet_hinge


def _norm(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_info_nce_matches_loop_oracle() -> None:
    rng = np.random.default_rng(0)
    a, t = rng.standard_normal((6, 8)), rng.standard_normal((6, 8))
    head = ContrastiveHead(init_temperature=0.2)
    got = float(head(torch.tensor(a, dtype=torch.float64), torch.tensor(t, dtype=torch.float64)).detach())
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
    assert abs(float(head.scale().detach()) - 100.0) < 1e-6


def test_triplet_hinge_matches_formula() -> None:
    rng = np.random.default_rng(1)
    a, p, n = (_norm(rng.standard_normal((5, 4))) for _ in range(3))
    expect = np.mean([max(0.0, 0.4 - a[i] @ p[i] + a[i] @ n[i]) for i in range(5)])
    got = float(triplet_hinge(*(torch.tensor(x) for x in (a, p, n)), margin=0.4))
    assert abs(got - expect) < 1e-12


def _loop_official(sim: np.ndarray, tags: np.ndarray) -> np.ndarray:
    """The release's rule, one pair at a time: ((cos + 1) / 2) / (number of anchor tags the candidate lacks)."""
    q, n = sim.shape
    w = np.zeros((q, n))
    for i in range(q):
        for j in range(n):
            lacks = sum(1 for v in range(tags.shape[1]) if tags[i, v] == 1 and tags[j, v] == 0)
            w[i, j] = 0.0 if lacks == 0 else ((sim[i, j] + 1.0) / 2.0) / lacks
    return w


ORACLES = {"official": _loop_official}


@pytest.mark.parametrize("weighting", sorted(ORACLES))
def test_negative_weights_match_loop_oracle(weighting: str) -> None:
    rng = np.random.default_rng(4)
    tags = (rng.random((12, 6)) > 0.55).astype(np.float64)
    tags[3] = tags[7]  # identical tag sets: weight 0 both ways
    tags[5] = np.maximum(tags[2], tags[9])  # a superset of 2 and of 9
    e = _norm(rng.standard_normal((12, 5)))
    sim = e @ _norm(rng.standard_normal((12, 5))).T
    expect = ORACLES[weighting](sim, tags)
    got = negative_weights(torch.tensor(sim), torch.tensor(tags), torch.tensor(tags), weighting=weighting).numpy()
    rows = expect.sum(1) > 0  # rows left all zero fall back to uniform (tested below)
    assert rows.sum() >= 8
    # float64 inputs: the only rounding is in a handful of float64 ops per weight
    np.testing.assert_allclose(got[rows], expect[rows], rtol=1e-12, atol=0)
    assert got[3, 7] == 0 and got[7, 3] == 0 and got[2, 5] == 0 and got[9, 5] == 0


def test_official_weights_are_the_releases_rule_on_a_hand_example() -> None:
    tags = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.float32)
    sim = torch.tensor([[1.0, 0.5, 0.2, -0.4]] * 4)
    w = negative_weights(sim, tags, tags)  # default: official
    # anchor 0 has 3 tags: track 1 lacks none (0), track 2 lacks 2, track 3 lacks 3
    expect = [0.0, 0.0, (0.2 + 1) / 2 / 2, (-0.4 + 1) / 2 / 3]
    assert torch.allclose(w[0], torch.tensor(expect), rtol=1e-6, atol=0)
    # closer (harder) negatives weigh more; so do candidates lacking fewer of the anchor's tags
    sim2 = sim.clone()
    sim2[0, 3] = 0.9
    assert negative_weights(sim2, tags, tags)[0, 3] > w[0, 3]
    assert w[0, 2] > w[0, 3]


def test_negative_weights_fall_back_to_uniform_and_never_go_negative() -> None:
    tags = torch.ones(3, 2)  # every candidate has every anchor tag: no valid negative
    sim = torch.full((3, 3), -1.0 - 1e-7)  # a cosine rounded below -1
    for weighting in ORACLES:
        w = negative_weights(sim, tags, tags, weighting=weighting)
        assert torch.equal(w, torch.ones(3, 3))
    mixed = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    w = negative_weights(sim, mixed, mixed)
    assert (w >= 0).all() and (w.sum(1) > 0).all()


def test_unknown_weighting_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="use one of official"):
        negative_weights(torch.zeros(2, 2), torch.ones(2, 1), torch.ones(2, 1), weighting="hardest")
    with pytest.raises(ConfigError, match="unknown triplet negative weighting"):
        TripletHead(weighting="hardest")


@pytest.mark.parametrize("weighting", sorted(ORACLES))
def test_triplet_head_uses_sampled_negatives_and_is_seeded(weighting: str) -> None:
    torch.manual_seed(0)
    a, t = torch.randn(8, 16), torch.randn(8, 16)
    tags = (torch.rand(8, 10) > 0.6).float()
    tags[:, 0] = 1
    head = TripletHead(margin=0.4, weighting=weighting)
    l1 = head(a, t, tags, torch.Generator().manual_seed(3))
    l2 = head(a, t, tags, torch.Generator().manual_seed(3))
    assert torch.equal(l1, l2)
    # oracle: resample the same negatives with the same generator and compute by hand
    g = torch.Generator().manual_seed(3)
    an, tn = torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(t, dim=-1)
    sim = an @ tn.t()
    w_t = torch.tensor(ORACLES[weighting](sim.double().numpy(), tags.double().numpy()))
    w_a = torch.tensor(ORACLES[weighting](sim.t().double().numpy(), tags.double().numpy()))
    assert (w_t.sum(1) > 0).all() and (w_a.sum(1) > 0).all()  # no uniform fallback in this batch
    # the same draws as the head: multinomial on the head's float32 weights (loop oracle within float32 rounding)
    w_t32 = negative_weights(sim, tags, tags, weighting=weighting)
    w_a32 = negative_weights(sim.t().contiguous(), tags, tags, weighting=weighting)
    assert torch.allclose(w_t32.double(), w_t, rtol=1e-5, atol=1e-7)
    assert torch.allclose(w_a32.double(), w_a, rtol=1e-5, atol=1e-7)
    neg_t = torch.multinomial(w_t32, 1, generator=g).squeeze(1)
    neg_a = torch.multinomial(w_a32, 1, generator=g).squeeze(1)
    expect = 0.5 * (triplet_hinge(an, tn, tn[neg_t], 0.4) + triplet_hinge(tn, an, an[neg_a], 0.4))
    assert torch.allclose(l1, expect)


def test_classification_bce_matches_numpy() -> None:
    torch.manual_seed(0)
    head = ClassificationHead(4, 3)
    x = torch.randn(5, 4, dtype=torch.float32)
    y = (torch.rand(5, 3) > 0.5).float()
    got = float(head(x, y).detach())
    z = (torch.nn.functional.normalize(x, dim=-1) @ head.fc_cls.weight.t()).detach().numpy().astype(np.float64)
    p = 1 / (1 + np.exp(-z))
    yn = y.numpy()
    expect = -np.mean(yn * np.log(p) + (1 - yn) * np.log(1 - p))
    assert abs(got - expect) < 1e-5
