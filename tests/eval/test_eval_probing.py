"""Probing heads on separable synthetic embeddings; selection uses validation only; seeding is explicit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicsearch.data.manifest import Track
from musicsearch.data.sources.labels import LabelledDataset
from musicsearch.errors import ConfigError, MusicSearchError
from musicsearch.eval.probing import ProbeConfig, paper_grid, probe_dataset, run_probe, train_probe


def _blobs(rng: np.random.Generator, n: int, c: int = 3, d: int = 16) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.normal(size=(c, d)) * 3
    y = rng.integers(0, c, size=n)
    return (centres[y] + rng.normal(size=(n, d))).astype(np.float32), y


def _multilabel(rng: np.random.Generator, n: int, c: int = 4, d: int = 16) -> tuple[np.ndarray, np.ndarray]:
    w = rng.normal(size=(d, c))
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x, (x @ w > 0.3).astype(np.float32)


def test_paper_grid_has_twelve_points() -> None:
    grid = paper_grid("linear")
    assert len(grid) == 12 and {g.head for g in grid} == {"linear"}
    assert {(g.lr, g.batch_size, g.dropout) for g in grid} == {
        (lr, bs, p) for lr in (1e-3, 5e-4) for bs in (16, 64, 512) for p in (0.0, 0.25)
    }
    with pytest.raises(ConfigError):
        ProbeConfig(head="svm")  # type: ignore[arg-type]


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_heads_learn_separable_multiclass_data(head: str) -> None:
    rng = np.random.default_rng(0)
    x, y = _blobs(rng, 600)
    grid = [ProbeConfig(head=head, lr=1e-2, batch_size=64, dropout=0.25, hidden=32)]  # type: ignore[arg-type]
    res = run_probe(x[:400], y[:400], x[400:500], y[400:500], x[500:], y[500:], task="multiclass",
                    metric="accuracy", grid=grid, max_epochs=30, patience=5)  # fmt: skip
    assert res.test_scores["accuracy"] > 0.95
    assert res.best.valid_score > 0.95 and 1 <= res.best.best_epoch <= res.best.epochs_run <= 30


def test_multilabel_probe_reaches_high_auc_and_reports_f1_both_ways() -> None:
    rng = np.random.default_rng(1)
    x, y = _multilabel(rng, 800)
    grid = [ProbeConfig(head="linear", lr=1e-2, batch_size=64)]
    res = run_probe(x[:500], y[:500], x[500:650], y[500:650], x[650:], y[650:], task="multilabel",
                    metric="f1", grid=grid, max_epochs=40, patience=5)  # fmt: skip
    assert res.test_scores["roc_auc"] > 0.95
    assert 0.8 < res.test_scores["f1_valid_threshold"] <= res.test_scores["f1_best_threshold"] + 1e-9
    assert set(res.to_json()) >= {"best_config", "best_valid_score", "test", "trials"}


def test_selection_uses_validation_only_and_is_reproducible() -> None:
    rng = np.random.default_rng(2)
    x, y = _blobs(rng, 300, c=4)
    grid = [ProbeConfig(head="mlp", lr=lr, batch_size=32, dropout=0.0, hidden=16) for lr in (1e-4, 3e-3, 1e-2)]
    kw = {"task": "multiclass", "metric": "accuracy", "grid": grid, "max_epochs": 8, "patience": 3, "seed": 7}
    a = run_probe(x[:150], y[:150], x[150:225], y[150:225], x[225:], y[225:], **kw)  # type: ignore[arg-type]
    # scramble the test labels: the selected config and every validation score must not change
    b = run_probe(x[:150], y[:150], x[150:225], y[150:225], x[225:], (y[225:] + 1) % 4, **kw)  # type: ignore[arg-type]
    assert a.best.config == b.best.config
    assert [t.valid_score for t in a.trials] == [t.valid_score for t in b.trials]
    assert a.best.valid_score == max(t.valid_score for t in a.trials)
    assert a.best.config == next(t.config for t in a.trials if t.valid_score == a.best.valid_score)  # first best
    assert b.test_scores["accuracy"] < a.test_scores["accuracy"]


def test_same_seed_same_result_and_early_stopping() -> None:
    rng = np.random.default_rng(3)
    x, y = _blobs(rng, 200)
    cfg = ProbeConfig(head="mlp", lr=1e-2, batch_size=16, dropout=0.25, hidden=16)
    threads = torch.get_num_threads()
    _, t1 = train_probe(cfg, x[:100], y[:100], x[100:], y[100:], task="multiclass", metric="accuracy",
                        max_epochs=60, patience=3, seed=1)  # fmt: skip
    _, t2 = train_probe(cfg, x[:100], y[:100], x[100:], y[100:], task="multiclass", metric="accuracy",
                        max_epochs=60, patience=3, seed=1)  # fmt: skip
    assert (t1.valid_score, t1.best_epoch, t1.epochs_run) == (t2.valid_score, t2.best_epoch, t2.epochs_run)
    assert t1.epochs_run == t1.best_epoch + 3 < 60  # stopped by patience on an easy problem
    assert torch.get_num_threads() == threads  # the one-thread training context restored the setting


def test_probe_dataset_uses_the_official_split() -> None:
    rng = np.random.default_rng(4)
    x, y = _blobs(rng, 120, c=2)
    splits = ["train"] * 60 + ["valid"] * 30 + ["test"] * 30
    tracks = tuple(Track(str(i), f"{i}.wav", split=s) for i, s in enumerate(splits))
    ds = LabelledDataset("toy", "multiclass", ("a", "b"), tracks, y, "accuracy")
    res = probe_dataset(x, ds, grid=[ProbeConfig("linear", 1e-2, 16)], max_epochs=10, patience=3)
    assert res.test_scores["n_tracks"] == 30 and set(res.test_scores["per_class"]) == {"a", "b"}
    with pytest.raises(MusicSearchError, match="embeddings of shape"):
        probe_dataset(x[:10], ds)
