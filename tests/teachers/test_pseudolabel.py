"""Pseudo-labels: tag merging, rate-matched thresholds (against a counting oracle), windows, resumability."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from musicsearch.assets import librosa_music_dir
from musicsearch.data.manifest import Track
from musicsearch.errors import ConfigError
from musicsearch.teachers.musicnn import MSD_LABELS, MTT_LABELS
from musicsearch.teachers.pseudolabel import (
    PseudoLabels,
    calibrate_thresholds,
    canonical_tag,
    confident_tags,
    merge_probs,
    merged_vocabulary,
    pseudo_label,
    pseudo_tracks,
)

BRAHMS = librosa_music_dir() / "brahms-hungarian-dance-5-string-orchestra.ogg"
RAGTIME = librosa_music_dir() / "lena-orsa-pistachio-ice-cream-ragtime.ogg"


def test_canonical_tags_merge_synonyms_and_drop_decades() -> None:
    assert canonical_tag("woman") == canonical_tag("Female vocalists") == "female vocals"
    assert canonical_tag("no vocals") == canonical_tag("no voice") == "instrumental"
    assert canonical_tag("Progressive rock") == "progressive rock"
    assert canonical_tag("80s") is None and canonical_tag("00s") is None
    assert canonical_tag("piano") == "piano"


def test_merged_vocabulary_of_both_teachers() -> None:
    vocab, cols = merged_vocabulary([MTT_LABELS, MSD_LABELS])
    assert len(vocab) == len(set(vocab))
    assert "female vocals" in vocab and "woman" not in vocab and "80s" not in vocab
    assert len(cols[0]) == 50 and len(cols[1]) == 50
    assert cols[1][MSD_LABELS.index("80s")] == -1
    # both teachers' "guitar" land in one column, MTT's "female" and MSD's "female vocalists" too
    assert cols[0][MTT_LABELS.index("guitar")] == cols[1][MSD_LABELS.index("guitar")]
    assert cols[0][MTT_LABELS.index("female")] == cols[1][MSD_LABELS.index("female vocalists")]
    for c, tags in zip(cols, (MTT_LABELS, MSD_LABELS)):
        for j, tag in enumerate(tags):
            assert c[j] == -1 or vocab[c[j]] == canonical_tag(tag)


def test_merge_probs_takes_the_max_of_source_columns() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random((5, 3)).astype(np.float32), rng.random((5, 2)).astype(np.float32)
    cols = [[0, 1, 1], [2, -1]]
    got = merge_probs([a, b], cols, 3)
    want = np.stack([a[:, 0], np.maximum(a[:, 1], a[:, 2]), b[:, 0]], axis=1)
    np.testing.assert_array_equal(got, want)


def test_rate_matched_thresholds_admit_the_expected_number_of_windows() -> None:
    rng = np.random.default_rng(1)
    probs = np.stack([rng.beta(a, b, 400) for a, b in [(0.5, 3), (2, 2), (0.3, 8), (5, 1)]], axis=1)
    thr = calibrate_thresholds(probs, floor=1e-6, ceiling=1.0)
    for k in range(probs.shape[1]):  # oracle: count the windows at or above the threshold
        assert int((probs[:, k] >= thr[k]).sum()) == round(float(probs[:, k].sum()))
    clamped = calibrate_thresholds(probs, floor=0.2, ceiling=0.5)
    assert clamped.min() >= 0.2 and clamped.max() <= 0.5
    np.testing.assert_allclose(clamped, np.clip(thr, 0.2, 0.5), rtol=1e-6)


def test_a_tag_the_teacher_never_expects_gets_the_ceiling() -> None:
    probs = np.array([[0.01, 0.9], [0.02, 0.8], [0.01, 0.7]])
    thr = calibrate_thresholds(probs, floor=0.1, ceiling=0.6)
    assert thr[0] == pytest.approx(0.6)  # expected count 0.04 rounds to 0
    assert thr[1] == pytest.approx(0.6)  # rate matching gives 0.7, the ceiling admits every window at >= 0.6


def test_calibration_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="at least one window"):
        calibrate_thresholds(np.zeros((0, 3)))
    with pytest.raises(ConfigError, match="floor"):
        calibrate_thresholds(np.ones((2, 2)), floor=0.6, ceiling=0.5)


def test_confident_tags_strongest_first_and_capped() -> None:
    tags = ["a", "b", "c", "d"]
    probs = np.array([0.3, 0.9, 0.05, 0.5])
    thr = np.array([0.2, 0.3, 0.1, 0.5])
    assert confident_tags(probs, tags, thr) == ["b", "a", "d"]  # ratios 3, 1.5, 1.0; c below
    assert confident_tags(probs, tags, thr, max_tags=1) == ["b"]


def test_pseudo_tracks_are_segments_with_splits() -> None:
    labels = PseudoLabels(
        tags=["x", "y"],
        track_ids=["r1", "r1", "r2"],
        audio_paths=["/a.ogg", "/a.ogg", "/b.ogg"],
        starts=np.array([0.0, 9.0, 0.0]),
        window_seconds=3.0,
        probs=np.array([[0.9, 0.0], [0.0, 0.0], [0.6, 0.8]], dtype=np.float32),
        failed=[],
    )
    out = pseudo_tracks(labels, np.array([0.5, 0.5]), splits={"r1": "train", "r2": "test"}, id_prefix="real:")
    assert [t.track_id for t in out] == ["real:r1@0.00", "real:r2@0.00"]  # the empty window is dropped
    assert out[0].tags == ("x",) and out[1].tags == ("y", "x")
    assert (out[0].start, out[0].end, out[0].split, out[1].split) == (0.0, 3.0, "train", "test")


@pytest.fixture(scope="module")
def teachers() -> list[object]:
    pytest.importorskip("musicnn.configuration", reason="needs `pip install --no-deps musicnn` (checkpoint files)")
    from musicsearch.teachers.tagger import MusicnnTagger

    return [MusicnnTagger.load("MTT_musicnn"), MusicnnTagger.load("MSD_musicnn")]


def test_real_recordings_get_sensible_resumable_labels(teachers: list[object], tmp_path: Path) -> None:
    tracks = [
        Track("brahms", str(BRAHMS), start=5.0, end=17.0),
        Track("ragtime", str(RAGTIME), start=0.0, end=12.0),
        Track("broken", str(tmp_path / "missing.ogg")),
    ]
    seen: list[tuple[int, int]] = []
    labels = pseudo_label(
        tracks, tmp_path / "labels", window_seconds=3.0, hop_seconds=3.0, taggers=teachers,  # type: ignore[arg-type]
        progress=lambda d, n: seen.append((d, n)),
    )  # fmt: skip
    assert seen[-1] == (3, 3)
    assert [tid for tid, _ in labels.failed] == ["broken"]  # reported, the batch went on
    assert labels.track_ids == ["brahms"] * 4 + ["ragtime"] * 4  # 12 s segments, a 3 s window every 3 s
    np.testing.assert_allclose(labels.starts, [5, 8, 11, 14, 0, 3, 6, 9])
    assert labels.probs.shape == (8, len(labels.tags)) and 0 <= labels.probs.min() <= labels.probs.max() <= 1
    col = {t: i for i, t in enumerate(labels.tags)}
    brahms, ragtime = labels.probs[:4].mean(0), labels.probs[4:].mean(0)
    assert brahms[col["violin"]] > ragtime[col["violin"]] and ragtime[col["piano"]] > brahms[col["piano"]]
    # a second call reads everything from disk: teachers that would fail are never run
    again = pseudo_label(tracks[:2], tmp_path / "labels", window_seconds=3.0, hop_seconds=3.0, taggers=[_Broken()] * 2)  # type: ignore[list-item]
    np.testing.assert_array_equal(again.probs, labels.probs)


class _Broken:
    """A tagger stand-in with the teachers' vocabularies whose model must not be called."""

    def __init__(self) -> None:
        self.calls = 0

    @property
    def tags(self) -> list[str]:
        self.calls += 1
        return list(MTT_LABELS) if self.calls % 2 else list(MSD_LABELS)

    @property
    def model(self) -> object:
        raise AssertionError("the teacher ran although the labels were on disk")


def test_bad_window_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="positive"):
        pseudo_label([], tmp_path, window_seconds=0.0, taggers=[])
