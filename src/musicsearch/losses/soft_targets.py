"""Soft teacher targets: the student's audio-text similarities over the teachers' tags should match the teachers'
probabilities (issue 13).

For a window ``b`` with audio embedding ``a_b`` and each teacher tag ``k`` written as natural text with embedding
``t_k`` (same joint space), the student's probability of the tag is ``sigmoid(s * cos(a_b, t_k) + c)`` with a
learnable scale ``s = exp(log_scale)`` and bias ``c``; the loss is the binary cross-entropy against the teachers'
probability ``p_bk``, averaged over windows and tags::

    L = -1 / (B K) * sum_b sum_k [ p_bk log q_bk + (1 - p_bk) log(1 - q_bk) ],  q_bk = sigmoid(s cos(a_b, t_k) + c)

Unlike thresholded pseudo-tags, this distils the teachers' whole distributions, including what they think a
window is *not*, and the relative strength of every tag.

The binary cross-entropy treats every tag on its own, with one shared bias: it can match each tag's probability
well on average and still put the wrong tag first for a window (``techno`` above ``electronic``), which is what a
one-word query sees. :func:`tag_ranking_loss` adds the listwise view: over the K tags of a window, the teachers'
probabilities normalised to sum to one are the target of a softmax over the student's scaled cosines
(cross-entropy, i.e. KL divergence up to the teachers' entropy)::

    L_rank = -1 / B * sum_b sum_k pi_bk log softmax_k(s' cos(a_b, t_k)),  pi_bk = p_bk^g / sum_j p_bj^g

The power ``g`` (1 by default) sharpens the target for ``g > 1``: the teachers' top tag takes more of the mass,
which is what a one-word query (the top genre) checks, while the order of the other tags is kept.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SoftTargetHead", "soft_target_loss", "tag_ranking_loss"]


def soft_target_loss(
    audio: torch.Tensor, tag_text: torch.Tensor, targets: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """Binary cross-entropy between scaled-cosine tag probabilities and soft targets (module docstring).

    Args:
        audio: ``(B, D)`` audio embeddings (any norm; cosine is taken).
        tag_text: ``(K, D)`` text embeddings of the K tags.
        targets: ``(B, K)`` float probabilities in ``[0, 1]``.
        scale: scalar multiplier ``s`` of the cosine (positive).
        bias: scalar offset ``c``.

    Returns:
        The scalar mean loss over the ``B x K`` pairs.
    """
    logits = scale * F.normalize(audio, dim=-1) @ F.normalize(tag_text, dim=-1).t() + bias  # (B, K)
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))


def tag_ranking_loss(
    audio: torch.Tensor, tag_text: torch.Tensor, targets: torch.Tensor, scale: torch.Tensor, power: float = 1.0
) -> torch.Tensor:
    """Listwise cross-entropy between the teachers' normalised tag distribution and a softmax over the student's
    scaled cosines (module docstring).

    Args:
        audio: ``(B, D)`` audio embeddings (any norm; cosine is taken).
        tag_text: ``(K, D)`` text embeddings of the K tags.
        targets: ``(B, K)`` float probabilities in ``[0, 1]``; a row is normalised to sum to one (a row of zeros
            contributes nothing).
        scale: scalar temperature ``s'`` of the softmax (positive).
        power: exponent ``g > 0`` applied to the probabilities before normalising (1: the probabilities as they
            are; larger: a sharper target).

    Returns:
        The scalar mean over the ``B`` windows.

    Raises:
        ValueError: ``power`` is not positive.
    """
    if not power > 0:
        raise ValueError(f"tag_ranking_loss: power must be > 0, got {power}; use 1 for the plain target")
    logits = scale * F.normalize(audio, dim=-1) @ F.normalize(tag_text, dim=-1).t()  # (B, K)
    t = targets.to(logits.dtype)
    if power != 1.0:
        t = t.clamp_min(0.0).pow(power)
    dist = t / t.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(t.dtype).tiny)  # (B, K), rows sum to 1 (or 0)
    return -(dist * torch.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


class SoftTargetHead(nn.Module):
    """Holds the learnable ``log_scale`` and ``bias`` of :func:`soft_target_loss`.

    Args:
        init_scale: initial ``s`` (10: cosines of +-0.3 map to logits of +-3).
        init_bias: initial ``c`` (-2: a tag starts at probability 0.12, near the teachers' mean rate).
    """

    def __init__(self, init_scale: float = 10.0, init_bias: float = -2.0) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.bias = nn.Parameter(torch.tensor(float(init_bias)))
        #: the softmax temperature of :func:`tag_ranking_loss` (its own: a ranking wants sharper logits)
        self.log_rank_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    def forward(self, audio: torch.Tensor, tag_text: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return soft_target_loss(audio, tag_text, targets, self.log_scale.exp(), self.bias)

    def ranking(
        self, audio: torch.Tensor, tag_text: torch.Tensor, targets: torch.Tensor, power: float = 1.0
    ) -> torch.Tensor:
        """:func:`tag_ranking_loss` with this head's learnable temperature (and the target's ``power``)."""
        return tag_ranking_loss(audio, tag_text, targets, self.log_rank_scale.exp(), power)

    def probs(self, audio: torch.Tensor, tag_text: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` the student's tag probabilities."""
        return torch.sigmoid(
            self.log_scale.exp() * F.normalize(audio, dim=-1) @ F.normalize(tag_text, dim=-1).t() + self.bias
        )
