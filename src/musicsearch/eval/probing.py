"""Probing: train a small head on frozen track embeddings, select by validation, score on test.

The paper's protocol (section 9): frozen 128-d track embeddings -> a linear layer, or an MLP (hidden 512, ReLU,
dropout); Adam; grid lr {1e-3, 5e-4} x batch {16, 64, 512} x dropout {0, 0.25}; up to 200 epochs with early
stopping after 20 epochs without validation improvement; the configuration with the best validation score is
scored once on the official test split.

Choices made here (and stated in docs/evaluation.md):

* Validation metric follows the dataset: accuracy (single-label), macro ROC-AUC (multi-label), macro F1 at
  per-label best thresholds (``"f1"``, KVT). The weights of the best validation epoch are kept.
* Loss: cross-entropy (single-label), binary cross-entropy with logits (multi-label). No weight decay.
* The linear head applies its dropout to the input embedding (so the dropout axis of the grid means something for
  it too); the MLP applies it after the ReLU.
* Everything is seeded by one ``seed``: weight init, batch order and dropout masks use a ``torch.Generator``; every
  configuration starts from the same seed. Tensors are indexed directly (no DataLoader), so a whole grid on a
  few thousand tracks runs in seconds to minutes on a CPU.
* Training runs with one intra-op torch thread (restored afterwards): the matrices are tiny and extra threads
  only add synchronisation (measured 10-20x slower with 2 threads on a busy 2-core machine).
* For ``"f1"`` datasets the test report gives both F1 with per-label thresholds tuned on validation
  (``f1_valid_threshold``, the honest number) and F1 with thresholds tuned on test itself
  (``f1_best_threshold``, the paper release's convention).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from musicsearch.data.sources.labels import LabelledDataset
from musicsearch.errors import ConfigError, MusicSearchError
from musicsearch.eval import metrics

logger = logging.getLogger(__name__)

HeadKind = Literal["linear", "mlp"]
PAPER_LRS: tuple[float, ...] = (1e-3, 5e-4)
PAPER_BATCH_SIZES: tuple[int, ...] = (16, 64, 512)
PAPER_DROPOUTS: tuple[float, ...] = (0.0, 0.25)


@dataclass(frozen=True)
class ProbeConfig:
    """One point of the probing grid.

    Attributes:
        head: ``"linear"`` or ``"mlp"``.
        lr: Adam learning rate.
        batch_size: training batch size (the last batch of an epoch may be smaller).
        dropout: dropout probability (input of the linear head; after the ReLU of the MLP).
        hidden: MLP hidden width.
    """

    head: HeadKind = "mlp"
    lr: float = 1e-3
    batch_size: int = 64
    dropout: float = 0.0
    hidden: int = 512

    def __post_init__(self) -> None:
        if self.head not in ("linear", "mlp"):
            raise ConfigError(f"probe head must be 'linear' or 'mlp', got {self.head!r}")
        if not (self.lr > 0 and self.batch_size >= 1 and 0.0 <= self.dropout < 1.0 and self.hidden >= 1):
            raise ConfigError(f"invalid probe config {self}: need lr > 0, batch_size >= 1, 0 <= dropout < 1")


def paper_grid(head: HeadKind = "mlp", *, hidden: int = 512) -> list[ProbeConfig]:
    """The paper's 12-point grid (lr x batch size x dropout) for one head kind."""
    return [
        ProbeConfig(head=head, lr=lr, batch_size=bs, dropout=p, hidden=hidden)
        for lr in PAPER_LRS
        for bs in PAPER_BATCH_SIZES
        for p in PAPER_DROPOUTS
    ]


@dataclass(frozen=True)
class ProbeTrial:
    """The outcome of training one configuration: its best validation score and when it was reached."""

    config: ProbeConfig
    valid_score: float
    best_epoch: int  # 1-based epoch of the best validation score
    epochs_run: int
    seconds: float


@dataclass(frozen=True)
class ProbeResult:
    """A probing run: the selected configuration, its test scores, and every trial of the grid."""

    task: str
    metric: str
    best: ProbeTrial
    test_scores: dict[str, Any]
    trials: tuple[ProbeTrial, ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of everything (configs as dicts)."""
        return {
            "task": self.task,
            "validation_metric": self.metric,
            "best_config": asdict(self.best.config),
            "best_valid_score": self.best.valid_score,
            "best_epoch": self.best.best_epoch,
            "test": self.test_scores,
            "trials": [
                {**asdict(t.config), "valid_score": t.valid_score, "best_epoch": t.best_epoch,
                 "epochs_run": t.epochs_run, "seconds": round(t.seconds, 3)}
                for t in self.trials
            ],
        }  # fmt: skip


class ProbeHead(nn.Module):
    """Linear or MLP head; dropout masks drawn from an explicit ``torch.Generator``.

    Args:
        in_dim: embedding width D.
        out_dim: number of classes / labels C.
        config: head kind, hidden width and dropout.
        generator: generator for the weight initialisation (PyTorch's default ``nn.Linear`` scheme).
    """

    def __init__(self, in_dim: int, out_dim: int, config: ProbeConfig, generator: torch.Generator) -> None:
        super().__init__()
        self.kind = config.head
        self.p = config.dropout
        if config.head == "linear":
            self.fc1 = self._linear(in_dim, out_dim, generator)
            self.fc2: nn.Linear | None = None
        else:
            self.fc1 = self._linear(in_dim, config.hidden, generator)
            self.fc2 = self._linear(config.hidden, out_dim, generator)

    @staticmethod
    def _linear(i: int, o: int, g: torch.Generator) -> nn.Linear:
        layer = nn.Linear(i, o)
        with torch.no_grad():  # same distribution as nn.Linear.reset_parameters, from our generator
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=g)
            bound = 1.0 / math.sqrt(i)
            nn.init.uniform_(layer.bias, -bound, bound, generator=g)
        return layer

    def _dropout(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape, generator=generator, device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, D) embeddings -> (B, C) logits."""
        if self.fc2 is None:
            return self.fc1(self._dropout(x, generator))
        h = torch.relu(self.fc1(x))  # (B, hidden)
        return self.fc2(self._dropout(h, generator))


# ----------------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` torch intra-op threads (``None``: leave as is), restoring the old setting."""
    old = torch.get_num_threads()
    if n is not None and n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def _validation_score(task: str, metric: str, y: np.ndarray, logits: np.ndarray) -> float:
    if metric == "accuracy":
        return metrics.accuracy(y, metrics.predict_classes(logits))
    if metric == "roc_auc":
        return metrics.macro_roc_auc(y, logits)
    if metric == "f1":
        return metrics.macro_best_f1(y, logits)
    raise ConfigError(f"unknown probing metric {metric!r}; use accuracy, roc_auc or f1")


def _check_inputs(task: str, x: Any, y: Any, name: str) -> tuple[torch.Tensor, np.ndarray]:
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    ya = np.asarray(y)
    if xt.ndim != 2 or xt.shape[0] == 0:
        raise MusicSearchError(f"{name} embeddings must be a non-empty (N, D) array, got shape {tuple(xt.shape)}")
    if ya.shape[0] != xt.shape[0]:
        raise MusicSearchError(f"{name}: {xt.shape[0]} embeddings but {ya.shape[0]} label rows")
    if task == "multiclass":
        if ya.ndim != 1:
            raise MusicSearchError(f"{name}: single-label targets must be (N,) class indices")
        ya = ya.astype(np.int64)
    elif task == "multilabel":
        if ya.ndim != 2:
            raise MusicSearchError(f"{name}: multi-label targets must be an (N, C) 0/1 matrix")
        ya = ya.astype(np.float32)
    else:
        raise ConfigError(f"task must be 'multiclass' or 'multilabel', got {task!r}")
    if not torch.isfinite(xt).all():
        raise MusicSearchError(f"{name} embeddings contain NaN or infinity")
    return xt, ya


def train_probe(
    config: ProbeConfig,
    train_x: Any,
    train_y: Any,
    valid_x: Any,
    valid_y: Any,
    *,
    task: str,
    metric: str,
    num_outputs: int | None = None,
    max_epochs: int = 200,
    patience: int = 20,
    seed: int = 0,
    num_threads: int | None = 1,
) -> tuple[ProbeHead, ProbeTrial]:
    """Train one head with early stopping on the validation metric; return it at its best epoch.

    Args:
        config: the grid point.
        train_x: (N, D) float embeddings; train_y: (N,) class indices or (N, C) 0/1 labels.
        valid_x: (M, D); valid_y: as train_y.
        task: ``"multiclass"`` or ``"multilabel"``.
        metric: validation metric, ``"accuracy"``, ``"roc_auc"`` or ``"f1"``.
        num_outputs: C (default: from the labels).
        max_epochs: epoch limit.
        patience: stop after this many epochs without a strictly better validation score.
        seed: seeds initialisation, batch order and dropout.
        num_threads: torch intra-op threads while training (``None``: leave the process setting).

    Returns:
        ``(head, trial)``: the head in eval mode with its best-epoch weights, and the trial record.

    Raises:
        MusicSearchError / ConfigError: on bad shapes, task or metric.
    """
    start = time.perf_counter()
    xt, yt_np = _check_inputs(task, train_x, train_y, "train")
    xv, yv = _check_inputs(task, valid_x, valid_y, "valid")
    if xv.shape[1] != xt.shape[1]:
        raise MusicSearchError(f"train and valid embeddings differ in width ({xt.shape[1]} vs {xv.shape[1]})")
    if task == "multiclass":
        c = num_outputs if num_outputs is not None else int(max(yt_np.max(), yv.max())) + 1
        loss_fn: nn.Module = nn.CrossEntropyLoss()
    else:
        c = num_outputs if num_outputs is not None else yt_np.shape[1]
        loss_fn = nn.BCEWithLogitsLoss()
    yt = torch.as_tensor(yt_np)
    g = torch.Generator().manual_seed(seed)
    head = ProbeHead(xt.shape[1], c, config, g)
    opt = torch.optim.Adam(head.parameters(), lr=config.lr)
    n = xt.shape[0]
    best_score, best_epoch, best_state = -math.inf, 0, None
    epoch = 0
    with torch_threads(num_threads):
        for epoch in range(1, max_epochs + 1):
            head.train()
            perm = torch.randperm(n, generator=g)
            for i in range(0, n, config.batch_size):
                idx = perm[i : i + config.batch_size]
                loss = loss_fn(head(xt[idx], g), yt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            head.eval()
            with torch.inference_mode():
                logits = head(xv).numpy()
            score = _validation_score(task, metric, yv, logits)
            if math.isnan(score):
                raise MusicSearchError(
                    f"validation {metric} is undefined (no label column with both positives and negatives); "
                    "the validation split is too small or unlabelled"
                )
            if score > best_score:
                best_score, best_epoch = score, epoch
                best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
            elif epoch - best_epoch >= patience:
                break
    assert best_state is not None
    head.load_state_dict(best_state)
    head.eval()
    trial = ProbeTrial(config, float(best_score), best_epoch, epoch, time.perf_counter() - start)
    logger.debug("probe %s: valid %s %.4f at epoch %d/%d", config, metric, best_score, best_epoch, epoch)
    return head, trial


def predict(head: ProbeHead, x: Any) -> np.ndarray:
    """(N, D) embeddings -> (N, C) float32 logits of a trained head (eval mode, no dropout)."""
    head.eval()
    with torch.inference_mode():
        return head(torch.as_tensor(np.asarray(x, dtype=np.float32))).numpy()


def run_probe(
    train_x: Any,
    train_y: Any,
    valid_x: Any,
    valid_y: Any,
    test_x: Any,
    test_y: Any,
    *,
    task: str,
    metric: str,
    grid: Sequence[ProbeConfig] | None = None,
    num_outputs: int | None = None,
    label_names: Sequence[str] | None = None,
    max_epochs: int = 200,
    patience: int = 20,
    seed: int = 0,
    num_threads: int | None = 1,
) -> ProbeResult:
    """Train every grid configuration, select by validation score only, and score the winner on test.

    Args:
        train_x, valid_x, test_x: (N, D) frozen embeddings of each split.
        train_y, valid_y, test_y: (N,) class indices (``multiclass``) or (N, C) 0/1 labels (``multilabel``).
        task: ``"multiclass"`` or ``"multilabel"``.
        metric: validation metric (``"accuracy"``, ``"roc_auc"``, ``"f1"``), usually ``dataset.metric``.
        grid: configurations to try; default :func:`paper_grid` ("mlp"). Ties go to the earlier config.
        num_outputs: C (default from the labels).
        label_names: names for the per-label / per-class test tables.
        max_epochs, patience, seed, num_threads: see :func:`train_probe`.

    Returns:
        :class:`ProbeResult`; ``test_scores`` holds accuracy (single-label) or ROC-AUC/PR-AUC per label and macro
        (multi-label), plus F1 at validation- and test-tuned thresholds when ``metric == "f1"``.
    """
    configs = list(grid) if grid is not None else paper_grid("mlp")
    if not configs:
        raise ConfigError("the probing grid is empty")
    if task == "multiclass" and num_outputs is None:
        num_outputs = int(max(np.max(train_y), np.max(valid_y), np.max(test_y))) + 1
    best: tuple[ProbeHead, ProbeTrial] | None = None
    trials = []
    for cfg in configs:
        head, trial = train_probe(
            cfg, train_x, train_y, valid_x, valid_y, task=task, metric=metric, num_outputs=num_outputs,
            max_epochs=max_epochs, patience=patience, seed=seed, num_threads=num_threads,
        )  # fmt: skip
        trials.append(trial)
        if best is None or trial.valid_score > best[1].valid_score:
            best = (head, trial)
    assert best is not None
    head, trial = best
    _, yte = _check_inputs(task, test_x, test_y, "test")
    test_logits = predict(head, test_x)
    if task == "multiclass":
        test_scores = metrics.evaluate_classification(yte, test_logits, label_names=label_names)
    else:
        test_scores = metrics.evaluate_tagging(yte, test_logits, label_names=label_names, with_f1=metric == "f1")
        if metric == "f1":
            thr, _ = metrics.best_f1_thresholds(np.asarray(valid_y), predict(head, valid_x))
            test_scores["f1_valid_threshold"] = metrics.macro_f1(metrics.f1_at_thresholds(yte, test_logits, thr))
    logger.info("probe: best %s (valid %s %.4f); test %s", trial.config, metric, trial.valid_score,
                {k: v for k, v in test_scores.items() if isinstance(v, float)})  # fmt: skip
    return ProbeResult(task=task, metric=metric, best=trial, test_scores=test_scores, trials=tuple(trials))


def probe_dataset(
    embeddings: Any,
    dataset: LabelledDataset,
    *,
    head: HeadKind = "mlp",
    grid: Sequence[ProbeConfig] | None = None,
    max_epochs: int = 200,
    patience: int = 20,
    seed: int = 0,
    num_threads: int | None = 1,
) -> ProbeResult:
    """Probe a :class:`LabelledDataset` with its official train/valid/test split.

    Args:
        embeddings: (N, D) embeddings in the dataset's track order.
        dataset: the dataset (its ``task`` and ``metric`` choose the loss and the validation metric).
        head: head kind of the default grid (ignored when ``grid`` is given).
        grid: configurations; default the paper's grid for ``head``.
        max_epochs, patience, seed, num_threads: see :func:`train_probe`.

    Raises:
        MusicSearchError: if the embeddings do not match the dataset or a split is empty.
    """
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != len(dataset):
        raise MusicSearchError(f"{len(dataset)} tracks in {dataset.name} but embeddings of shape {x.shape}")
    parts = {}
    for split in ("train", "valid", "test"):
        idx = dataset.split_indices(split)
        if idx.size == 0:
            raise MusicSearchError(f"{dataset.name}: the {split} split is empty; probing needs all three splits")
        parts[split] = (x[idx], dataset.labels[idx])
    return run_probe(
        *parts["train"], *parts["valid"], *parts["test"], task=dataset.task, metric=dataset.metric,
        grid=grid if grid is not None else paper_grid(head), num_outputs=dataset.num_labels,
        label_names=dataset.label_names, max_epochs=max_epochs, patience=patience, seed=seed,
        num_threads=num_threads,
    )  # fmt: skip
