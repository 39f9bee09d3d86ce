"""Writing any loaded model (a published checkpoint included) in our checkpoint format, verified by reloading it and
comparing embeddings on a fixed probe."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from musicsearch import __version__
from musicsearch.errors import CheckpointError
from musicsearch.losses.registry import objective
from musicsearch.models.checkpoint import load_model_file, save_model
from musicsearch.models.dual_encoder import TextToMusic


@dataclass(frozen=True)
class ExportResult:
    """A written checkpoint: its path, SHA-256, and the largest embedding difference after reloading it."""

    path: Path
    sha256: str
    max_abs_diff: float | None


def _probe_texts(model: TextToMusic) -> list[str]:
    if not objective(model.config.objective).text_tower:
        return list(model.config.tags[:3])
    return ["rock", "a calm piano piece for a rainy evening", "jazz, piano, mellow"]


def embedding_difference(a: TextToMusic, b: TextToMusic, *, seconds: float = 2.0, seed: int = 0) -> float:
    """Largest absolute difference of audio and text embeddings of two models on a fixed probe."""
    gen = torch.Generator().manual_seed(seed)
    n = min(a.config.audio.window_samples, int(seconds * a.config.audio.mel.sample_rate))
    wave = 0.1 * torch.randn(1, n, generator=gen)
    texts = _probe_texts(a)
    with torch.inference_mode():
        dev_a = next(a.parameters()).device
        dev_b = next(b.parameters()).device
        da = (a.encode_audio(wave.to(dev_a)).cpu() - b.encode_audio(wave.to(dev_b)).cpu()).abs().max()
        dt = (a.encode_text(texts).float().cpu() - b.encode_text(texts).float().cpu()).abs().max()
    return float(max(da, dt))


def export_model(
    model: TextToMusic,
    out: str | os.PathLike[str],
    *,
    half: bool = False,
    source: str | None = None,
    meta: Mapping[str, Any] | None = None,
    include_frozen_text: bool | None = None,
    verify: bool = True,
) -> ExportResult:
    """Write ``model`` in our checkpoint format (``.safetensors`` + config), so later loads need no conversion.

    The model's ``checkpoint_meta`` (source, conversion facts, preprocessing) is kept in the file's metadata,
    with ``exported`` (source name, time, precision). Published models store their fine-tuned text tower.

    Args:
        model: any loaded model.
        out: destination ``.safetensors`` path.
        half: store floating weights as float16.
        source: what was exported (a name or path), for the metadata.
        meta: extra metadata.
        include_frozen_text: also store frozen pretrained text weights (default: for published models).
        verify: reload the file and compare embeddings on a fixed probe (float32: must agree to 1e-5).

    Returns:
        An :class:`ExportResult`.

    Raises:
        CheckpointError: if the reloaded model's embeddings differ (float32).
    """
    info = dict(getattr(model, "checkpoint_meta", None) or {})
    info.update(meta or {})
    info["exported"] = {
        "from": source,
        "musicsearch": __version__,
        "half": half,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    published = bool(info.get("published"))
    include = published if include_frozen_text is None else include_frozen_text
    digest = save_model(
        model, out, meta=json.loads(json.dumps(info, default=str)), include_frozen_text=include, half=half
    )
    diff = None
    if verify:
        reloaded = load_model_file(out, sha256=digest)
        diff = embedding_difference(model.eval(), reloaded)
        if not half and diff > 1e-5:
            raise CheckpointError(f"{out} reloads to different embeddings (max abs diff {diff:.3g}); not exported")
    return ExportResult(Path(out), digest, diff)
