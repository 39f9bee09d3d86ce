"""Gathering features from every data-parallel worker, with gradients flowing back to their owners."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


_GROUP: Any = None


def feature_group() -> Any:
    """A process group of its own for feature gathering.

    DDP all-reduces gradient buckets asynchronously during the backward pass; the gather's own collectives in the
    same pass are kept on a separate group so the two streams of messages can never be paired with each other.
    """
    global _GROUP
    if _GROUP is None:
        _GROUP = dist.new_group()
    return _GROUP


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (B, ...) from all ranks along dim 0; gradients reach every rank's own slice.

    The backward pass sums the gradient of the gathered tensor over all ranks and returns each rank the slice of
    its own rows. With DDP's gradient averaging this makes the update equal to that of one process on the global
    batch. With a single process this is the identity.
    """
    _rank, size = world()
    if size == 1:
        return x
    return _GatherWithGrad.apply(x)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0, without gradient (labels, tag masks)."""
    _rank, size = world()
    if size == 1:
        return x
    out = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather in the forward pass; all_reduce(sum) of the gradient, then the own slice, in the backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        rank, size = world()
        ctx.rank, ctx.rows = rank, x.shape[0]
        out = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(out, x.contiguous(), group=feature_group())
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=feature_group())
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]
