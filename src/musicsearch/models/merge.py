"""Weight-space merging of models that share a start: interpolation (WiSE-FT) and uniform averages (soups).

A head fine-tuned from a model stays in that model's basin, so points on the line between the two are models too.
``interpolate_states(start, tuned, alpha)`` is WiSE-FT (Wortsman et al., "Robust fine-tuning of zero-shot models",
CVPR 2022): a small ``alpha`` keeps most of what the start knew and takes part of what the fine-tuning taught.
``average_states`` is a uniform "model soup" (Wortsman et al., ICML 2022): heads of one start trained with
different seeds average to one head with less of each seed's own noise. :func:`musicsearch.train.heads.train_head`
applies WiSE-FT with ``HeadTrainConfig.wise``; ``experiments/interpolate_heads.py`` merges saved checkpoints.

Both work on state dicts: floating-point entries are mixed in float64 and cast back to their own dtype; other
entries (integer buffers) are taken unchanged from the first (tuned) state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from musicsearch.errors import ConfigError

State = Mapping[str, torch.Tensor]


def _check_same(states: Sequence[State], what: str) -> None:
    first = states[0]
    for s in states[1:]:
        if s.keys() != first.keys():
            extra = sorted(set(s) ^ set(first))[:4]
            raise ConfigError(f"{what}: the states differ in their entries (e.g. {extra}); merge models of one start")
        bad = [k for k in first if s[k].shape != first[k].shape]
        if bad:
            raise ConfigError(
                f"{what}: {bad[0]!r} is {tuple(first[bad[0]].shape)} in one state and {tuple(s[bad[0]].shape)} in "
                "another; merge models of one architecture"
            )


def interpolate_states(start: State, tuned: State, alpha: float) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * start + alpha * tuned`` entry by entry.

    Args:
        start: the state the fine-tuning started from.
        tuned: the fine-tuned state (the same keys and shapes).
        alpha: the tuned state's weight, in [0, 1] (0: ``start``, 1: ``tuned``).

    Raises:
        ConfigError: ``alpha`` outside [0, 1], or the states differ in keys or shapes.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"the interpolation weight must be in [0, 1], got {alpha}")
    _check_same([tuned, start], "interpolation")
    return {
        k: ((1.0 - alpha) * start[k].double() + alpha * v.double()).to(v.dtype) if v.is_floating_point() else v
        for k, v in tuned.items()
    }


def average_states(states: Sequence[State]) -> dict[str, torch.Tensor]:
    """The uniform average of ``states`` entry by entry.

    Raises:
        ConfigError: no states, or they differ in keys or shapes.
    """
    if not states:
        raise ConfigError("averaging needs at least one state")
    _check_same(states, "averaging")
    first = states[0]
    return {
        k: (torch.stack([s[k].double() for s in states]).mean(dim=0)).to(v.dtype) if v.is_floating_point() else v
        for k, v in first.items()
    }
