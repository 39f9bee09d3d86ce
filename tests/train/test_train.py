"""Training: a debug model overfits to perfect retrieval; a killed run resumes bit for bit; CLI and config."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from musicsearch.audio.chunking import pad_to
from musicsearch.audio.io import load_audio
from musicsearch.cli.main import main
from musicsearch.data.manifest import read_manifest
from musicsearch.errors import ConfigError
from musicsearch.models.checkpoint import load_model_file
from musicsearch.train.config import TrainConfig, load_train_config
from musicsearch.train.loop import GlobalBatchSampler, Trainer, train
from musicsearch.train.schedule import warmup_cosine


def test_debug_model_overfits_to_perfect_retrieval(tone_corpus: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(
        manifest=str(tone_corpus),
        out_dir=str(tmp_path / "run"),
        preset="debug",
        objective="contrastive",
        text_encoder="tiny-bert",
        text_rep="sentence",
        epochs=300,
        warmup_epochs=2,
        batch_size=4,
        lr=3e-3,
        log_every=20,
        seed=0,
        patience=10_000,  # no early stopping on the noisy training loss: this test wants the full overfit
    )
    result = train(cfg)
    assert result.best_path is not None
    model = load_model_file(result.best_path)
    tracks = read_manifest(tone_corpus)
    waves = torch.stack([torch.from_numpy(pad_to(load_audio(t.audio_path)[:16000], 16000)) for t in tracks])
    with torch.no_grad():
        a = F.normalize(model.encode_audio(waves), dim=-1)
        t = F.normalize(model.encode_text([", ".join(tr.tags) for tr in tracks]), dim=-1)
    ranks = (a @ t.t()).argmax(1)
    assert torch.equal(ranks, torch.arange(len(tracks)))
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "samples_per_s" in r]
    assert steps and all(k in steps[0] for k in ("loss", "lr", "temperature", "samples_per_s"))
    assert steps[-1]["loss"] < steps[0]["loss"]


@pytest.mark.parametrize("objective", ["contrastive", "triplet"])
def test_resume_after_interruption_is_bit_for_bit(tone_corpus: Path, tmp_path: Path, objective: str) -> None:
    base = dict(
        manifest=str(tone_corpus),
        preset="debug",
        objective=objective,
        text_encoder="tiny-bert",
        epochs=4,
        warmup_epochs=1,
        batch_size=3,
        lr=1e-3,
        log_every=1,
        seed=7,
    )
    full = train(TrainConfig(out_dir=str(tmp_path / "full"), **base))  # type: ignore[arg-type]
    # the same run killed after 3 steps (mid-epoch: 2 steps per epoch), then resumed from last.pt
    train(TrainConfig(out_dir=str(tmp_path / "cut"), max_steps=3, save_every=1, **base))  # type: ignore[arg-type]
    resumed = Trainer(TrainConfig(out_dir=str(tmp_path / "cut"), **base))  # type: ignore[arg-type]
    assert resumed.global_step == 3 and resumed.batch_in_epoch == 1
    resumed.fit()
    a = torch.load(full.last_path, weights_only=False)["model"]
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=False)["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_global_batch_sampler_splits_one_global_batch_across_ranks() -> None:
    single = list(GlobalBatchSampler(10, batch_size=4, rank=0, world=1, seed=3, shuffle=True))
    r0 = list(GlobalBatchSampler(10, batch_size=2, rank=0, world=2, seed=3, shuffle=True))
    r1 = list(GlobalBatchSampler(10, batch_size=2, rank=1, world=2, seed=3, shuffle=True))
    assert len(single) == 8 and sorted(single[:4]) == sorted(r0[:2] + r1[:2])
    s = GlobalBatchSampler(10, batch_size=4, rank=0, world=1, seed=3, shuffle=True)
    s.start_batch = 1
    assert list(s) == single[4:]


def test_schedule_warmup_then_cosine_to_zero() -> None:
    vals = [warmup_cosine(s, warmup_steps=10, total_steps=110) for s in range(111)]
    assert vals[0] == pytest.approx(0.1) and vals[9] == pytest.approx(1.0)
    assert vals[10] == pytest.approx(1.0) and vals[60] == pytest.approx(0.5) and vals[110] == pytest.approx(0.0)
    assert all(a >= b for a, b in itertools.pairwise(vals[10:]))


def test_config_file_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("manifest: m.jsonl\nout_dir: run\nepochs: 3\n", encoding="utf-8")
    cfg = load_train_config(str(f), ["lr=0.01", "tensorboard=true", "text_encoder=glove"])
    assert cfg.epochs == 3 and cfg.lr == 0.01 and cfg.tensorboard and cfg.text_encoder == "glove"
    assert load_train_config(str(f), ["text_encoder=glove"]).resolved_lr() == 1e-4
    with pytest.raises(ConfigError, match="unknown training option"):
        load_train_config(str(f), ["epoch=3"])
    with pytest.raises(ConfigError, match="manifest"):
        load_train_config(None, [])


def test_cli_train_classification(tone_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "train",
            "--manifest",
            str(tone_corpus),
            "--out",
            str(tmp_path / "r"),
            "--preset",
            "debug",
            "--objective",
            "classification",
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--set",
            "warmup_epochs=1",
        ]
    )
    assert code == 0
    assert "best model" in capsys.readouterr().out
    model = load_model_file(tmp_path / "r" / "best.safetensors")
    assert model.config.objective == "classification" and len(model.config.tags) == 10
    assert main(["train", "--manifest", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x")]) == 2


def test_training_skips_unreadable_audio(tone_corpus: Path, tmp_path: Path) -> None:
    tracks = read_manifest(tone_corpus)
    Path(tracks[0].audio_path).write_bytes(b"garbage")
    res = train(
        TrainConfig(
            manifest=str(tone_corpus),
            out_dir=str(tmp_path / "r"),
            preset="debug",
            text_encoder="tiny-bert",
            epochs=1,
            warmup_epochs=0,
            batch_size=4,
        )
    )
    assert res.global_step == 2 and np.isfinite(res.history[-1]["train_loss"])


def test_every_epoch_end_leaves_a_resumable_state(
    tone_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    original = Trainer.validate

    def killed_in_second_validation(self: Trainer) -> float | None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "validate", killed_in_second_validation)
    cfg = TrainConfig(
        manifest=str(tone_corpus),
        out_dir=str(tmp_path / "r"),
        preset="debug",
        text_encoder="tiny-bert",
        epochs=3,
        warmup_epochs=0,
        batch_size=4,
    )
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    state = torch.load(tmp_path / "r" / "last.pt", weights_only=False)
    assert state["epoch"] == 1 and state["batch_in_epoch"] == 0 and state["global_step"] == 2


def test_triplet_weighting_reaches_the_loss_and_the_checkpoint(tone_corpus: Path, tmp_path: Path) -> None:
    base = dict(manifest=str(tone_corpus), preset="debug", objective="triplet", text_encoder="tiny-bert",
                epochs=1, warmup_epochs=1, batch_size=3, lr=1e-3, seed=0, max_steps=1)  # fmt: skip
    default = Trainer(TrainConfig(out_dir=str(tmp_path / "a"), **base))  # type: ignore[arg-type]
    assert default.model.head.weighting == "official" and default.mcfg.triplet_weighting == "official"
    cfg = load_train_config(None, ["triplet_weighting=official"], out_dir=str(tmp_path / "b"), **base)
    result = train(cfg)
    assert result.best_path is not None
    assert load_model_file(result.best_path).config.triplet_weighting == "official"
    with pytest.raises(ConfigError, match="unknown triplet negative weighting 'hardest'"):
        Trainer(TrainConfig(out_dir=str(tmp_path / "c"), triplet_weighting="hardest", **base))  # type: ignore[arg-type]
