"""One place that turns a model name or path into a loaded model: :func:`resolve_model`.

Accepted, in this order:

* a ``.safetensors`` file written by :func:`musicsearch.models.checkpoint.save_model`;
* a training run folder (``musicsearch train --out DIR``): its ``best.safetensors``;
* a model shipped with the package by name (``default``; ``src/musicsearch/assets/models/models.json`` lists them
  with their checksums and the commands that made them);
* a published checkpoint of the paper by name (``ttmr/contrastive-bert-stochastic``, ...; see
  :mod:`musicsearch.models.pretrained`).

Every command that takes ``--model`` goes through :func:`resolve_model`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from musicsearch.errors import CheckpointError
from musicsearch.fileio import sha256_file
from musicsearch.models.checkpoint import load_model_file
from musicsearch.models.dual_encoder import TextToMusic

__all__ = ["DEFAULT_MODEL", "RUN_BEST", "SHIPPED_DIR", "ResolvedModel", "resolve_model", "shipped_models"]

#: The checkpoint a training run folder is resolved to.
RUN_BEST = "best.safetensors"
#: Where the package keeps the models it ships, with ``models.json`` describing them.
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "assets" / "models"
#: The model used when none is named.
DEFAULT_MODEL = "default"


def shipped_models() -> dict[str, dict[str, Any]]:
    """Name -> entry (``file``, ``sha256``, ``command``, ``metrics``, ...) of the models shipped with the package."""
    index = SHIPPED_DIR / "models.json"
    if not index.is_file():
        return {}
    data = json.loads(index.read_text(encoding="utf-8"))
    return {k: v for k, v in data.get("models", {}).items() if (SHIPPED_DIR / v["file"]).is_file()}


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
    if not p.exists():
        shipped = shipped_models()
        if str(name_or_path) in shipped:
            entry = shipped[str(name_or_path)]
            ckpt = SHIPPED_DIR / entry["file"]
            model = load_model_file(ckpt, sha256=sha256 or entry["sha256"], device=device)
            return ResolvedModel(
                model, str(name_or_path), "shipped", str(ckpt), entry["sha256"], dict(model.checkpoint_meta)
            )
        from musicsearch.models.pretrained import is_published, load_pretrained

        if is_published(str(name_or_path)):
            model = load_pretrained(str(name_or_path), device=device)
            m = dict(model.checkpoint_meta)
            src = m.get("source", {})
            return ResolvedModel(
                model,
                str(name_or_path),
                "published",
                str(src.get("best_pth", "")),
                str(src.get("best_pth_sha256", "")),
                m,
            )
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
            f"no model at {str(name_or_path)!r}: give a .safetensors checkpoint, a training run folder, a shipped "
            f"model ({', '.join(sorted(shipped_models())) or 'none installed'}) or a published one "
            "(musicsearch.models.pretrained, e.g. ttmr/contrastive-bert-stochastic)"
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
