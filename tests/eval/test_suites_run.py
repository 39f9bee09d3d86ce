"""run_suite on tiny data: the corpus suite (contrastive and classification), the ECALS layout, and the reports."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conftest import write_tone_corpus
from musicsearch.data.manifest import read_manifest, write_manifest
from musicsearch.errors import ConfigError, MusicSearchError
from musicsearch.eval.report import markdown_report, paper_row_for, to_jsonable, write_report
from musicsearch.eval.suites import SuiteOptions, map_inputs, run_suite, suite_names
from musicsearch.models.registry import build_model, model_config

CAPTIONS = {"calm": "a quiet and gentle tone", "loud": "a strong and forceful tone", "noisy": "a hissing tone"}


def write_split_corpus(root: Path) -> Path:
    """24 tone clips: copy 0 train, copy 1 valid, copy 2 test; captions; a corpus.json with held-out synonyms."""
    manifest = write_tone_corpus(root, seconds=1.2, copies=3)
    tracks = []
    for t in read_manifest(manifest):
        copy = int(t.track_id[4])
        caps = (", ".join(t.tags), CAPTIONS[t.tags[1]])
        tracks.append(dataclasses.replace(t, split=("train", "valid", "test")[copy], captions=caps))
    write_manifest(manifest, tracks)
    (root / "corpus.json").write_text(
        json.dumps({"heldout_synonyms": {"calm": ["tranquil", "serene"], "loud": ["thunderous"]}})
    )
    return manifest


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_split_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(model_config("debug", objective="contrastive", text_encoder="tiny-bert"))


def _fraction(x: Any) -> bool:
    return isinstance(x, float) and 0.0 <= x <= 1.0


def check_retrieval_section(sec: dict[str, Any], n_tracks: int) -> None:
    assert sec["n_tracks"] == n_tracks
    for key in ("top50", "all"):
        assert _fraction(sec["tags"][key]["roc_auc"]) and _fraction(sec["tags"][key]["pr_auc"])
    s = sec["sentence"]
    assert _fraction(s["R@1"]) and s["R@1"] <= s["R@5"] <= s["R@10"] <= 1.0
    assert 1.0 <= s["median_rank_1based"] <= s["n_pairs"]
    assert s["median_rank_0based"] == s["median_rank_1based"] - 1
    assert _fraction(s["mAP@10"]) and _fraction(s["MRR"])


def test_corpus_suite(model: torch.nn.Module, corpus: Path, tmp_path: Path) -> None:
    opts = SuiteOptions(manifest=str(corpus), cache_dir=str(tmp_path), n_windows=2)
    out = run_suite(model, "corpus", opts, model_info={"name": "tiny", "path": "/x"})
    json.dumps(out, allow_nan=False)  # strictly JSON
    assert out["suite"] == "corpus" and out["model"]["name"] == "tiny" and out["model"]["path"] == "/x"
    assert len(out["model"]["audio_identity"]) == 64 and out["model"]["objective"] == "contrastive"
    assert "median_rank" in out["meta"]["conventions"] and out["meta"]["options"]["n_windows"] == 2
    sec = out["results"]["corpus"]
    check_retrieval_section(sec, 8)
    assert sec["tags"]["all"]["n_vocabulary"] == 10 and sec["split"] == "test"
    assert sec["window_policy"]["n_windows"] == 2 and sec["window_policy"]["window_samples"] == 16000
    assert sec["sentence"]["n_pairs"] == 8 and sec["sentence"]["scoring"].startswith("cosine")
    unseen = sec["unseen"]
    assert set(unseen["relevant_tags"]) == {"tranquil", "serene", "thunderous"}
    assert _fraction(unseen["roc_auc"]) and unseen["source"].endswith("corpus.json")
    again = run_suite(model, "corpus", opts)
    assert again["results"]["corpus"]["embeddings"]["from_cache"]
    assert again["results"]["corpus"]["tags"] == sec["tags"]
    all_tracks = run_suite(model, "corpus", dataclasses.replace(opts, split="all", n_captions=5))
    assert all_tracks["results"]["corpus"]["n_tracks"] == 24
    assert all_tracks["results"]["corpus"]["sentence"]["n_pairs"] == 5
    given = run_suite(
        model, "corpus", dataclasses.replace(opts, tag_vocabularies={"top50": ["calm"], "all": ["calm", "loud"]})
    )
    assert given["results"]["corpus"]["tags"]["all"]["n_labels"] == 2


def test_corpus_suite_classification_model(corpus: Path, tmp_path: Path) -> None:
    tags = [t for tr in read_manifest(corpus) for t in tr.tags]
    torch.manual_seed(0)
    clf = build_model(model_config("debug", objective="classification", tags=sorted(set(tags))))
    out = run_suite(clf, "corpus", SuiteOptions(manifest=str(corpus), cache_dir=str(tmp_path), n_windows=1))
    sec = out["results"]["corpus"]
    check_retrieval_section(sec, 8)
    assert sec["tags"]["all"]["scoring"] == "classifier logits" and sec["tags"]["all"]["coverage"] == 1.0
    assert sec["sentence"]["threshold_source"] == "valid split (8 tracks)"
    assert sec["sentence"]["scoring"].startswith("word overlap") and "tie_variants" in sec["sentence"]
    assert "skipped" in sec["unseen"]
    on_test = run_suite(clf, "corpus", SuiteOptions(manifest=str(corpus), cache_dir=str(tmp_path), n_windows=1,
                                                    thresholds="test"))  # fmt: skip
    assert on_test["results"]["corpus"]["sentence"]["threshold_source"].startswith("the evaluated tracks")


def test_corpus_suite_input_errors(model: torch.nn.Module, corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        run_suite(model, "corpus", SuiteOptions())
    with pytest.raises(MusicSearchError, match="no 'nope' tracks"):
        run_suite(model, "corpus", SuiteOptions(manifest=str(corpus), split="nope", cache_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="unknown evaluation suite"):
        run_suite(model, "tables", SuiteOptions())
    with pytest.raises(ConfigError):
        run_suite(model, "all", SuiteOptions())
    assert {"corpus", "ecals", "zeroshot", "probe", "all"} <= set(suite_names())


def write_fake_ecals(root: Path) -> Path:
    """A tiny ECALS release: 12 test tracks, 4 valid, 4 train; tags partly from the 50-tag list; 6 captions."""
    ann = root / "ecals_annotation"
    ann.mkdir(parents=True)
    vocab = ["rock", "jazz", "hip hop", "female vocalists", "chillout", "guitar virtuoso"]
    rng = np.random.default_rng(0)
    annotation, captions = {}, {}
    ids = [f"TR{i:04d}" for i in range(20)]
    for i, msd in enumerate(ids):
        tags = [vocab[i % 6], vocab[(i + 2) % 6]]
        annotation[msd] = {"tag": tags, "title": f"song {i}", "artist_name": "a", "release": "r", "year": 2000}
        if i >= 8 and i % 2 == 0:
            captions[msd] = f"a {tags[0]} song with {tags[1]}"
    split = {"train_track": ids[:4], "extra_track": [], "valid_track": ids[4:8], "test_track": ids[8:]}
    for name, content in (("annotation.json", annotation), ("ecals_track_split.json", split),
                          ("ecals_tags.json", vocab), ("multiquery_samples.json", captions)):  # fmt: skip
        (ann / name).write_text(json.dumps(content))
    (root / "npy").mkdir()
    for msd in ids:
        np.save(root / "npy" / f"{msd}.npy", rng.uniform(-0.3, 0.3, 20000).astype(np.float32))
    return root


def test_ecals_suite_and_report(model: torch.nn.Module, tmp_path: Path) -> None:
    root = write_fake_ecals(tmp_path / "ecals")
    opts = SuiteOptions(ecals_root=str(root), cache_dir=str(tmp_path / "cache"), n_windows=1)
    out = run_suite(model, "ecals", opts, model_info={"name": "mine", "text_encoder": "bert-base-uncased"})
    sec = out["results"]["ecals"]
    check_retrieval_section(sec, 12)
    assert sec["tags"]["top50"]["n_vocabulary"] == 50 and sec["tags"]["top50"]["n_labels_skipped_roc"] >= 46
    assert sec["tags"]["all"]["n_vocabulary"] == 6
    assert sec["sentence"]["n_pairs"] == 6 and sec["sentence"]["caption_sources"] == {"caption": 6, "tags": 0}

    other = dict(out, model=dict(out["model"], name="other"))
    json_path, md_path = write_report([out, other], tmp_path / "report")
    data = json.loads(json_path.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert len(data["runs"]) == 2 and data["runs"][0]["results"]["ecals"]["sentence"]["n_pairs"] == 6
    md = md_path.read_text()
    assert "| model | dataset | tracks | 50-tag ROC / PR | all-tag ROC / PR | R@1 | R@5 | R@10 | mAP@10 |" in md
    rows = [line for line in md.splitlines() if line.startswith("| mine |") or line.startswith("| other |")]
    assert len(rows) == 2
    # the paper's row of the same family (contrastive, BERT, stochastic), labelled as published
    assert "| *paper (published): contrastive, BERT, stochastic* (same model family) | ECALS test |" in md
    assert "89.8 / 38.0 | 84.8 / 7.7 | 10.2 | 29.8 | 42.8 | 18.7 | 14 / 13 |" in md


def test_report_tables_for_transfer_and_unseen() -> None:
    run = {
        "model": {"name": "m1", "objective": "contrastive"},
        "results": {
            "zeroshot": {
                "gtzan": {"metric": "accuracy", "accuracy": 0.5, "balanced_accuracy": 0.25},
                "mtat": {"metric": "roc_auc", "roc_auc": 0.75, "pr_auc": 0.2},
                "kvt": {"metric": "f1", "f1": 0.6},
                "manifest": {"metric": "roc_auc", "roc_auc": float("nan"), "pr_auc": 0.1},
            },
            "probe": {"gtzan": {"metric": "accuracy", "accuracy": 0.625, "head": "mlp"}},
        },
    }
    md = markdown_report([to_jsonable(run)])
    assert "| model | gtzan (acc) | mtat (ROC / PR) | kvt (F1) | manifest (ROC / PR) |" in md
    assert "| m1 | 50.0 (bal. 25.0) | 75.0 / 20.0 | 60.0 | – / 10.0 |" in md
    assert "| *paper (published): contrastive, BERT, stochastic* | 87.9 | 78.4 / 21.2 | 70.3 | – |" in md
    assert "## Probing (mlp head" in md and "| m1 | 62.5 |" in md
    assert "89.0" in md  # the paper's MLP probing on GTZAN
    label, numbers = paper_row_for({"objective": "classification", "text_rep": "tag"})
    assert "classification" in label and numbers["tag50"]["roc_auc"] == pytest.approx(0.902)
    label, _ = paper_row_for({"objective": "contrastive", "text_encoder": "minilm", "text_rep": "stochastic"})
    assert "best model" in label
    assert to_jsonable({"a": np.float32(np.inf), "b": (np.int64(3),), 1: np.array([0.5])}) == {
        "a": None, "b": [3], "1": [0.5],
    }  # fmt: skip


def test_map_inputs_from_the_cache(model: torch.nn.Module, corpus: Path, tmp_path: Path) -> None:
    opts = SuiteOptions(manifest=str(corpus), cache_dir=str(tmp_path), n_windows=1)
    run_suite(model, "corpus", opts)
    inputs = map_inputs(model, opts, max_tracks=5, max_captions=3)
    assert inputs.audio.shape == (5, model.config.joint_dim)
    assert inputs.tags.shape == (10, model.config.joint_dim) and len(inputs.tag_names) == 10
    assert inputs.captions.shape == (3, model.config.joint_dim) and len(inputs.caption_texts) == 3
    np.testing.assert_allclose(np.linalg.norm(inputs.audio, axis=1), 1.0, rtol=1e-5)


class WindowRecorder:
    """A real model that also records the first sample of every audio window it embeds."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.firsts: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def encode_audio(self, wave: torch.Tensor) -> torch.Tensor:
        self.firsts.extend(float(v) for v in wave[:, 0])
        return self.model.encode_audio(wave)

    def parameters(self) -> Any:
        return self.model.parameters()


def test_ecals_suite_places_windows_as_the_release(model: torch.nn.Module, tmp_path: Path) -> None:
    """On 30 s tracks the ECALS suite's 3 windows start at the release's (T - L) // 3 multiples; ``even`` is the
    named alternative (first at 0, last ending at the end)."""
    root = write_fake_ecals(tmp_path / "ecals")
    scale = 2.0**-20  # sample i holds i * 2^-20 (exact in float32): a window's first value is its start
    ramp = (np.arange(30 * 16000, dtype=np.float64) * scale).astype(np.float32)
    for f in (root / "npy").glob("*.npy"):
        np.save(f, ramp)
    length = int(model.config.audio.window_samples)
    hop = (30 * 16000 - length) // 3
    expected = {
        None: {0, hop, 2 * hop},  # the suite's default: the release's placement
        "release": {0, hop, 2 * hop},
        "even": {0, (30 * 16000 - length) // 2, 30 * 16000 - length},
    }
    for placement, starts in expected.items():
        rec = WindowRecorder(model)
        opts = SuiteOptions(ecals_root=str(root), use_cache=False, window_placement=placement, num_workers=0)
        out = run_suite(rec, "ecals", opts)
        assert {round(v / scale) for v in rec.firsts} == starts, placement
        assert len(rec.firsts) == 3 * 12  # 3 windows for each of the 12 test tracks
        policy = out["results"]["ecals"]["window_policy"]
        assert policy["n_windows"] == 3 and policy["placement"].startswith(
            "as the paper's release" if placement != "even" else "evenly spaced"
        )


def test_corpus_suite_keeps_even_windows_by_default(model: torch.nn.Module, corpus: Path, tmp_path: Path) -> None:
    rec = WindowRecorder(model)
    out = run_suite(rec, "corpus", SuiteOptions(manifest=str(corpus), use_cache=False, num_workers=0))
    assert out["results"]["corpus"]["window_policy"]["placement"].startswith("evenly spaced")
    with pytest.raises(MusicSearchError, match="unknown window placement"):
        run_suite(model, "corpus", SuiteOptions(manifest=str(corpus), use_cache=False, window_placement="middle"))
