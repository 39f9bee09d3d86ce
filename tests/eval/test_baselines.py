"""musicnn baselines: features of real clips, zero-shot against a counting oracle, probing separable features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from musicsearch.assets import librosa_music_dir
from musicsearch.data.manifest import Track
from musicsearch.data.sources.labels import LabelledDataset
from musicsearch.errors import ConfigError
from musicsearch.eval.baselines import TeacherFeatures, musicnn_features, musicnn_probe, musicnn_zeroshot


def _dataset(n: int, labels: np.ndarray, names: tuple[str, ...]) -> LabelledDataset:
    splits = ["train"] * (n // 2) + ["valid"] * (n // 4) + ["test"] * (n - n // 2 - n // 4)
    tracks = tuple(Track(f"t{i}", f"/x/{i}.wav", split=s) for i, s in enumerate(splits))
    return LabelledDataset("toy", "multiclass", names, tracks, labels.astype(np.int64), "accuracy")


def test_zeroshot_picks_the_label_whose_tag_scores_highest() -> None:
    rng = np.random.default_rng(0)
    n = 40
    tags = ["happy", "sad", "rock"]
    probs = rng.random((n, 3)).astype(np.float32)
    labels = rng.integers(0, 2, n)
    ds = _dataset(n, labels, ("sad", "happy"))
    feats = TeacherFeatures("MSD_musicnn", tags, np.zeros((n, 4), np.float32), probs, np.ones(n, bool))
    res = musicnn_zeroshot(feats, ds)
    test = ds.split_indices("test")
    want = np.mean(np.where(probs[test, 1] > probs[test, 0], 0, 1) == labels[test])  # oracle: sad col 1, happy 0
    assert res["accuracy"] == pytest.approx(want) and res["n_tracks"] == test.size
    assert res["label_tags"] == {"sad": "sad", "happy": "happy"}
    with pytest.raises(ConfigError, match="no tag for label 'tense'"):
        musicnn_zeroshot(feats, _dataset(n, labels, ("tense", "sad")))


def test_probe_learns_separable_features() -> None:
    rng = np.random.default_rng(1)
    n = 200
    labels = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    x[:, 0] += 4.0 * labels
    feats = TeacherFeatures("MTT_musicnn", ["a"], x, np.zeros((n, 1), np.float32), np.ones(n, bool))
    res = musicnn_probe(feats, _dataset(n, labels, ("no", "yes")), max_epochs=60)
    assert res["accuracy"] >= 0.9 and res["n_tracks"] == n


def test_features_of_real_clips_skip_a_missing_file(tmp_path: Path) -> None:
    pytest.importorskip("musicnn.configuration", reason="needs `pip install --no-deps musicnn` (checkpoint files)")
    from musicsearch.teachers.tagger import MusicnnTagger

    tracks = [
        Track("brahms", str(librosa_music_dir() / "brahms-hungarian-dance-5-string-orchestra.ogg")),
        Track("gone", str(tmp_path / "gone.ogg")),
    ]
    feats = musicnn_features(MusicnnTagger.load("MTT_musicnn"), tracks, max_seconds=6.0)
    assert feats.ok.tolist() == [True, False]
    assert feats.features.shape == (2, 200) and not feats.features[1].any()
    assert feats.tags[int(feats.probs[0].argmax())] in {"classical", "strings", "violin"}
