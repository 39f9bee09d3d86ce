"""One place that turns a model name or path into a loaded model: :func:`resolve_model`.

Accepted today:

* a ``.safetensors`` file written by :func:`musicsearch.models.checkpoint.save_model`;
* a training run folder (``musicsearch train --out DIR``): its ``best.safetensors``.

Named models (the default model, published checkpoints) plug in here later, as further branches of
:func:`resolve_model`, so every command that takes ``--model`` gains them at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from musicsearch.errors import CheckpointError
from musicsearch.fileio import sha256_file
from musicsearch.models.checkpoint import load_model_file
from musicsearch.models.dual_encoder import TextToMusic

__all__ = ["RUN_BEST", "ResolvedModel", "resolve_model"]

#: The checkpoint a training run folder is resolved to.
RUN_BEST = "best.safetensors"


@dataclass(frozen=True)
class ResolvedModel:
    """A loaded model and where it came from.

    Attributes:
        model: the model, in eval mode.
        name: display name (the config's name, or the run folder's / file's name).
        source: how it was found (``"file"``, ``"run"``).
        path: the checkpoint file that was loaded.
        sha256: SHA-256 of that file.
        meta: the checkpoint's stored meta (training facts), possibly empty.
    """

    model: TextToMusic
    name: str
    source: str
    path: str
    sha256: str
    meta: dict[str, Any] = field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        """JSON-ready identity of the model for reports."""
        cfg = self.model.config
        return {
            "name": self.name,
            "config_name": cfg.name,
            "objective": cfg.objective,
            "text_encoder": cfg.text.name if cfg.text.kind != "none" else None,
            "text_rep": cfg.text_rep,
            "joint_dim": cfg.joint_dim,
            "window_samples": cfg.audio.window_samples,
            "source": self.source,
            "path": self.path,
            "sha256": self.sha256,
        }


def resolve_model(
    name_or_path: str | os.PathLike[str], *, device: str | torch.device = "cpu", sha256: str | None = None
) -> ResolvedModel:
    """Load a model from a checkpoint file or a training run folder.

    Args:
        name_or_path: a ``.safetensors`` checkpoint, or a run folder holding ``best.safetensors``.
        device: where to put the model.
        sha256: expected checksum of the checkpoint file (a mismatch is an error).

    Returns:
        A :class:`ResolvedModel` (model in eval mode).

    Raises:
        CheckpointError: if nothing loadable is found there (the message says what is accepted), or the file
            is damaged or does not match its config.
    """
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        ckpt = p / RUN_BEST
        if not ckpt.is_file():
            raise CheckpointError(
                f"{p} is a folder without {RUN_BEST}; give a training run folder (musicsearch train --out DIR) "
                "whose validation saved a best model, or the path of a .safetensors checkpoint"
            )
        source, name = "run", p.resolve().name
    elif p.is_file():
        ckpt, source, name = p, "file", ""
    else:
        raise CheckpointError(
            f"no model at {str(name_or_path)!r}: give a .safetensors checkpoint or a training run folder "
            "(named models are not available yet)"
        )
    digest = sha256_file(ckpt)
    if sha256 is not None and digest != sha256:
        raise CheckpointError(f"checkpoint {ckpt} has SHA-256 {digest}, expected {sha256}; download or rebuild it")
    model = load_model_file(ckpt, device=device)
    meta = dict(getattr(model, "checkpoint_meta", {}) or {})
    return ResolvedModel(
        model=model,
        name=name or model.config.name,
        source=source,
        path=str(ckpt.resolve()),
        sha256=digest,
        meta=meta,
    )
