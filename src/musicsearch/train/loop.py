"""One training entry point for CPU, one GPU, and many GPUs or nodes (``torchrun``, DDP).

Rank 0 logs and saves. Every random draw is positional (seed, epoch, index, step), so a run killed at any point
resumes from ``last.pt`` and continues bit for bit on CPU; under DDP each global batch is the batch a single
process with ``world_size x batch_size`` would see.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

from musicsearch.data.datasets import TrackWindowDataset, collate
from musicsearch.data.manifest import Track, read_manifest, tag_vocabulary
from musicsearch.errors import ConfigError, MusicSearchError
from musicsearch.fileio import atomic_write, sha256_file
from musicsearch.losses.registry import objective
from musicsearch.losses.triplet import check_weighting
from musicsearch.models.checkpoint import load_model_file, load_state_strict, save_model
from musicsearch.models.dual_encoder import TextToMusic, count_parameters
from musicsearch.models.registry import build_model, model_config
from musicsearch.train.config import TrainConfig
from musicsearch.train.schedule import warmup_cosine

log = logging.getLogger(__name__)


class GlobalBatchSampler(Sampler[int]):
    """Indices of this rank's share of each global batch, from a permutation fixed by ``(seed, epoch)``.

    Global batch ``b`` is ``perm[b * W * B : (b + 1) * W * B]``; rank ``r`` takes its ``r``-th slice of ``B``.
    The last incomplete global batch is dropped. ``start_batch`` skips batches already done (resume).
    """

    def __init__(self, n: int, *, batch_size: int, rank: int, world: int, seed: int, shuffle: bool) -> None:
        self.n, self.batch_size, self.rank, self.world = n, batch_size, rank, world
        self.seed, self.shuffle = seed, shuffle
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation is used."""
        self.epoch = epoch

    @property
    def batches(self) -> int:
        """Global batches per epoch."""
        return self.n // (self.batch_size * self.world)

    def __len__(self) -> int:
        return (self.batches - self.start_batch) * self.batch_size

    def __iter__(self) -> Iterator[int]:
        order = (
            np.random.default_rng((self.seed, self.epoch)).permutation(self.n) if self.shuffle else np.arange(self.n)
        )
        g = self.batch_size * self.world
        for b in range(self.start_batch, self.batches):
            chunk = order[b * g : (b + 1) * g]
            yield from (int(i) for i in chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size])


@dataclass
class TrainResult:
    """What a run produced."""

    out_dir: Path
    best_path: Path | None
    last_path: Path
    global_step: int
    epochs_done: int
    history: list[dict[str, Any]] = field(default_factory=list)


def _setup_distributed(cfg: TrainConfig) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cfg.device == "auto":
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def split_tracks(tracks: list[Track]) -> tuple[list[Track], list[Track]]:
    """Train tracks (split ``train`` or none) and validation tracks (split ``valid``)."""
    train = [t for t in tracks if t.split in (None, "train")]
    valid = [t for t in tracks if t.split == "valid"]
    return train, valid


def compile_backend_problem(device: torch.device) -> str | None:
    """Why ``torch.compile`` (inductor) cannot run on ``device`` here, or None when a tiny probe compiles and runs.

    The probe compiles a one-line function on ``device``, which needs the backend's toolchain (a C++ compiler
    for CPU, Triton for CUDA); the real model is never touched by a failed attempt.
    """
    try:
        probe = torch.compile(lambda x: torch.sin(x) * 2.0 + 1.0)
        x = torch.linspace(0.0, 1.0, 8, device=device)
        got = probe(x)
        if not torch.allclose(got, torch.sin(x) * 2.0 + 1.0, rtol=1e-5, atol=1e-6):
            return "the compiled probe gave a wrong result"
    except Exception as exc:  # any backend failure (missing compiler, Triton, ...) means: stay eager
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return None


def _compile_in_place(model: TextToMusic, device: torch.device) -> bool:
    """Compile ``model.audio_encoder`` in place (``nn.Module.compile``: the state_dict keeps its plain keys).

    Only the audio tower is compiled: it is the tensor-only, fixed-shape part where compilation pays; the text
    path tokenizes strings and would only break graphs. Returns False (after a warning) when the backend cannot
    run on this machine, and training continues eagerly.
    """
    problem = compile_backend_problem(device)
    if problem is not None:
        log.warning(
            "compile=true but torch.compile cannot run on %s here (%s); training continues without compilation "
            "(install a C++ compiler for CPU, or Triton for CUDA, to use it; --set compile=false silences this)",
            device,
            problem,
        )
        return False
    model.audio_encoder.compile()
    log.info("torch.compile: audio tower compiled (mode default) on %s", device)
    return True


def _save_torch(obj: Any, path: Path) -> None:
    with atomic_write(path, "wb") as fh:
        torch.save(obj, fh)


class Trainer:
    """Holds the state of one run; :meth:`fit` trains until done, ``max_steps`` or early stopping."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.rank, self.world, self.device = _setup_distributed(cfg)
        self.out = Path(cfg.out_dir)
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
        tracks = read_manifest(cfg.manifest)
        self.train_tracks, self.valid_tracks = split_tracks(tracks)
        if not self.train_tracks:
            raise MusicSearchError(f"manifest {cfg.manifest} has no training tracks (split 'train' or none)")
        self.vocab = tag_vocabulary(self.train_tracks)
        torch.manual_seed(cfg.seed)
        mcfg = model_config(
            cfg.preset, objective=cfg.objective, text_encoder=cfg.text_encoder, text_rep=cfg.text_rep, tags=self.vocab
        )
        if cfg.text_trainable is not None and mcfg.text.kind == "transformer":
            mcfg = mcfg.replace(text={"trainable": cfg.text_trainable})
        if cfg.text_trainable_layers is not None and mcfg.text.kind == "transformer":
            mcfg = mcfg.replace(text={"trainable_layers": cfg.text_trainable_layers})
        if objective(mcfg.objective).weighted_negatives:
            mcfg = mcfg.replace(triplet_weighting=check_weighting(cfg.triplet_weighting))
        if cfg.init_from:
            init = load_model_file(cfg.init_from)
            w = mcfg.triplet_weighting  # a training-only choice, like the name and the vocabulary
            if dataclasses.replace(init.config, name="", tags=(), triplet_weighting=w) != dataclasses.replace(
                mcfg, name="", tags=(), triplet_weighting=w
            ):
                raise ConfigError(f"--init-from {cfg.init_from} holds a different architecture than this run's config")
            if objective(mcfg.objective).tag_head and init.config.tags != mcfg.tags:
                raise ConfigError("--init-from: the classification vocabulary differs from this manifest's")
            self.model: TextToMusic = init.train()
            self.model.config = mcfg
        else:
            self.model = build_model(mcfg)
        self.model.to(self.device)
        self.mcfg = mcfg
        #: whether the audio tower runs compiled (``cfg.compile`` and a working backend on this machine)
        self.compiled = bool(cfg.compile) and _compile_in_place(self.model, self.device)
        self.manifest_sha256 = sha256_file(cfg.manifest)  # recorded in every best checkpoint
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=cfg.resolved_lr(), weight_decay=0.0)
        cache = None
        if cfg.cache_dir:
            from musicsearch.data.cache import AudioCache

            cache = AudioCache.open(cfg.cache_dir)
        win = mcfg.audio.window_samples
        self.train_set = TrackWindowDataset(
            self.train_tracks, self.vocab, window_samples=win, text_rep=cfg.text_rep, seed=cfg.seed, cache=cache
        )
        self.sampler = GlobalBatchSampler(
            len(self.train_set),
            batch_size=cfg.batch_size,
            rank=self.rank,
            world=self.world,
            seed=cfg.seed,
            shuffle=True,
        )
        if self.sampler.batches == 0:
            raise MusicSearchError(
                f"{len(self.train_set)} training tracks cannot fill one global batch of "
                f"{cfg.batch_size * self.world}; lower batch_size"
            )
        self.loader = DataLoader(
            self.train_set,
            batch_size=cfg.batch_size,
            sampler=self.sampler,
            collate_fn=collate,
            num_workers=cfg.num_workers,
            generator=torch.Generator(),  # keep the global RNG (dropout) untouched by the loader
            persistent_workers=False,
            pin_memory=self.device.type == "cuda",
        )
        self.valid_loader: DataLoader[Any] | None = None
        if self.valid_tracks:
            vset = TrackWindowDataset(
                self.valid_tracks,
                self.vocab,
                window_samples=win,
                text_rep=cfg.text_rep,
                seed=cfg.seed,
                train=False,
                cache=cache,
            )
            vb = max(1, min(cfg.batch_size, len(vset) // self.world))
            vb = max(objective(mcfg.objective).min_batch, vb)
            vsampler = GlobalBatchSampler(
                len(vset), batch_size=vb, rank=self.rank, world=self.world, seed=0, shuffle=False
            )
            if vsampler.batches > 0:
                self.valid_loader = DataLoader(
                    vset,
                    batch_size=vb,
                    sampler=vsampler,
                    collate_fn=collate,
                    num_workers=cfg.num_workers,
                    generator=torch.Generator(),
                )
        self.steps_per_epoch = self.sampler.batches
        total = cfg.epochs * self.steps_per_epoch
        warm = cfg.warmup_epochs * self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, warmup_steps=warm, total_steps=total)
        )
        self.ddp: torch.nn.Module = self.model
        if self.world > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.epoch = 0
        self.batch_in_epoch = 0
        self.global_step = 0
        self.best_val = math.inf
        self.bad_epochs = 0
        self.history: list[dict[str, Any]] = []
        self.writer: Any = None
        if cfg.tensorboard and self.rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tb"))
        self.last_path = self.out / "last.pt"
        self.best_path = self.out / "best.safetensors"
        if self.last_path.is_file():
            self._resume()

    # --- checkpoints -----------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "format": "musicsearch-train/1",
            "train_config": self.cfg.to_dict(),
            "model_config": self.mcfg.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "global_step": self.global_step,
            "best_val": self.best_val,
            "bad_epochs": self.bad_epochs,
            "history": self.history,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    def save_last(self) -> None:
        """Write the resumable state (rank 0), atomically."""
        if self.rank == 0:
            _save_torch(self._state(), self.last_path)

    def _resume(self) -> None:
        try:
            state = torch.load(self.last_path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise MusicSearchError(f"cannot resume from {self.last_path} ({exc}); delete it to start afresh") from None
        if state.get("model_config") != self.mcfg.to_dict():
            raise ConfigError(
                f"{self.last_path} was written by a run with another model config; use a new out_dir or delete it"
            )
        load_state_strict(self.model, state["model"], source=str(self.last_path))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = state["epoch"]
        self.batch_in_epoch = state["batch_in_epoch"]
        self.global_step = state["global_step"]
        self.best_val = state["best_val"]
        self.bad_epochs = state["bad_epochs"]
        self.history = state["history"]
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        log.info("resumed from %s at epoch %d, batch %d", self.last_path, self.epoch, self.batch_in_epoch)

    def _save_best(self, val: float) -> None:
        if self.rank != 0:
            return
        meta = {
            "train_config": self.cfg.to_dict(),
            "manifest_sha256": self.manifest_sha256,
            "epoch": self.epoch,
            "global_step": self.global_step,
            "valid_loss": val,
        }
        save_model(self.model, self.best_path, meta=meta)

    # --- steps -----------------------------------------------------------------------------------
    @property
    def precision(self) -> str:
        """The arithmetic this run trains in: ``bfloat16-autocast`` (``cfg.amp``) or ``float32``."""
        return "bfloat16-autocast" if self.cfg.amp and self.device.type in ("cuda", "cpu") else "float32"

    def _autocast(self) -> Any:
        enabled = self.precision == "bfloat16-autocast"
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _step_generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step)

    def _log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if self.rank != 0:
            return
        with open(self.out / "log.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for k, v in record.items():
                if isinstance(v, int | float) and k not in ("epoch", "step"):
                    self.writer.add_scalar(k, v, record.get("step", self.global_step))

    @torch.no_grad()
    def validate(self) -> float | None:
        """Mean validation loss over the valid split (deterministic windows and texts), or None without one."""
        if self.valid_loader is None:
            return None
        self.model.eval()
        total = torch.zeros(2, dtype=torch.float64)
        for i, batch in enumerate(self.valid_loader):
            with self._autocast():
                out = self.model(
                    batch["wave"].to(self.device),
                    batch["text"],
                    batch["tags"].to(self.device),
                    generator=self._step_generator(-1 - i),
                )
            total += torch.tensor([float(out.loss) * len(batch["text"]), len(batch["text"])], dtype=torch.float64)
        if self.world > 1:
            dist.all_reduce(total)
        self.model.train()
        return float(total[0] / total[1])

    def fit(self) -> TrainResult:
        """Train to the end (or ``max_steps`` / early stopping); returns where the checkpoints are."""
        cfg = self.cfg
        if self.rank == 0:
            log.info(
                "training %s: %d train / %d valid tracks, %d tags, %.2f M trainable parameters, %d steps/epoch, "
                "world %d, device %s, precision %s, compiled %s",
                self.mcfg.name,
                len(self.train_tracks),
                len(self.valid_tracks),
                len(self.vocab),
                count_parameters(self.model, trainable_only=True) / 1e6,
                self.steps_per_epoch,
                self.world,
                self.device,
                self.precision,
                self.compiled,
            )
        self.model.train()
        stop = False
        while self.epoch < cfg.epochs and not stop:
            self.sampler.set_epoch(self.epoch)
            self.sampler.start_batch = self.batch_in_epoch
            self.train_set.set_epoch(self.epoch)
            t0, seen, loss_sum, n_loss = time.perf_counter(), 0, 0.0, 0
            epoch_loss, epoch_n = 0.0, 0
            for batch in self.loader:
                wave = batch["wave"].to(self.device, non_blocking=True)
                tags = batch["tags"].to(self.device, non_blocking=True)
                with self._autocast():
                    out = self.ddp(wave, batch["text"], tags, generator=self._step_generator(self.global_step))
                self.optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                self.optimizer.step()
                self.scheduler.step()
                self.global_step += 1
                self.batch_in_epoch += 1
                seen += len(batch["text"]) * self.world
                loss_sum += out.stats["loss"]
                n_loss += 1
                epoch_loss += out.stats["loss"]
                epoch_n += 1
                if self.global_step % cfg.log_every == 0:
                    dt = time.perf_counter() - t0
                    rec = {
                        "epoch": self.epoch,
                        "step": self.global_step,
                        "loss": loss_sum / n_loss,
                        "lr": self.scheduler.get_last_lr()[0],
                        "samples_per_s": seen / max(dt, 1e-9),
                    }
                    if "temperature" in out.stats:
                        rec["temperature"] = out.stats["temperature"]
                    self._log(rec)
                    if self.rank == 0:
                        log.info(
                            "epoch %d step %d | %.1f samples/s | loss %.4f | lr %.2e%s",
                            self.epoch,
                            self.global_step,
                            rec["samples_per_s"],
                            rec["loss"],
                            rec["lr"],
                            f" | temperature {rec['temperature']:.4f}" if "temperature" in rec else "",
                        )
                    t0, seen, loss_sum, n_loss = time.perf_counter(), 0, 0.0, 0
                if cfg.save_every and self.global_step % cfg.save_every == 0:
                    self.save_last()
                if cfg.max_steps is not None and self.global_step >= cfg.max_steps:
                    stop = True
                    break
            if stop and self.batch_in_epoch < self.steps_per_epoch:
                break
            val = self.validate()
            train_loss = epoch_loss / epoch_n if epoch_n else math.inf
            metric = val if val is not None else train_loss
            improved = metric < self.best_val
            if improved:
                self.best_val, self.bad_epochs = metric, 0
                self._save_best(metric)
            else:
                self.bad_epochs += 1
            self._log(
                {
                    "epoch": self.epoch,
                    "step": self.global_step,
                    "train_loss": train_loss,
                    "valid_loss": val,
                    "best": improved,
                }
            )
            if self.rank == 0:
                log.info("epoch %d done | valid loss %s | best %.4f", self.epoch, val, self.best_val)
            self.epoch += 1
            self.batch_in_epoch = 0
            self.save_last()
            if self.bad_epochs >= cfg.patience:
                log.info("early stopping: %d epochs without improvement", self.bad_epochs)
                stop = True
        self.save_last()
        if self.rank == 0 and not self.best_path.is_file():
            save_model(
                self.model, self.best_path, meta={"train_config": self.cfg.to_dict(), "note": "no epoch finished"}
            )
        if self.writer is not None:
            self.writer.close()
        return TrainResult(
            self.out,
            self.best_path if self.best_path.is_file() else None,
            self.last_path,
            self.global_step,
            self.epoch,
            self.history,
        )


def train(cfg: TrainConfig) -> TrainResult:
    """Train one model as ``cfg`` says (resuming from ``out_dir/last.pt`` when present)."""
    return Trainer(cfg).fit()
