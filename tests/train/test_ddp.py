"""Two CPU processes (gloo DDP) give the same loss and gradients as one process on the same global batch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from musicsearch.models.registry import build_model, model_config

GLOBAL = 8


def _batch() -> tuple[torch.Tensor, list[str], torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    wave = torch.randn(GLOBAL, 16000, generator=g)
    tags = (torch.rand(GLOBAL, 6, generator=g) > 0.5).float()
    tags[:, 0] = 1.0
    texts = [f"tag{i}, shared" for i in range(GLOBAL)]
    return wave, texts, tags


def _model(objective: str) -> torch.nn.Module:
    torch.manual_seed(0)
    # eval mode: BatchNorm uses running statistics (per-rank batch statistics would differ by design) and
    # dropout is off, so the comparison isolates the loss, the feature gathering and gradient averaging
    return build_model(model_config("debug", objective=objective, tags=tuple("abcdef"))).eval()


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _worker(rank: int, world: int, init_file: str, objective: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = _model(objective)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        wave, texts, tags = _batch()
        b = GLOBAL // world
        sl = slice(rank * b, (rank + 1) * b)
        res = ddp(wave[sl], texts[sl], tags[sl], generator=torch.Generator().manual_seed(5))
        res.loss.backward()
        loss = res.loss.detach().clone()
        dist.all_reduce(loss)
        torch.save({"loss": loss / world, "grads": _grads(model)}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("objective", ["contrastive", "triplet"])
def test_ddp_matches_single_process(tmp_path: Path, objective: str) -> None:
    single = _model(objective)
    wave, texts, tags = _batch()
    res = single(wave, texts, tags, generator=torch.Generator().manual_seed(5))
    res.loss.backward()
    expect = _grads(single)
    out = str(tmp_path / "res")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.start_processes(_worker, args=(2, str(tmp_path / "init"), objective, out), nprocs=2, start_method="spawn")
    for rank in range(2):
        got = torch.load(f"{out}.{rank}", weights_only=False)
        assert torch.allclose(got["loss"], res.loss.detach(), atol=1e-6), (got["loss"], res.loss)
        assert got["grads"].keys() == expect.keys()
        for k, g in expect.items():
            assert torch.allclose(got["grads"][k], g, atol=1e-6, rtol=1e-4), (k, got["grads"][k], g)
