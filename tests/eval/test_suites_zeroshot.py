"""Zero-shot transfer and probing suites on a fake GTZAN layout (tone wavs, custom split lists) and built datasets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from musicsearch.data.manifest import Track
from musicsearch.data.sources.gtzan import GENRES
from musicsearch.data.sources.labels import LabelledDataset
from musicsearch.data.sources.registry import load_dataset
from musicsearch.errors import ConfigError, MusicSearchError
from musicsearch.eval import metrics
from musicsearch.eval.report import markdown_report
from musicsearch.eval.suites import SuiteOptions, _dataset_embeddings, run_suite
from musicsearch.eval.zeroshot import evaluate_zeroshot, zeroshot_rows
from musicsearch.models.inference import embed_texts, normalize
from musicsearch.models.registry import build_model, model_config


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(model_config("debug", objective="contrastive", text_encoder="tiny-bert"))


@pytest.fixture(scope="module")
def classifier() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(model_config("debug", objective="classification", tags=("rock", "jazz", "calm", "hip hop")))


def write_fake_gtzan(root: Path, per_split: int = 1) -> dict[str, Path]:
    """``genres/<genre>/<genre>.000NN.wav`` tones (0.6 s) and split lists with ``per_split`` tracks per genre."""
    lists: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for g, genre in enumerate(GENRES):
        folder = root / "genres" / genre
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(3 * per_split):
            rel = f"{genre}/{genre}.{k:05d}.wav"
            t = np.arange(9600) / 16000
            wave = 0.3 * np.sin(2 * np.pi * (110.0 * (g + 1) + 7 * k) * t)
            if g % 2:
                wave = np.sign(wave) * 0.3
            sf.write(root / "genres" / rel, wave.astype(np.float32), 16000)
            lists[("train", "valid", "test")[k % 3]].append(rel)
    paths = {}
    for split, rels in lists.items():
        paths[split] = root / f"{split}.txt"
        paths[split].write_text("\n".join(rels) + "\n")
    return paths


@pytest.fixture(scope="module")
def gtzan_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("gtzan")
    return root, write_fake_gtzan(root, per_split=2)


def test_zeroshot_accuracy_is_the_argmax_of_label_cosines(
    model: torch.nn.Module, gtzan_root: tuple[Path, dict[str, Path]]
) -> None:
    root, lists = gtzan_root
    ds = load_dataset("gtzan", root, split_lists=lists)
    x = np.random.default_rng(0).normal(size=(len(ds), model.config.joint_dim)).astype(np.float32)
    res = evaluate_zeroshot(model, x, ds)
    test = ds.split_indices("test")
    # the oracle embeds the labels' natural texts, spelled out here: GTZAN's "hiphop" is read as "hip hop"
    texts = ["blues", "classical", "country", "disco", "hip hop", "jazz", "metal", "pop", "reggae", "rock"]
    labels = normalize(embed_texts(model, texts))
    pred = np.argmax(normalize(x[test]) @ labels.T, axis=1)
    assert res["split"] == "test" and res["n_tracks"] == test.size == 20
    assert res["accuracy"] == pytest.approx(metrics.accuracy(ds.labels[test], pred))
    # balanced accuracy: the mean of the classes' recalls, spelled out over the test tracks' classes
    truth = ds.labels[test]
    recalls = [np.mean(pred[truth == c] == c) for c in np.unique(truth)]
    assert res["balanced_accuracy"] == pytest.approx(float(np.mean(recalls)))
    assert res["label_texts"]["hiphop"] == "hip hop" and list(res["label_texts"].values()) == texts
    assert res["coverage"] == 1.0 and res["unscored_labels"] == []
    prompted = evaluate_zeroshot(model, x, ds, prompt="a {} song")
    assert prompted["prompt"] == "a {} song" and 0.0 <= prompted["accuracy"] <= 1.0
    ok = np.ones(len(ds), dtype=bool)
    ok[test[:5]] = False
    assert evaluate_zeroshot(model, x, ds, ok=ok)["n_tracks"] == 15
    with pytest.raises(MusicSearchError):
        evaluate_zeroshot(model, x[:3], ds)


def test_classification_model_scores_only_known_labels(
    classifier: torch.nn.Module, gtzan_root: tuple[Path, dict[str, Path]]
) -> None:
    root, lists = gtzan_root
    ds = load_dataset("gtzan", root, split_lists=lists)
    x = np.random.default_rng(1).normal(size=(len(ds), classifier.config.joint_dim)).astype(np.float32)
    res = evaluate_zeroshot(classifier, x, ds)
    assert res["coverage"] == pytest.approx(0.3)  # hiphop (matches "hip hop"), jazz, rock
    assert set(res["unscored_labels"]) == set(GENRES) - {"hiphop", "jazz", "rock"}
    assert res["scoring"] == "classifier logits"
    test = ds.split_indices("test")
    known = ds.labels[test][np.isin(ds.labels[test], [GENRES.index(g) for g in ("hiphop", "jazz", "rock")])]
    assert res["accuracy"] <= known.size / test.size  # tracks of unknown classes are always wrong


def test_multilabel_and_f1_datasets(model: torch.nn.Module) -> None:
    rng = np.random.default_rng(2)
    names = ("male vocal", "female vocal", "breathy", "raspy")
    splits = ["train"] * 6 + ["valid"] * 6 + ["test"] * 8
    tracks = tuple(Track(f"k{i}", f"/k{i}.wav", split=s) for i, s in enumerate(splits))
    y = (rng.random((20, 4)) < 0.5).astype(np.float32)
    y[[12, 13], :] = [[1, 1, 1, 1], [0, 0, 0, 0]]  # every test column has a positive and a negative
    x = rng.normal(size=(20, model.config.joint_dim)).astype(np.float32)
    for metric in ("roc_auc", "f1"):
        ds = LabelledDataset("kvt-like", "multilabel", names, tracks, y, metric)
        res = evaluate_zeroshot(model, x, ds)
        s = normalize(x[12:]) @ normalize(embed_texts(model, list(names))).T
        assert res["roc_auc"] == pytest.approx(metrics.macro_roc_auc(y[12:], s), abs=1e-6)
        if metric == "f1":
            assert res["f1"] == pytest.approx(metrics.macro_best_f1(y[12:], s), abs=1e-6)
            assert 0.0 <= res["f1_valid_threshold"] <= 1.0
        else:
            assert "f1" not in res
    # label names are embedded as their natural texts: underscores and camelCase read as words
    odd = ("joyful_activation", "noVocals", "husky/throaty", "hiphop")
    ds = LabelledDataset("odd", "multilabel", odd, tracks, y, "roc_auc", label_text={"hiphop": "hip hop"})
    res = evaluate_zeroshot(model, x, ds)
    texts = ["joyful activation", "no vocals", "husky or throaty", "hip hop"]
    assert list(res["label_texts"].values()) == texts
    s = normalize(x[12:]) @ normalize(embed_texts(model, texts)).T
    assert res["roc_auc"] == pytest.approx(metrics.macro_roc_auc(y[12:], s), abs=1e-6)
    raw = normalize(x[12:]) @ normalize(embed_texts(model, list(odd))).T
    assert not np.allclose(s, raw, atol=1e-3)  # the bare names would have given other scores
    emotify = LabelledDataset("emotify", "multiclass", ("a", "b"), tracks, np.zeros(20, np.int64), "accuracy")
    assert zeroshot_rows(emotify)[1] == "all" and zeroshot_rows(emotify)[0].size == 20
    assert zeroshot_rows(emotify, "test")[0].size == 8


def test_zeroshot_and_probe_suites_share_embeddings(
    model: torch.nn.Module, gtzan_root: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    root, lists = gtzan_root
    opts = SuiteOptions(
        datasets=(("gtzan", str(root)),),
        dataset_options={"split_lists": lists},
        cache_dir=str(tmp_path),
        probe_grid="quick",
        probe_max_epochs=3,
        probe_patience=2,
        n_windows=1,
    )
    out = run_suite(model, "all", opts)
    res = out["results"]
    assert set(res) == {"probe", "zeroshot"}
    probe, zs = res["probe"]["gtzan"], res["zeroshot"]["gtzan"]
    assert 0.0 <= probe["accuracy"] <= 1.0 and probe["n_tracks"] == 60 and probe["head"] == "mlp"
    assert probe["probe"]["best_config"]["batch_size"] == 64
    assert zs["embeddings"]["from_cache"]  # zero-shot reused the probe's whole-dataset embeddings
    assert 0.0 <= zs["accuracy"] <= 1.0 and zs["n_tracks"] == 20
    assert zs["window_policy"]["n_windows"] == 1
    with pytest.raises(ConfigError):
        run_suite(model, "zeroshot", SuiteOptions())
    with pytest.raises(ConfigError):
        run_suite(model, "probe", SuiteOptions(datasets=(("gtzan", str(root)),), probe_grid="huge"))


def test_probe_over_seeds_reports_the_mean_of_single_seed_runs(
    model: torch.nn.Module, gtzan_root: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    root, lists = gtzan_root
    base = SuiteOptions(
        datasets=(("gtzan", str(root)),), dataset_options={"split_lists": lists}, cache_dir=str(tmp_path),
        probe_grid="quick", probe_max_epochs=4, probe_patience=2, n_windows=1, seed=3,
    )  # fmt: skip
    single = [
        run_suite(model, "probe", dataclasses.replace(base, seed=s))["results"]["probe"]["gtzan"]["accuracy"]
        for s in (3, 4, 5)
    ]
    res = run_suite(model, "probe", dataclasses.replace(base, probe_seeds=3))["results"]["probe"]["gtzan"]
    assert res["seeds"] == [3, 4, 5]
    assert [r["accuracy"] for r in res["per_seed"]] == pytest.approx(single, abs=1e-9)
    assert res["accuracy"] == pytest.approx(float(np.mean(single)), abs=1e-9)
    assert res["accuracy_std"] == pytest.approx(float(np.std(single)), abs=1e-9)
    assert res["probe"]["test"]["accuracy"] == pytest.approx(single[0], abs=1e-9)  # the first run in full
    one = run_suite(model, "probe", base)["results"]["probe"]["gtzan"]
    assert "seeds" not in one and "accuracy_std" not in one  # one seed: the paper's protocol, as before
    with pytest.raises(ConfigError, match="probe_seeds"):
        run_suite(model, "probe", dataclasses.replace(base, probe_seeds=0))


def test_zeroshot_over_every_track(
    model: torch.nn.Module, gtzan_root: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    root, lists = gtzan_root
    opts = SuiteOptions(datasets=(("gtzan", str(root)),), dataset_options={"split_lists": lists},
                        cache_dir=str(tmp_path), n_windows=1)  # fmt: skip
    test = run_suite(model, "zeroshot", opts)["results"]["zeroshot"]["gtzan"]
    every = run_suite(model, "zeroshot", dataclasses.replace(opts, zeroshot_split="all"))
    res = every["results"]["zeroshot"]["gtzan"]
    assert test["n_tracks"] == 20 and test["split"] == "test"
    assert res["n_tracks"] == 60 and res["split"] == "all"
    assert "gtzan: all (60 tracks)" in markdown_report([every])  # the report says which tracks were scored
    # the oracle: cosine argmax of every track's embedding against the genre names, from the same cached embeddings
    ds = load_dataset("gtzan", str(root), split_lists=lists)
    x, ok, _ = _dataset_embeddings(model, ds, None, dataclasses.replace(opts, zeroshot_split="all"))
    pred = np.argmax(normalize(x) @ normalize(embed_texts(model, list(ds.label_texts))).T, axis=1)
    assert ok.all() and res["accuracy"] == pytest.approx(float(np.mean(pred == ds.labels)), abs=1e-9)
    te = ds.split_indices("test")
    assert test["accuracy"] == pytest.approx(float(np.mean(pred[te] == ds.labels[te])), abs=1e-9)
    with pytest.raises(ConfigError, match="zeroshot_split"):
        run_suite(model, "zeroshot", dataclasses.replace(opts, zeroshot_split="everything"))
