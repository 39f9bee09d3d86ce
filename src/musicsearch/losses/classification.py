"""Multi-label tag classification (paper section 5): normalised audio embedding -> Linear -> sigmoid, BCE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ClassificationHead(nn.Module):
    """``fc_cls``: ``Linear(joint_dim, n_tags, bias=False)``; its rows double as tag embeddings for retrieval."""

    def __init__(self, joint_dim: int, n_tags: int) -> None:
        super().__init__()
        self.fc_cls = nn.Linear(joint_dim, n_tags, bias=False)

    def logits(self, audio: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` audio embeddings -> ``(B, n_tags)`` logits (the embedding is L2-normalised first)."""
        return self.fc_cls(F.normalize(audio, dim=-1))

    def forward(self, audio: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean binary cross-entropy against ``(B, n_tags)`` 0/1 targets."""
        return F.binary_cross_entropy_with_logits(self.logits(audio), targets.float())
