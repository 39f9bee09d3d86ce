"""The real `torchrun` entry point: two CPU processes train through the CLI (gloo DDP)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from musicsearch.models.checkpoint import load_model_file


@pytest.mark.slow
def test_torchrun_two_processes_train_and_save(tone_corpus: Path, tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun, "torchrun comes with torch"
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "musicsearch",
            "train",
            "--manifest",
            str(tone_corpus),
            "--out",
            str(out),
            "--preset",
            "debug",
            "--text-encoder",
            "tiny-bert",
            "--epochs",
            "2",
            "--batch-size",
            "2",
            "--set",
            "warmup_epochs=1",
            "--set",
            "log_every=1",
            "--set",
            "tensorboard=true",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("best model") == 1  # rank 0 alone reports
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "samples_per_s" in r] == [1, 2, 3, 4]  # 8 tracks / global batch 4
    assert (out / "tb").is_dir()
    assert load_model_file(out / "best.safetensors").config.name.startswith("debug-contrastive")
