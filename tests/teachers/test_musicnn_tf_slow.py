"""The port against TensorFlow itself, run fresh (slow: builds a throwaway TensorFlow environment in /tmp).

    .venv/bin/pytest -m slow tests/teachers/test_musicnn_tf_slow.py

The environment (``$MUSICSEARCH_TF_ENV``, default ``/tmp/musicsearch-musicnn-tf``) gets ``tensorflow-cpu``,
``tf-keras``, ``librosa``, ``soundfile`` and ``musicnn`` (``--no-deps``); it is reused when it already works, and
never touches the project's ``.venv``. ``make_reference.py`` then runs there with ``TF_USE_LEGACY_KERAS=1`` and
its fresh outputs are compared with the port on every patch of the recordings, and with the recorded files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from musicsearch.assets import librosa_music_dir
from musicsearch.audio.io import load_audio
from musicsearch.teachers import musicnn as mn
from musicsearch.teachers import tfbundle

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parent / "make_reference.py"
FIXTURES = Path(__file__).resolve().parent / "data"
RECORDED = FIXTURES / "reference"
PROB_TOL = 1e-4
FEATURE_TOL = 5e-4


def _tf_python() -> Path:
    env = Path(os.environ.get("MUSICSEARCH_TF_ENV", "/tmp/musicsearch-musicnn-tf"))
    py = env / "bin" / "python"
    probe = [str(py), "-c", "import tensorflow, tf_keras, librosa, musicnn.configuration"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return py
    base = getattr(sys, "_base_executable", sys.executable)
    steps = [
        [base, "-m", "venv", str(env)],
        [str(py), "-m", "pip", "install", "-q", "tensorflow-cpu", "tf-keras", "librosa", "soundfile"],
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "musicnn"],
    ]
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            pytest.skip(f"cannot build the TensorFlow environment ({' '.join(cmd)}): {done.stderr[-2000:]}")
    return py


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("musicnn_tf")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [str(_tf_python()), "-W", "ignore", str(SCRIPT), "--out", str(out), "--fixtures", str(out / "fixtures")]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def test_port_equals_fresh_tensorflow_on_every_patch(fresh: Path) -> None:
    ref = json.loads((fresh / "musicnn_tf_outputs.json").read_text())
    models = {name: mn.load_pretrained(name) for name in mn.MODEL_NAMES}
    worst = 0.0
    for clip, entry in ref["clips"].items():
        x = mn.patches(mn.log_mel(load_audio(librosa_music_dir() / clip, sample_rate=16000)))
        for name, model in models.items():
            r = entry["models"][name]
            assert r["extractor_vs_graph_max_abs_diff"] < 1e-5  # the recorded graph is what the extractor runs
            with torch.inference_mode():
                out = model(x)
            taggram = np.array(r["taggram"])
            assert out.probs.shape == taggram.shape
            worst = max(worst, float(np.abs(out.probs.numpy() - taggram).max()))
            np.testing.assert_allclose(out.probs.numpy(), taggram, rtol=0, atol=PROB_TOL, err_msg=f"{clip} {name}")
            feats = np.array(r["penultimate"])
            np.testing.assert_allclose(out.penultimate.numpy()[: len(feats)], feats, rtol=0, atol=FEATURE_TOL)
    print(f"max |p_torch - p_tf| over all patches and models: {worst:.2e}")


def test_fresh_outputs_equal_the_recorded_ones(fresh: Path) -> None:
    for f in ("musicnn_tf_outputs.json", "librosa_mel.json", "bundle_tf_listing.json"):
        new = json.loads((fresh / f).read_text())
        old = json.loads((RECORDED / f).read_text())
        _assert_close_tree(new, old, path=f)


def test_fresh_tiny_bundle_reads(fresh: Path) -> None:
    spec = json.loads((fresh / "fixtures" / "tiny_bundle.json").read_text())
    assert spec == json.loads((FIXTURES / "tiny_bundle.json").read_text())
    tensors = tfbundle.read_bundle(fresh / "fixtures" / "tiny_bundle", verify=True)
    assert set(tensors) == set(spec)


def _assert_close_tree(a: object, b: object, path: str) -> None:
    """Same structure; numbers equal within 1e-5 (TF/librosa versions may differ); version strings ignored."""
    if path.endswith("versions") or path.endswith(".librosa"):
        return
    if isinstance(a, dict) and isinstance(b, dict):
        assert set(a) == set(b), path
        for k in a:
            _assert_close_tree(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), path
        if a and all(isinstance(v, (int, float)) for v in a + b):
            np.testing.assert_allclose(np.array(a, float), np.array(b, float), rtol=1e-5, atol=1e-5, err_msg=path)
        else:
            for i, (x, y) in enumerate(zip(a, b)):
                _assert_close_tree(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-5), path
    else:
        assert a == b, path
