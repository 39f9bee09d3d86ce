"""Gathering Debian soundtrack packages: a real .deb built with dpkg-deb, a fake downloader, no network."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import soundfile as sf

from musicsearch.cli.main import main
from musicsearch.data.manifest import read_manifest
from musicsearch.data.sources.debian_music import (
    extract_members,
    gather_debian_music,
    licence_summary,
)
from musicsearch.errors import ManifestError

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed")

PKG = "x-music"
COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: x

Files: *
Copyright: 2020 A Composer
License: CC-BY-SA-3.0

Files: debian/*
Copyright: 2021 A Packager
License: GPL-2+

License: CC-BY-SA-3.0
 Full text here.
"""


def _build_deb(tmp: Path) -> Path:
    root = tmp / "pkgroot"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {PKG}\nVersion: 1.2-3\nArchitecture: all\nMaintainer: T <t@example.org>\n"
        "Description: test music\n test\n"
    )
    music = root / "usr" / "share" / "games" / "x" / "music"
    music.mkdir(parents=True)
    sr = 8000
    t = np.arange(int(1.5 * sr)) / sr
    sf.write(music / "a.ogg", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr)
    sf.write(music / "b.flac", np.zeros(2 * sr, dtype=np.float32), sr)
    (music / "notes.txt").write_text("not audio")
    (music / "broken.ogg").write_bytes(b"not an ogg file at all")
    doc = root / "usr" / "share" / "doc" / PKG
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(COPYRIGHT)
    deb = tmp / f"{PKG}_1.2-3_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)], check=True, capture_output=True)
    return deb


def test_gather_unpacks_lists_audio_with_licence_and_is_idempotent(tmp_path: Path) -> None:
    deb = _build_deb(tmp_path)
    calls: list[str] = []

    def fake_download(package: str, cache_dir: Path) -> Path:
        calls.append(package)
        return Path(shutil.copy(deb, cache_dir / deb.name))

    out = tmp_path / "out"
    report = gather_debian_music(out, [PKG], downloader=fake_download)
    assert calls == [PKG]
    tracks = read_manifest(report.manifest)
    assert sorted(t.track_id for t in tracks) == [
        f"{PKG}/usr/share/games/x/music/a",
        f"{PKG}/usr/share/games/x/music/b",
    ]
    for t in tracks:
        assert t.tags == () and t.split is None
        assert Path(t.audio_path).is_file() and Path(t.audio_path).is_relative_to(out / PKG)
        md = t.metadata
        assert md["package"] == PKG and md["version"] == "1.2-3"
        assert md["licence"] == "CC-BY-SA-3.0; GPL-2+"
        assert (out / md["copyright_file"]).read_text() == COPYRIGHT
    durations = {t.track_id.rsplit("/", 1)[1]: t.metadata["duration"] for t in tracks}
    assert durations == {"a": pytest.approx(1.5, abs=1e-3), "b": pytest.approx(2.0, abs=1e-3)}
    (pkg_report,) = report.packages
    assert pkg_report.files == 2 and pkg_report.downloaded and pkg_report.unpacked
    assert [rel for rel, _ in pkg_report.skipped] == ["usr/share/games/x/music/broken.ogg"]
    assert report.hours == pytest.approx(3.5 / 3600, abs=1e-6)
    assert not (out / PKG / "usr/share/games/x/music/notes.txt").exists()  # only audio and copyright unpacked

    first = report.manifest.read_text()
    again = gather_debian_music(out, [PKG], downloader=fake_download)
    assert calls == [PKG]  # not downloaded again
    assert not again.packages[0].downloaded and not again.packages[0].unpacked
    assert again.manifest.read_text() == first


def test_cli_gather_prints_hours_counts_and_licence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deb = _build_deb(tmp_path)
    out = tmp_path / "out"
    (out / "debs").mkdir(parents=True)
    shutil.copy(deb, out / "debs" / deb.name)  # cached: the CLI's apt downloader is never called
    assert main(["gather", "debian", "--out", str(out), "--packages", PKG]) == 0
    text = capsys.readouterr().out
    assert f"{PKG} 1.2-3: 2 files" in text and "licence: CC-BY-SA-3.0; GPL-2+" in text
    assert "wrote 2 tracks (0.00 h of audio)" in text


def test_bad_package_name_is_refused_before_any_download(tmp_path: Path) -> None:
    def never(package: str, cache_dir: Path) -> Path:
        raise AssertionError("must not download")

    with pytest.raises(ManifestError, match="not a Debian package name"):
        gather_debian_music(tmp_path, ["../etc"], downloader=never)


def _tar_with(names: list[str]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
        link = tarfile.TarInfo("./usr/link.ogg")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    buf.seek(0)
    return buf


@pytest.mark.parametrize("bad", ["../evil.ogg", "/abs/evil.ogg", "./usr/../../evil.ogg"])
def test_unsafe_members_refuse_the_archive(tmp_path: Path, bad: str) -> None:
    dest = tmp_path / "a" / "b"
    with pytest.raises(ManifestError, match="outside"):
        extract_members(_tar_with(["./usr/ok.ogg", bad]), dest, lambda rel: True)
    assert not (tmp_path / "a" / "evil.ogg").exists() and not (tmp_path / "evil.ogg").exists()


def test_links_are_never_written_and_names_are_normalised(tmp_path: Path) -> None:
    written = extract_members(_tar_with(["./usr/ok.ogg", "usr/skip.txt"]), tmp_path, lambda r: r.suffix == ".ogg")
    assert written == [PurePosixPath("usr/ok.ogg")]
    assert (tmp_path / "usr" / "ok.ogg").read_bytes() == b"abc"
    assert not (tmp_path / "usr" / "link.ogg").exists() and not (tmp_path / "usr" / "skip.txt").exists()


def test_licence_summary_free_form_and_dep5() -> None:
    assert licence_summary(COPYRIGHT) == "CC-BY-SA-3.0; GPL-2+"
    free = "Packaged by someone.\n\nCopyright (C) 2007 Max\n\nSome words.\nDebian packaging is licensed under GPL.\n"
    assert licence_summary(free) == "Copyright (C) 2007 Max | Debian packaging is licensed under GPL."
    assert licence_summary("just text\nmore\n") == "just text | more"
