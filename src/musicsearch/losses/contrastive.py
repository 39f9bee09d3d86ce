"""Symmetric InfoNCE over the global batch with a learnable temperature (paper section 5)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from musicsearch.losses.distributed import gather_with_grad, world


def info_nce(audio: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor, *, offset: int = 0) -> torch.Tensor:
    """Symmetric InfoNCE of local rows against all columns.

    Args:
        audio: ``(B, D)`` local audio embeddings, L2-normalised.
        text: ``(B, D)`` local text embeddings, L2-normalised.
        logit_scale: scalar multiplier of the cosine logits (``exp(s)`` clamped).
        offset: index of the first local row within the gathered batch (``rank * B``).

    The gathered ``(N, D)`` columns are taken from all ranks (``N = B`` in one process). Loss:
    ``(CE(scale * a @ T^T, i + offset) + CE(scale * t @ A^T, i + offset)) / 2`` averaged over local rows.
    """
    all_audio = gather_with_grad(audio)  # (N, D)
    all_text = gather_with_grad(text)  # (N, D)
    labels = torch.arange(audio.shape[0], device=audio.device) + offset
    a2t = logit_scale * audio @ all_text.t()  # (B, N)
    t2a = logit_scale * text @ all_audio.t()  # (B, N)
    return 0.5 * (F.cross_entropy(a2t, labels) + F.cross_entropy(t2a, labels))


class ContrastiveHead(nn.Module):
    """Holds the learnable ``logit_scale`` (``log(1 / T0)``, T0 = 0.2) and computes :func:`info_nce`."""

    def __init__(self, init_temperature: float = 0.2, max_logit_scale: float = 100.0) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor([math.log(1.0 / init_temperature)]))
        self.max_logit_scale = max_logit_scale

    def scale(self) -> torch.Tensor:
        """``exp(s)`` clamped at ``max_logit_scale``."""
        return self.logit_scale.exp().clamp(max=self.max_logit_scale)

    def temperature(self) -> float:
        """The current temperature ``1 / exp(s)``."""
        return float(1.0 / self.scale().item())

    def forward(self, audio: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        rank, _ = world()
        a = F.normalize(audio, dim=-1)
        t = F.normalize(text, dim=-1)
        return info_nce(a, t, self.scale(), offset=rank * a.shape[0])
