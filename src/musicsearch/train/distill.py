"""Distil a slow audio tower into a fast one: the student's audio embedding learns the teacher's, window by window.

The teacher is any model whose audio embeddings of a set of windows are known (for issue 13's ``fast`` model: the
shipped ``default``, two musicnn networks plus the ``small`` tower, whose embeddings of cached windows are its head
applied to cached backbone features). The student is a model with a cheaper audio tower (the ``small`` preset,
initialised from a trained model) that shares the teacher's text tower, so it lives in the teacher's joint space
and the teacher's text side serves both. Only the student's audio tower and audio projection are trained; the
text side and the temperature stay frozen.

Loss, for a batch of ``B`` windows with student embeddings ``s_b`` and teacher embeddings ``t_b``::

    L = 1 / B * sum_b (1 - cos(s_b, t_b))                       (cosine distillation; = MSE / 2 of unit vectors)
      + w * InfoNCE(s_b / |s_b|, u_b)  over the rows b that have a text embedding u_b   (optional, ``w`` =
                                                                 ``DistillConfig.contrastive_weight``)

The contrastive term (e.g. corpus windows with a caption) keeps what the text side says about the student's own
training windows; with ``w = 0`` the student learns the teacher alone. Each epoch's validation loss is the mean
cosine distance on the validation windows (the distillation term only); the epoch with the lowest is kept.

>>> result = distill_audio_tower(student, waves, teacher, train_idx=tr, valid_idx=va)    # doctest: +SKIP
>>> result.best_epoch, result.best_valid                                                 # doctest: +SKIP
(5, 0.081)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from musicsearch.errors import ConfigError
from musicsearch.losses.contrastive import info_nce
from musicsearch.train.schedule import warmup_cosine

__all__ = ["DistillConfig", "DistillResult", "cosine_distill_loss", "distill_audio_tower", "embed_windows"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillConfig:
    """What :func:`distill_audio_tower` does.

    Attributes:
        epochs: passes over the training windows; the epoch with the lowest validation loss is kept.
        batch_size: windows per step.
        lr: AdamW peak learning rate (linear warm-up over ``warmup_steps``, then cosine decay to 0).
        weight_decay: AdamW weight decay.
        warmup_steps: optimiser steps of linear warm-up.
        contrastive_weight: weight ``w`` of the InfoNCE term on windows with a text embedding (0: none).
        log_every: log one line (loss, samples/s) every this many steps.
        seed: the one seed (batch order, dropout).
    """

    epochs: int = 6
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    contrastive_weight: float = 0.0
    log_every: int = 20
    seed: int = 0


@dataclass
class DistillResult:
    """What a distillation run did (the model is left holding the best epoch's weights).

    Attributes:
        best_epoch: 1-based epoch with the lowest validation loss (the last epoch when there are no validation
            windows).
        best_valid: its validation loss (mean cosine distance; NaN without validation windows).
        history: per epoch: ``epoch``, mean training ``distill`` (and ``contrastive``) loss, ``valid``,
            ``samples_per_s`` (training windows per second of that epoch's steps).
        seconds: wall time of the whole run.
    """

    best_epoch: int
    best_valid: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def cosine_distill_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean cosine distance ``1 / B * sum_b (1 - cos(student_b, teacher_b))``.

    Args:
        student: ``(B, D)`` student embeddings (any norm).
        teacher: ``(B, D)`` teacher embeddings (any norm; no gradient flows into them).

    Returns:
        A scalar in ``[0, 2]``; 0 when every row points the teacher's way. Equal to half the mean squared
        distance of the unit vectors.
    """
    return (1.0 - F.cosine_similarity(student, teacher.detach(), dim=-1)).mean()


def embed_windows(model: Any, waves: Any, *, batch_size: int = 64) -> np.ndarray:
    """``(N, window_samples)`` float32 windows at 16 kHz -> ``(N, joint_dim)`` float32 unit audio embeddings.

    Args:
        model: a :class:`~musicsearch.models.dual_encoder.TextToMusic` (put in eval mode here).
        waves: an array (or a memory-mapped ``.npy``) of windows of the model's length.
        batch_size: windows per forward pass.
    """
    model.eval()
    out = []
    with torch.inference_mode():
        for a in range(0, len(waves), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(waves[a : a + batch_size], dtype=np.float32))
            out.append(F.normalize(model.encode_audio(x).float(), dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.joint_dim), np.float32)


def _audio_parameters(model: Any) -> list[torch.nn.Parameter]:
    return [*model.audio_encoder.parameters(), *model.audio_projector.parameters()]


def distill_audio_tower(
    model: Any,
    waves: Any,
    teacher: np.ndarray,
    *,
    train_idx: Sequence[int] | np.ndarray,
    valid_idx: Sequence[int] | np.ndarray = (),
    cfg: DistillConfig = DistillConfig(),
    text: np.ndarray | None = None,
) -> DistillResult:
    """Train ``model``'s audio tower and audio projection so that its audio embeddings match ``teacher``'s.

    Args:
        model: the student, a :class:`~musicsearch.models.dual_encoder.TextToMusic` whose ``encode_audio`` takes
            ``(B, window_samples)`` windows; its text side (and temperature) stay frozen. Trained in place; on
            return it holds the best epoch's weights, is in eval mode, and its parameters' ``requires_grad`` are
            as they were on entry (which decides what a checkpoint stores).
        waves: ``(N, window_samples)`` float32 windows at 16 kHz (an array or a memory-mapped ``.npy``).
        teacher: ``(N, joint_dim)`` the teacher's audio embeddings of the same windows (any norm).
        train_idx: rows of ``waves`` to train on.
        valid_idx: rows to validate on after every epoch (may be empty: then the last epoch is kept).
        cfg: the settings.
        text: optional ``(N, joint_dim)`` unit text embeddings (the frozen text side's) for the contrastive term;
            an all-zero row means the window has no text. Needed when ``cfg.contrastive_weight > 0``.

    Returns:
        The run's :class:`DistillResult`.

    Raises:
        ConfigError: mismatched shapes, no training windows, a bad setting, or a contrastive weight without
            ``text``.
    """
    n = len(waves)
    if teacher.shape[0] != n or teacher.ndim != 2:
        raise ConfigError(f"teacher embeddings have shape {teacher.shape}; expected ({n}, joint_dim), one per window")
    if teacher.shape[1] != model.config.joint_dim:
        raise ConfigError(f"teacher embeddings are {teacher.shape[1]}-d; the student's joint space is "
                          f"{model.config.joint_dim}-d: distil from a teacher in the same space")  # fmt: skip
    tr = np.asarray(train_idx, dtype=np.int64)
    va = np.asarray(valid_idx, dtype=np.int64)
    if tr.size == 0:
        raise ConfigError("no training windows: pass the rows to train on as train_idx")
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.lr <= 0:
        raise ConfigError(f"epochs, batch_size and lr must be positive (got {cfg.epochs}, {cfg.batch_size}, {cfg.lr})")
    if cfg.contrastive_weight > 0 and (text is None or text.shape != teacher.shape):
        raise ConfigError("contrastive_weight > 0 needs text: (N, joint_dim) text embeddings, zero rows for none")
    target = torch.from_numpy(np.ascontiguousarray(teacher, dtype=np.float32))
    text_t = torch.from_numpy(np.ascontiguousarray(text, dtype=np.float32)) if text is not None else None
    has_text = (text_t.abs().sum(dim=1) > 0) if text_t is not None else None

    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    params = _audio_parameters(model)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = -(-tr.size // cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, warmup_steps=min(cfg.warmup_steps, total - 1), total_steps=total)
    )
    scale = model.logit_scale.detach().exp().clamp(max=model.config.max_logit_scale) if cfg.contrastive_weight else None
    rng = np.random.default_rng(cfg.seed)

    def batch(rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(waves[np.sort(rows)], dtype=np.float32))

    def losses(rows: np.ndarray) -> dict[str, torch.Tensor]:
        rows = np.sort(rows)  # memory-mapped reads in file order
        emb = model.encode_audio(batch(rows))  # (B, D)
        out = {"distill": cosine_distill_loss(emb, target[rows])}
        if scale is not None and text_t is not None and has_text is not None:
            keep = has_text[rows]
            if int(keep.sum()) >= 2:
                out["contrastive"] = info_nce(F.normalize(emb[keep], dim=-1), text_t[rows][keep], scale)
        return out

    t_start = time.perf_counter()
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    step = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # dropout
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            order = tr[rng.permutation(tr.size)]
            sums: dict[str, float] = {}
            t_epoch, seen, t_log, seen_log = time.perf_counter(), 0, time.perf_counter(), 0
            for a in range(0, order.size, cfg.batch_size):
                rows = order[a : a + cfg.batch_size]
                parts = losses(rows)
                loss = parts["distill"] + cfg.contrastive_weight * parts.get("contrastive", torch.zeros(()))
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                seen += rows.size
                seen_log += rows.size
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach()) * rows.size
                if cfg.log_every and step % cfg.log_every == 0:
                    now = time.perf_counter()
                    extra = (
                        f", contrastive {float(parts['contrastive'].detach()):.4f}" if "contrastive" in parts else ""
                    )
                    log.info("distill epoch %d step %d: distill %.4f%s, %.1f samples/s, lr %.2e", epoch, step,
                             float(parts["distill"].detach()), extra, seen_log / max(now - t_log, 1e-9),
                             sched.get_last_lr()[0])  # fmt: skip
                    t_log, seen_log = now, 0
            rate = seen / max(time.perf_counter() - t_epoch, 1e-9)
            valid = float("nan")
            if va.size:
                model.eval()
                with torch.no_grad():
                    tot = 0.0
                    for a in range(0, va.size, 2 * cfg.batch_size):
                        rows = va[a : a + 2 * cfg.batch_size]
                        tot += float(losses(rows)["distill"]) * rows.size
                valid = tot / va.size
            row = {"epoch": float(epoch), **{k: round(v / seen, 5) for k, v in sums.items()}}
            row.update(valid=round(valid, 5), samples_per_s=round(rate, 2))
            history.append(row)
            log.info("distill epoch %d: %s", epoch, row)
            if best is None or not va.size or valid < best[0]:
                state = {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith("audio_")}
                best = (valid, epoch, state)
    assert best is not None
    model.load_state_dict({**model.state_dict(), **best[2]})
    model.eval()
    for name, p in model.named_parameters():
        p.requires_grad_(requires_grad[name])
    return DistillResult(best_epoch=best[1], best_valid=best[0], history=history,
                         seconds=round(time.perf_counter() - t_start, 1))  # fmt: skip
