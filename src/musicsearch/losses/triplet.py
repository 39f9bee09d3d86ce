"""Symmetric cosine triplet loss with the paper's tag-aware hard-negative sampling (paper section 5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from musicsearch.losses.distributed import gather_no_grad, gather_with_grad, world


def negative_weights(sim: torch.Tensor, anchor_tags: torch.Tensor, cand_tags: torch.Tensor) -> torch.Tensor:
    """Sampling weights of candidate negatives for each anchor.

    ``w[i, j] = exp(sim[i, j]) * (1 + share[i, j])`` where ``share[i, j]`` is the fraction of anchor ``i``'s tags
    that candidate ``j`` has; ``w[i, j] = 0`` when candidate ``j`` has all of anchor ``i``'s tags (the anchor's own
    pair among them). Rows left all zero fall back to uniform weights over the other candidates.

    Args:
        sim: ``(Q, N)`` cosine similarity of anchor ``i`` to candidate ``j`` (detached).
        anchor_tags: ``(Q, V)`` multi-hot tags of the anchors.
        cand_tags: ``(N, V)`` multi-hot tags of the candidates.

    Returns:
        ``(Q, N)`` non-negative float weights.
    """
    a = anchor_tags.float()
    c = cand_tags.float()
    n_anchor = a.sum(1, keepdim=True).clamp(min=1.0)  # (Q, 1)
    share = (a @ c.t()) / n_anchor  # (Q, N)
    w = torch.exp(sim) * (1.0 + share)
    w = torch.where(share >= 1.0 - 1e-6, torch.zeros_like(w), w)
    empty = w.sum(1) <= 0
    if bool(empty.any()):
        uniform = torch.ones_like(w[empty])
        w[empty] = uniform
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
    """

    def __init__(self, margin: float = 0.4) -> None:
        super().__init__()
        self.margin = margin

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
            w_a2t = negative_weights(sim, all_tags, all_tags).to(gen_device)
            w_t2a = negative_weights(sim.t().contiguous(), all_tags, all_tags).to(gen_device)
            neg_text = sample_negatives(w_a2t, generator)[local].to(a.device)
            neg_audio = sample_negatives(w_t2a, generator)[local].to(a.device)
        loss_a2t = triplet_hinge(a, t, all_t[neg_text], self.margin)
        loss_t2a = triplet_hinge(t, a, all_a[neg_audio], self.margin)
        return 0.5 * (loss_a2t + loss_t2a)
