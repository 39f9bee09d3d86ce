"""Training configuration: a frozen dataclass, read from YAML/JSON and overridable with ``key=value`` pairs."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from musicsearch.errors import ConfigError
from musicsearch.losses.registry import objective


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs.

    Attributes:
        manifest: JSONL manifest with ``split`` train/valid (tracks without a split train).
        out_dir: run folder (``last.pt`` to resume, ``best.safetensors``, ``log.jsonl``).
        preset: audio tower preset (``paper``, ``small``, ``debug``, ``musicnn-*``: see the registry).
        objective: ``contrastive``, ``triplet`` or ``classification``.
        text_encoder: short name (``bert``, ``minilm``, ``glove``, ``tiny-bert``) or id; preset default if None.
        text_rep: ``tag``, ``sentence`` or ``stochastic``.
        epochs: training epochs (the release: 100).
        warmup_epochs: linear warm-up epochs (the release: 10).
        batch_size: per-process batch size (the release: 32 on each of 2 GPUs).
        lr: base learning rate; None picks the release's (5e-5 transformer, 1e-4 word vectors, 1e-3 classification).
        seed: the one seed of the run.
        num_workers: data-loader worker processes.
        patience: early stopping after this many epochs without validation improvement.
        log_every: steps between log lines.
        save_every: steps between mid-epoch resumable checkpoints (0: at epoch ends only).
        max_steps: stop after this many optimiser steps (benchmarks, tests); None for no limit.
        cache_dir: decoded-audio cache folder (``musicsearch cache``), used for tracks it holds.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        amp: bfloat16 autocast (``torch.autocast``) on the training device, CUDA or CPU; off by default (float32).
            The mel front end always runs in float32.
        compile: compile the audio tower with ``torch.compile`` (default mode); the text path (tokenizer, strings)
            stays eager. Checkpoints keep the plain module's keys. Falls back to eager with a warning when the
            compiler backend cannot run here (no C++ compiler for CPU inductor, no Triton on CUDA).
        tensorboard: also write TensorBoard scalars under ``out_dir/tb``.
        init_from: a model checkpoint to start from (fine-tuning); its config must match.
        text_trainable: override whether the transformer text encoder is fine-tuned.
        text_trainable_layers: fine-tune only the top N transformer layers (None: all, as the paper).
        triplet_weighting: triplet models: negative weighting rule by name, ``official`` (the release's; see
            :mod:`musicsearch.losses.triplet`).
    """

    manifest: str
    out_dir: str
    preset: str = "small"
    objective: str = "contrastive"
    text_encoder: str | None = None
    text_rep: str = "stochastic"
    epochs: int = 100
    warmup_epochs: int = 10
    batch_size: int = 32
    lr: float | None = None
    seed: int = 0
    num_workers: int = 0
    patience: int = 20
    log_every: int = 10
    save_every: int = 0
    max_steps: int | None = None
    cache_dir: str | None = None
    device: str = "auto"
    amp: bool = False
    compile: bool = False
    tensorboard: bool = False
    init_from: str | None = None
    text_trainable: bool | None = None
    text_trainable_layers: int | None = None
    triplet_weighting: str = "official"

    def resolved_lr(self) -> float:
        """The learning rate: explicit, or the release's per model family."""
        if self.lr is not None:
            return self.lr
        fixed = objective(self.objective).default_lr
        if fixed is not None:
            return fixed
        if self.text_encoder == "glove" or (self.text_encoder or "").endswith(".txt"):
            return 1e-4
        return 5e-5

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict."""
        return dataclasses.asdict(self)


def _coerce(field: dataclasses.Field[Any], value: str) -> Any:
    if value.lower() in ("none", "null"):
        return None
    kind = str(field.type)
    if "bool" in kind:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{field.name} must be true or false, got {value!r}")
    if "int" in kind and "float" not in kind:
        return int(value)
    if "float" in kind:
        return float(value)
    return value


def load_train_config(path: str | None = None, overrides: list[str] | None = None, **kwargs: Any) -> TrainConfig:
    """Read a YAML/JSON file (optional), then apply keyword values, then ``key=value`` overrides.

    Raises:
        ConfigError: on an unknown key, a malformed value, or a missing ``manifest``/``out_dir``.
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"training config {p} does not exist")
        text = p.read_text(encoding="utf-8")
        loaded = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
        if not isinstance(loaded, dict):
            raise ConfigError(f"training config {p} must be a mapping of keys to values")
        data.update(loaded)
    data.update({k: v for k, v in kwargs.items() if v is not None})
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, value = item.split("=", 1)
        if key not in fields:
            raise ConfigError(f"unknown training option {key!r}; known: {', '.join(sorted(fields))}")
        try:
            data[key] = _coerce(fields[key], value)
        except ValueError:
            raise ConfigError(f"bad value for {key}: {value!r}") from None
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(f"unknown training options {sorted(unknown)}; known: {', '.join(sorted(fields))}")
    for key in ("manifest", "out_dir"):
        if not data.get(key):
            raise ConfigError(f"training needs {key!r} (in the config file or as --{key.replace('_', '-')})")
    return TrainConfig(**data)
