"""Learning-rate schedule of the release: linear warm-up, then half-cosine to ~0 (paper section 7)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, floor: float = 0.0) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based).

    Linear from ``1 / warmup_steps`` up to 1 over ``warmup_steps``, then ``floor + (1 - floor) * 0.5 * (1 + cos(pi *
    p))`` with ``p`` going from 0 to 1 over the remaining steps.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    rest = max(1, total_steps - warmup_steps)
    p = min(1.0, (step - warmup_steps) / rest)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * p))
