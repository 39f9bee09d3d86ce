"""The paper's audio encoder: mel -> 4 residual conv blocks -> "cf" tokens -> CLS + positions -> transformer.

Module names follow the published checkpoints (paper.md section 11) so their keys map one to one:
``audio_representation.spec_fn.window``, ``frontend.input_bn``, ``frontend.layer1.conv_1``, ``frontend.fc``,
``cls_token``, ``pos_embedding``, ``transformer.layers.{i}.0.fn.norm``, ``transformer.layers.{i}.0.fn.fn.to_qkv``...
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from musicsearch.audio.features import MelSpectrogram
from musicsearch.models.config import AudioEncoderConfig


class ResBlock(nn.Module):
    """Two 3x3 conv + BN (ReLU between), a 3x3 conv + BN shortcut when channels change, ReLU, 2x2 max-pool."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.bn_1 = nn.BatchNorm2d(c_out)
        self.conv_2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.bn_2 = nn.BatchNorm2d(c_out)
        self.diff = c_in != c_out
        if self.diff:
            self.conv_3 = nn.Conv2d(c_in, c_out, 3, padding=1)
            self.bn_3 = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C_in, F, T) -> (B, C_out, F // 2, T // 2)
        out = self.bn_2(self.conv_2(F.relu(self.bn_1(self.conv_1(x)))))
        shortcut = self.bn_3(self.conv_3(x)) if self.diff else x
        return F.max_pool2d(F.relu(out + shortcut), 2)


class ConvFrontEnd(nn.Module):
    """BatchNorm2d(1) on the dB mel, residual conv blocks, then one Linear per time step over channels x freq."""

    def __init__(self, cfg: AudioEncoderConfig) -> None:
        super().__init__()
        self.n_blocks = cfg.n_conv_blocks
        self.input_bn = nn.BatchNorm2d(1)
        for i in range(cfg.n_conv_blocks):
            self.add_module(f"layer{i + 1}", ResBlock(1 if i == 0 else cfg.conv_channels, cfg.conv_channels))
        self.fc = nn.Linear(cfg.token_in_dim, cfg.width)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        # mel: (B, M, N) -> x: (B, 1, M, N)
        x = self.input_bn(mel.unsqueeze(1))
        for i in range(self.n_blocks):
            x = getattr(self, f"layer{i + 1}")(x)
        # x: (B, C, M', T) -> (B, T, C, M') -> (B, T, C * M')
        b, c, m, t = x.shape
        x = x.permute(0, 3, 1, 2).reshape(b, t, c * m)
        return self.fc(x)  # (B, T, width)


class Attention(nn.Module):
    """Multi-head self-attention with a bias-free fused QKV projection."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        # (B, N, 3D) -> 3 x (B, H, N, D/H)
        q, k, v = self.to_qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.to_out(out.transpose(1, 2).reshape(b, n, d))


class FeedForward(nn.Module):
    """Linear -> GELU -> Dropout -> Linear -> Dropout (indices 0 and 3 hold weights)."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PreNorm(nn.Module):
    """``fn(LayerNorm(x))``."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class Residual(nn.Module):
    """``fn(x) + x``."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


class Transformer(nn.Module):
    """Pre-norm transformer without a final norm."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    Residual(PreNorm(dim, Attention(dim, heads, dropout))),
                    Residual(PreNorm(dim, FeedForward(dim, mlp_dim, dropout))),
                ]
            )
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            attn, ff = layer[0], layer[1]  # type: ignore[index]
            x = ff(attn(x))
        return x


class AudioEncoder(nn.Module):
    """Waveform ``(B, window_samples)`` float32 at 16 kHz -> ``(B, width)`` clip feature (the CLS output)."""

    def __init__(self, cfg: AudioEncoderConfig) -> None:
        super().__init__()
        self.config = cfg
        self.audio_representation = MelSpectrogram(cfg.mel)
        self.frontend = ConvFrontEnd(cfg)
        self.cls_token = nn.Parameter(torch.randn(cfg.width))
        self.pos_embedding = nn.Parameter(torch.randn(1, cfg.max_positions, cfg.width))
        self.dropout = nn.Dropout(cfg.dropout)
        self.transformer = Transformer(cfg.width, cfg.depth, cfg.heads, cfg.mlp_dim, cfg.dropout)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        mel = self.audio_representation(wave)  # (B, n_mels, frames)
        tokens = self.frontend(mel)  # (B, T, width)
        b, t, _ = tokens.shape
        if t + 1 > self.pos_embedding.shape[1]:
            raise ValueError(f"{t} tokens exceed the {self.pos_embedding.shape[1] - 1} positional slots")
        cls = self.cls_token.expand(b, 1, -1)
        x = torch.cat([cls, tokens], dim=1) + self.pos_embedding[:, : t + 1]
        x = self.transformer(self.dropout(x))
        return x[:, 0]  # (B, width)
