"""Getting the published weights: resumable download with checksum (local HTTP server), safe archive extraction,
folder search, and the messages given when nothing can be fetched."""

from __future__ import annotations

import hashlib
import io
import logging
import socket
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from musicsearch.errors import CheckpointError
from musicsearch.models.download import (
    download,
    extract_from_archive,
    find_in_folder,
    locate_weights,
    verify_checksum,
)
from musicsearch.models.pretrained import load_pretrained, published_model

CBS = published_model("ttmr/contrastive-bert-stochastic")


class FileServer(ThreadingHTTPServer):
    """Serves ``payload`` at any path (``/missing`` is a 404); may cut the first responses halfway."""

    payload = b""
    cuts = 0
    ignore_range = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.ranges: list[str | None] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/files/mtr.tar.gz?download=1"


class Handler(BaseHTTPRequestHandler):
    server: FileServer

    def do_GET(self) -> None:
        srv = self.server
        data = srv.payload
        rng = self.headers.get("Range")
        srv.ranges.append(rng)
        if self.path.startswith("/missing"):
            self.send_error(404)
            return
        start = 0
        if rng and not srv.ignore_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cuts > 0:  # announce the whole body, send half, hang up (HTTP/1.0 closes the connection)
            srv.cuts -= 1
            self.wfile.write(body[: len(body) // 2])
            return
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def server() -> Iterator[FileServer]:
    srv = FileServer()
    srv.payload = np.random.default_rng(0).bytes(300_000)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/files/mtr.tar.gz?download=1"


def tar_bytes(members: dict[str, bytes | None], links: dict[str, str] | None = None) -> bytes:
    """A tar.gz in memory: ``name -> content`` (None: a folder), plus symbolic links ``name -> target``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            if content is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(content)
                tf.addfile(info, io.BytesIO(content))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return buf.getvalue()


def folder_of(member: str) -> str:
    return member.rsplit("/", 1)[0]


# --- download ---------------------------------------------------------------------------------------------------


def test_download_resumes_a_cut_transfer(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "mtr.tar.gz"
    server.cuts = 1
    with pytest.raises(CheckpointError, match="run again to resume") as err:
        download(server.url, dest, retries=0, progress=False)
    assert str(dest) in str(err.value)
    half = len(server.payload) // 2
    part = tmp_path / "mtr.tar.gz.part"
    assert part.stat().st_size == half and not dest.exists()
    download(server.url, dest, retries=0, progress=False)
    assert server.ranges == [None, f"bytes={half}-"]
    assert dest.read_bytes() == server.payload and not part.exists()
    digest = hashlib.sha256(server.payload).hexdigest()
    assert (tmp_path / "mtr.tar.gz.sha256").read_text() == f"{digest}  mtr.tar.gz\n"
    assert verify_checksum(dest) == digest


def test_download_retries_within_one_call(server: FileServer, tmp_path: Path) -> None:
    server.cuts = 2
    dest = download(server.url, tmp_path / "a.bin", retries=3, retry_wait=0, progress=False)
    assert dest.read_bytes() == server.payload
    n = len(server.payload)
    assert server.ranges == [None, f"bytes={n // 2}-", f"bytes={n // 2 + (n - n // 2) // 2}-"]


def test_a_server_ignoring_range_restarts_the_file(server: FileServer, tmp_path: Path) -> None:
    server.cuts, server.ignore_range = 1, True
    dest = download(server.url, tmp_path / "a.bin", retries=1, retry_wait=0, progress=False)
    assert dest.read_bytes() == server.payload


def test_complete_part_file_is_accepted(server: FileServer, tmp_path: Path) -> None:
    (tmp_path / "a.bin.part").write_bytes(server.payload)  # e.g. killed after the last byte, before the rename
    dest = download(server.url, tmp_path / "a.bin", retries=0, progress=False)
    assert dest.read_bytes() == server.payload and server.ranges == [f"bytes={len(server.payload)}-"]


def test_checksum_mismatch_is_reported(server: FileServer, tmp_path: Path) -> None:
    dest = download(server.url, tmp_path / "mtr.tar.gz", progress=False)
    with dest.open("r+b") as fh:
        fh.write(b"\x00")
    with pytest.raises(CheckpointError, match=r"was recorded when it was downloaded.*Delete"):
        verify_checksum(dest)


def test_http_error_and_no_network_say_what_to_do(server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="HTTP 404"):
        download(server.url.replace("/files/", "/missing/"), tmp_path / "x", progress=False)
    url = closed_port_url()
    with pytest.raises(CheckpointError) as err:
        download(url, tmp_path / "mtr.tar.gz", progress=False)
    msg = str(err.value)
    assert url in msg and "Zenodo record 7322135" in msg and str(tmp_path / "mtr.tar.gz") in msg
    assert "--weights" in msg


def test_load_pretrained_offline_names_the_file_and_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MUSICSEARCH_TTMR_WEIGHTS", raising=False)
    url = closed_port_url()
    with pytest.raises(CheckpointError) as err:
        load_pretrained(CBS.name, cache_dir=tmp_path, url=url, text_encoder_path="unused")
    assert url in str(err.value) and str(tmp_path / "mtr.tar.gz") in str(err.value)
    with pytest.raises(CheckpointError, match=r"no weights given and .*mtr\.tar\.gz does not exist"):
        load_pretrained(CBS.name, cache_dir=tmp_path, download_missing=False)
    # the cache folder is honoured through $MUSICSEARCH_CACHE
    monkeypatch.setenv("MUSICSEARCH_CACHE", str(tmp_path / "root"))
    with pytest.raises(CheckpointError, match=str(tmp_path / "root" / "published" / "mtr.tar.gz")):
        load_pretrained(CBS.name, download_missing=False)


def test_locate_weights_downloads_extracts_and_caches(server: FileServer, tmp_path: Path) -> None:
    server.payload = tar_bytes(
        {
            "mtr/contrastive/exp/transformer_cnn_cf_mel/bert_tag/best.pth": b"other variant",
            CBS.member: b"the weights",
            folder_of(CBS.member) + "/hparams.yaml": b"framework: contrastive\n",
            "mtr/triplet/exp/transformer_cnn_cf_mel/bert_stochastic/best.pth": b"triplet",
        }
    )
    best, source = locate_weights(CBS, cache_dir=tmp_path, url=server.url, progress=False)
    assert best.read_bytes() == b"the weights"
    assert best.with_name("hparams.yaml").read_text() == "framework: contrastive\n"
    assert source["url"] == server.url and source["member"] == CBS.member
    assert (tmp_path / "mtr.tar.gz.sha256").is_file()
    n = len(server.ranges)
    again, _ = locate_weights(CBS, cache_dir=tmp_path, url=server.url, progress=False)
    assert again == best and len(server.ranges) == n  # no second download, no second extraction
    archive = tmp_path / "mtr.tar.gz"
    archive.write_bytes(archive.read_bytes()[:-1] + b"\x01")  # damaged in place: the recorded checksum catches it
    with pytest.raises(CheckpointError, match="SHA-256"):
        locate_weights(CBS, cache_dir=tmp_path, url=server.url, progress=False)


# --- archives and folders -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    ["../mtr/contrastive/exp/transformer_cnn_cf_mel/bert_stochastic/best.pth", "/tmp/evil/best.pth", "mtr/../../x"],
)
def test_unsafe_member_names_refuse_the_archive(tmp_path: Path, bad: str) -> None:
    archive = tmp_path / "mtr.tar.gz"
    archive.write_bytes(tar_bytes({bad: b"x", CBS.member: b"w"}))
    with pytest.raises(CheckpointError, match="outside the archive"):
        extract_from_archive(archive, CBS, tmp_path / "out")
    assert not (tmp_path / "out" / "best.pth").exists()
    assert not (tmp_path.parent / "mtr").exists() and not Path("/tmp/evil/best.pth").exists()


def test_a_linked_best_pth_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "mtr.tar.gz"
    archive.write_bytes(tar_bytes({}, links={CBS.member: "/etc/passwd"}))
    with pytest.raises(CheckpointError, match="not a regular file"):
        extract_from_archive(archive, CBS, tmp_path / "out")


def test_other_layouts_are_searched_and_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(
        tar_bytes(
            {
                "./release/": None,
                "./release/contrastive/bert_stochastic/best.pth": b"found",
                "./release/contrastive/bert_tag/best.pth": b"no",
                "./release/triplet/bert_stochastic/best.pth": b"no",
            }
        )
    )
    with caplog.at_level(logging.WARNING, logger="musicsearch.models.download"):
        out = extract_from_archive(archive, CBS, tmp_path / "out")
    assert out.read_bytes() == b"found" and "not where expected" in caplog.text
    other = tmp_path / "b.tar.gz"
    other.write_bytes(tar_bytes({"x/triplet/bert_stochastic/best.pth": b"", "x/contrastive/bert_tag/best.pth": b""}))
    with pytest.raises(CheckpointError) as err:
        extract_from_archive(other, CBS, tmp_path / "out2")
    assert "x/triplet/bert_stochastic/best.pth" in str(err.value) and "x/contrastive/bert_tag/best.pth" in str(
        err.value
    )
    (tmp_path / "c.tar.gz").write_bytes(b"not a tar file")
    with pytest.raises(CheckpointError, match="not a readable tar archive"):
        extract_from_archive(tmp_path / "c.tar.gz", CBS, tmp_path / "out3")


def test_folders_at_any_level_and_other_layouts(tmp_path: Path) -> None:
    best = tmp_path / "dl" / CBS.member
    best.parent.mkdir(parents=True)
    best.write_bytes(b"w")
    for root in (tmp_path / "dl", tmp_path / "dl" / "mtr", tmp_path / "dl" / "mtr" / "contrastive", best.parent):
        assert find_in_folder(root, CBS) == best
    odd = tmp_path / "odd" / "contrastive" / "runs" / "bert_stochastic" / "best.pth"
    odd.parent.mkdir(parents=True)
    odd.write_bytes(b"w")
    assert find_in_folder(tmp_path / "odd", CBS) == odd
    with pytest.raises(CheckpointError, match=r"best\.pth files found: contrastive/runs/bert_stochastic/best\.pth"):
        find_in_folder(tmp_path / "odd", published_model("ttmr/triplet-bert-tag"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"best\.pth files found: none"):
        find_in_folder(tmp_path / "empty", CBS)
    # passed directly: an archive path, a folder or a best.pth
    path, source = locate_weights(CBS, str(best), cache_dir=tmp_path / "cache")
    assert path == best and source["kind"] == "best.pth"
    with pytest.raises(CheckpointError, match="do not exist"):
        locate_weights(CBS, str(tmp_path / "nope.tar.gz"), cache_dir=tmp_path / "cache")


def test_hparams_before_best_and_truncated_archives(tmp_path: Path) -> None:
    yaml_name = folder_of(CBS.member) + "/hparams.yaml"
    data = tar_bytes({yaml_name: b"text_rep: stochastic\n", CBS.member: b"w" * 5000, "mtr/zz/best.pth": b"z"})
    (tmp_path / "a.tar.gz").write_bytes(data)
    out = extract_from_archive(tmp_path / "a.tar.gz", CBS, tmp_path / "out")
    assert out.read_bytes() == b"w" * 5000
    assert out.with_name("hparams.yaml").read_text() == "text_rep: stochastic\n"
    big = tar_bytes({CBS.member: np.random.default_rng(1).bytes(200_000)})
    (tmp_path / "cut.tar.gz").write_bytes(big[: len(big) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        extract_from_archive(tmp_path / "cut.tar.gz", CBS, tmp_path / "out2")
