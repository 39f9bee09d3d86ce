"""Symmetric cosine triplet loss with tag-aware hard-negative sampling (paper section 5).

Negatives are drawn from the (global) batch with weights chosen by name (:data:`NEGATIVE_WEIGHTINGS`):
``official``, the paper's release (``mtr/triplet/model.py``): ``w[i, j] = ((cos[i, j] + 1) / 2) / missing[i, j]``
where ``missing[i, j]`` is the number of anchor ``i``'s tags that candidate ``j`` lacks; a candidate that has every
tag of the anchor (the anchor's own pair among them) gets weight 0.

This project's earlier rule, ``exp(cos) * (1 + share)``, was measured against it and was not better beyond the
seed spread (docs/results.md, "Triplet negative weighting"), so it was removed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from musicsearch.errors import ConfigError
from musicsearch.losses.distributed import gather_no_grad, gather_with_grad, world

__all__ = [
    "DEFAULT_NEGATIVE_WEIGHTING",
    "NEGATIVE_WEIGHTINGS",
    "TripletHead",
    "negative_weights",
    "sample_negatives",
    "triplet_hinge",
]

DEFAULT_NEGATIVE_WEIGHTING = "official"
"""The negative weighting a triplet model trains with unless told otherwise (the paper's release)."""


def _overlap(
    anchor_tags: torch.Tensor, cand_tags: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Q, 1)`` tag counts of the anchors and ``(Q, N)`` counts of the tags each candidate shares with them."""
    a = anchor_tags.to(dtype)
    c = cand_tags.to(dtype)
    return a.sum(1, keepdim=True), a @ c.t()


def official_weights(sim: torch.Tensor, anchor_tags: torch.Tensor, cand_tags: torch.Tensor) -> torch.Tensor:
    """The release's weights: ``((sim + 1) / 2) / missing``, 0 where the candidate misses no anchor tag.

    ``missing[i, j] = |tags(i)| - |tags(i) & tags(j)|``. Tag vectors are 0/1, so ``missing`` is an exact small
    integer in float32 and the zero test is exact. ``(sim + 1) / 2`` is clamped at 0 against cosines a rounding
    error below -1.
    """
    n_anchor, shared = _overlap(anchor_tags, cand_tags, sim.dtype)
    missing = n_anchor - shared  # (Q, N), whole numbers >= 0
    closeness = ((sim + 1.0) / 2.0).clamp(min=0.0)
    safe = torch.where(missing > 0, missing, torch.ones_like(missing))
    return torch.where(missing > 0, closeness / safe, torch.zeros_like(closeness))


NEGATIVE_WEIGHTINGS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "official": official_weights,
}
"""Negative weighting rules by name (see the module docstring)."""


def check_weighting(name: str) -> str:
    """Return ``name`` if it is a known negative weighting.

    Raises:
        ConfigError: naming the known weightings.
    """
    if name not in NEGATIVE_WEIGHTINGS:
        raise ConfigError(
            f"unknown triplet negative weighting {name!r}; use one of {', '.join(sorted(NEGATIVE_WEIGHTINGS))}"
        )
    return name


def negative_weights(
    sim: torch.Tensor,
    anchor_tags: torch.Tensor,
    cand_tags: torch.Tensor,
    *,
    weighting: str = DEFAULT_NEGATIVE_WEIGHTING,
) -> torch.Tensor:
    """Sampling weights of candidate negatives for each anchor.

    Rows left all zero (every candidate has all of the anchor's tags, or the anchor has no tag) fall back to
    uniform weights over all candidates, so that one negative can always be drawn.

    Args:
        sim: ``(Q, N)`` cosine similarity of anchor ``i`` to candidate ``j`` (detached).
        anchor_tags: ``(Q, V)`` 0/1 multi-hot tags of the anchors.
        cand_tags: ``(N, V)`` 0/1 multi-hot tags of the candidates.
        weighting: a name of :data:`NEGATIVE_WEIGHTINGS` (default ``official``, the release's rule).

    Returns:
        ``(Q, N)`` non-negative weights, in the dtype of ``sim``.

    Raises:
        ConfigError: for an unknown ``weighting``.
    """
    w = NEGATIVE_WEIGHTINGS[check_weighting(weighting)](sim, anchor_tags, cand_tags)
    empty = w.sum(1) <= 0
    if bool(empty.any()):
        w[empty] = torch.ones_like(w[empty])
    return w


def sample_negatives(weights: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One candidate index per row, drawn proportionally to ``weights`` ``(Q, N)`` -> ``(Q,)`` int64."""
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


def triplet_hinge(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean of ``max(0, margin - cos(a, p) + cos(a, n))`` over rows (inputs L2-normalised, ``(B, D)``)."""
    pos = (anchor * positive).sum(-1)
    neg = (anchor * negative).sum(-1)
    return F.relu(margin - pos + neg).mean()


class TripletHead(nn.Module):
    """Audio->text and text->audio triplet losses, averaged, negatives drawn from the global batch.

    Negatives are sampled for all anchors of the global batch with the given generator and each rank keeps its
    own rows, so with equal generators every rank (and a single process on the same global batch) draws the same.

    Args:
        margin: the hinge margin (the paper: 0.4).
        weighting: negative weighting rule, a name of :data:`NEGATIVE_WEIGHTINGS`.
    """

    def __init__(self, margin: float = 0.4, weighting: str = DEFAULT_NEGATIVE_WEIGHTING) -> None:
        super().__init__()
        self.margin = margin
        self.weighting = check_weighting(weighting)

    def forward(
        self,
        audio: torch.Tensor,
        text: torch.Tensor,
        tags: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        rank, _ = world()
        a = F.normalize(audio, dim=-1)  # (B, D)
        t = F.normalize(text, dim=-1)
        all_a = gather_with_grad(a)  # (N, D)
        all_t = gather_with_grad(t)
        all_tags = gather_no_grad(tags)  # (N, V)
        b = a.shape[0]
        local = slice(rank * b, (rank + 1) * b)
        with torch.no_grad():
            sim = all_a @ all_t.t()  # (N, N): audio i vs text j
            gen_device = generator.device if generator is not None else torch.device("cpu")
            w_a2t = negative_weights(sim, all_tags, all_tags, weighting=self.weighting).to(gen_device)
            w_t2a = negative_weights(sim.t().contiguous(), all_tags, all_tags, weighting=self.weighting)
            neg_text = sample_negatives(w_a2t, generator)[local].to(a.device)
            neg_audio = sample_negatives(w_t2a.to(gen_device), generator)[local].to(a.device)
        loss_a2t = triplet_hinge(a, t, all_t[neg_text], self.margin)
        loss_t2a = triplet_hinge(t, a, all_a[neg_audio], self.margin)
        return 0.5 * (loss_a2t + loss_t2a)
