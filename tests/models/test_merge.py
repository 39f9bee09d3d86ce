"""Weight-space merging (musicsearch.models.merge) against plain loops."""

from __future__ import annotations

import pytest
import torch

from musicsearch.errors import ConfigError
from musicsearch.models.merge import average_states, interpolate_states


def _state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "w": torch.randn(3, 4, generator=g),
        "h": torch.randn(5, generator=g).half(),
        "steps": torch.tensor([seed, 2 * seed]),  # an integer buffer: never mixed
    }


def test_interpolation_matches_a_plain_loop() -> None:
    a, b = _state(1), _state(2)
    out = interpolate_states(a, b, 0.3)
    for i in range(3):
        for j in range(4):
            want = 0.7 * float(a["w"][i, j]) + 0.3 * float(b["w"][i, j])
            assert float(out["w"][i, j]) == pytest.approx(want, abs=1e-6)  # float32 rounding of one term
    for i in range(5):
        want = 0.7 * float(a["h"][i]) + 0.3 * float(b["h"][i])
        assert float(out["h"][i]) == pytest.approx(want, abs=4e-3)  # float16 keeps 11 bits; |values| < 4
    assert out["h"].dtype == torch.float16 and out["w"].dtype == torch.float32
    assert torch.equal(out["steps"], b["steps"])
    torch.testing.assert_close(interpolate_states(a, b, 0.0)["w"], a["w"])
    torch.testing.assert_close(interpolate_states(a, b, 1.0)["w"], b["w"])


def test_average_matches_a_plain_loop() -> None:
    states = [_state(s) for s in (1, 2, 3, 4)]
    out = average_states(states)
    for i in range(3):
        for j in range(4):
            want = sum(float(s["w"][i, j]) for s in states) / 4
            assert float(out["w"][i, j]) == pytest.approx(want, abs=1e-6)
    assert torch.equal(out["steps"], states[0]["steps"])
    torch.testing.assert_close(average_states(states[:1])["w"], states[0]["w"])
    # the soup of two is their midpoint
    torch.testing.assert_close(average_states(states[:2])["w"], interpolate_states(states[0], states[1], 0.5)["w"])


def test_merging_refuses_what_does_not_fit() -> None:
    a, b = _state(1), _state(2)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        interpolate_states(a, b, 1.2)
    with pytest.raises(ConfigError, match="entries"):
        interpolate_states(a, {k: v for k, v in b.items() if k != "h"}, 0.5)
    with pytest.raises(ConfigError, match="'w' is"):
        average_states([a, {**b, "w": torch.zeros(4, 3)}])
    with pytest.raises(ConfigError, match="at least one"):
        average_states([])
