"""Gathering Debian music packages: real .debs built with dpkg-deb, a fake downloader, no network."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import soundfile as sf

from musicsearch.cli.main import main
from musicsearch.data.manifest import read_manifest
from musicsearch.data.sources.debian_music import (
    DebianMusicPackage,
    RawPcm,
    audio_fingerprint,
    extract_members,
    extract_zip_members,
    fingerprint_similarity,
    gather_debian_music,
    licence_summary,
    remove_duplicates,
    track_licence,
)
from musicsearch.errors import ManifestError

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed")

COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: x

Files: *
Copyright: 2020 A Coder
License: GPL-2+

Files: data/music/*
 data/extra/*.ogg
Copyright: 2020 A Composer
License: CC-BY-SA-3.0

Files: debian/*
Copyright: 2021 A Packager
License: GPL-2+

License: CC-BY-SA-3.0
 Full text here.
"""


def _piece(seed: int, seconds: float, sr: int) -> np.ndarray:
    """A deterministic 'melody': one random tone per quarter second, the same signal at any rate ``sr``."""
    rng = np.random.default_rng(seed)
    n_notes = int(np.ceil(seconds * 4))
    freqs = rng.uniform(150.0, 3000.0, n_notes)
    amps = rng.uniform(0.05, 0.4, n_notes)
    t = np.arange(int(seconds * sr)) / sr
    idx = np.minimum((t * 4).astype(int), n_notes - 1)
    return (amps[idx] * np.sin(2 * np.pi * freqs[idx] * t)).astype(np.float32)


def _audio_bytes(seed: int, seconds: float, sr: int, fmt: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, _piece(seed, seconds, sr), sr, format=fmt)
    return buf.getvalue()


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _build_deb(tmp: Path, package: str, version: str, files: dict[str, bytes], copyright_text: str) -> Path:
    root = tmp / f"root-{package}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: all\nMaintainer: T <t@example.org>\n"
        "Description: test music\n test\n"
    )
    for rel, data in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    doc = root / "usr" / "share" / "doc" / package
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(copyright_text)
    deb = tmp / f"{package}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)], check=True, capture_output=True)
    return deb


GAME = "usr/share/games/x/data"


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two packages: x-music (loose audio, a .pk3 with music and a sound effect inside) and y-data (copies)."""
    tmp = tmp_path_factory.mktemp("debs")
    a_ogg = _audio_bytes(1, 25.0, 16000, "OGG")
    x_files = {
        f"{GAME}/music/a.ogg": a_ogg,
        f"{GAME}/music/short.ogg": _audio_bytes(2, 3.0, 16000, "OGG"),  # a jingle: under 20 s
        f"{GAME}/music/broken.ogg": b"not an ogg file at all",
        f"{GAME}/music/notes.txt": b"not audio",
        f"{GAME}/pak0.pk3": _zip_bytes(
            {
                "music/b.ogg": _audio_bytes(3, 24.0, 16000, "OGG"),
                "sound/boom.ogg": _audio_bytes(4, 22.0, 16000, "OGG"),  # outside music/: not music
                "music/readme.txt": b"hello",
            }
        ),
    }
    y_files = {
        # the same recording as a.ogg re-encoded (other rate and codec): a fingerprint duplicate
        "usr/share/games/y/music/a-again.flac": _audio_bytes(1, 25.0, 22050, "FLAC"),
        # byte-for-byte the same file: a hash duplicate
        "usr/share/games/y/music/a-copy.ogg": a_ogg,
        # a different piece of the same length: kept
        "usr/share/games/y/music/c.ogg": _audio_bytes(5, 25.0, 16000, "OGG"),
        # header-less unsigned 8-bit stereo at 8 kHz, rendered to FLAC because the package declares it
        "usr/share/games/y/music/d.raw": (
            np.repeat(_piece(6, 21.0, 8000) * 127 + 128, 2).clip(0, 255).astype(np.uint8).tobytes()
        ),
    }
    y_copyright = "Copyright (C) 2019 Y Composer\nThe music is licensed under the GNU General Public License.\n"
    return {
        "x-music": _build_deb(tmp, "x-music", "1.2-3", x_files, COPYRIGHT),
        "y-data": _build_deb(tmp, "y-data", "2:0.5-1", y_files, y_copyright),
    }


def _fake_downloader(debs: dict[str, Path], calls: list[str]):  # type: ignore[no-untyped-def]
    def download(package: str, cache_dir: Path) -> Path:
        calls.append(package)
        return Path(shutil.copy(debs[package], cache_dir / debs[package].name))

    return download


X_SPEC = DebianMusicPackage("x-music", "X", "1.2-3", 0.1, music="*/music/*")
Y_SPEC = DebianMusicPackage("y-data", "Y", "2:0.5-1", 0.1, music="*/music/*", raw=RawPcm("u8", 8000, 2))


def test_gather_two_packages_with_archive_short_file_duplicates_and_raw(tmp_path: Path, debs: dict[str, Path]) -> None:
    calls: list[str] = []
    out = tmp_path / "out"
    report = gather_debian_music(out, [X_SPEC, Y_SPEC], downloader=_fake_downloader(debs, calls))
    assert calls == ["x-music", "y-data"]
    tracks = {t.track_id: t for t in read_manifest(report.manifest)}
    assert sorted(tracks) == [
        f"x-music/{GAME}/music/a",
        f"x-music/{GAME}/pak0.pk3/music/b",  # from inside the archive
        "y-data/usr/share/games/y/music/c",
        "y-data/usr/share/games/y/music/d.raw",  # rendered
    ]
    a = tracks[f"x-music/{GAME}/music/a"]
    assert sorted(a.metadata["duplicates"]) == [
        "y-data/usr/share/games/y/music/a-again",
        "y-data/usr/share/games/y/music/a-copy",
    ]
    assert a.metadata["duration"] == pytest.approx(25.0, abs=1e-2)
    # DEP-5: the last matching Files paragraph (data/music/*) gives the licence, also to the pk3's music/b.ogg
    assert a.metadata["licence"] == "CC-BY-SA-3.0"
    assert tracks[f"x-music/{GAME}/pak0.pk3/music/b"].metadata["licence"] == "CC-BY-SA-3.0"
    assert (out / a.metadata["copyright_file"]).read_text() == COPYRIGHT
    d = tracks["y-data/usr/share/games/y/music/d.raw"]
    assert d.metadata["rendered_from"] == "usr/share/games/y/music/d.raw" and d.metadata["title"] == "d"
    assert d.audio_path.endswith("d.raw.flac") and d.metadata["duration"] == pytest.approx(21.0, abs=0.05)
    assert tracks["y-data/usr/share/games/y/music/c"].metadata["licence"] == (
        "The music is licensed under the GNU General Public License. | Copyright (C) 2019 Y Composer"
    )
    for t in tracks.values():
        assert t.tags == () and t.split is None and Path(t.audio_path).is_file()
        assert Path(t.audio_path).is_relative_to(out / t.metadata["package"])

    x, y = report.packages
    assert (x.files, x.too_short, x.version) == (2, 1, "1.2-3")
    assert [rel for rel, _ in x.skipped] == [f"{GAME}/music/broken.ogg"]
    assert (y.files, y.too_short, len(y.duplicates), y.version) == (2, 0, 2, "2:0.5-1")
    assert report.hours == pytest.approx((25.0 + 24.0 + 25.0 + 21.0) / 3600, abs=1e-4)
    assert not (out / "x-music" / GAME / "music" / "notes.txt").exists()
    assert not (out / "x-music" / GAME / "pak0.pk3" / "sound").exists()  # the sound effect is not unpacked
    assert (out / "x-music" / GAME / "pak0.pk3").is_dir()  # the archive itself is not kept

    first = report.manifest.read_text()
    again = gather_debian_music(out, [X_SPEC, Y_SPEC], downloader=_fake_downloader(debs, calls))
    assert calls == ["x-music", "y-data"]  # not downloaded again
    assert not any(p.downloaded or p.unpacked for p in again.packages)
    assert again.manifest.read_text() == first


def test_package_order_decides_which_copy_is_kept(tmp_path: Path, debs: dict[str, Path]) -> None:
    report = gather_debian_music(tmp_path, [Y_SPEC, X_SPEC], downloader=_fake_downloader(debs, []))
    ids = {t.track_id for t in read_manifest(report.manifest)}
    assert "y-data/usr/share/games/y/music/a-again" in ids and f"x-music/{GAME}/music/a" not in ids
    assert "y-data/usr/share/games/y/music/a-copy" not in ids  # byte copy of the kept track's twin
    assert report.packages[1].duplicates[0][1].startswith("y-data/")


def test_min_seconds_keeps_the_short_file(tmp_path: Path, debs: dict[str, Path]) -> None:
    report = gather_debian_music(tmp_path, [X_SPEC], downloader=_fake_downloader(debs, []), min_seconds=1.0)
    ids = {t.track_id for t in read_manifest(report.manifest)}
    assert f"x-music/{GAME}/music/short" in ids and report.packages[0].too_short == 0
    with pytest.raises(ManifestError, match="min_seconds"):
        gather_debian_music(tmp_path, [X_SPEC], downloader=_fake_downloader(debs, []), min_seconds=-1.0)


def test_cli_gather_prints_counts_and_licence(
    tmp_path: Path, debs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    (out / "debs").mkdir(parents=True)
    shutil.copy(debs["x-music"], out / "debs" / debs["x-music"].name)  # cached: apt is never called
    assert main(["gather", "debian", "--out", str(out), "--packages", "x-music"]) == 0
    text = capsys.readouterr().out
    # not in the package table: every audio file is music, so the pk3's sound effect counts too
    assert "x-music 1.2-3: 3 tracks" in text and "left out 1 shorter than 20 s, 0 duplicates, 1 unreadable" in text
    assert "licence: GPL-2+; CC-BY-SA-3.0" in text and "unreadable usr/share/games/x/data/music/broken.ogg" in text
    assert "wrote 3 tracks (0.02 h of audio)" in text


def test_a_package_with_an_unsafe_archive_is_left_out_and_the_others_gathered(
    tmp_path: Path, debs: dict[str, Path]
) -> None:
    evil = {
        "usr/share/games/z/pak.pk3": _zip_bytes(
            {"music/ok.ogg": _audio_bytes(7, 21.0, 16000, "OGG"), "../CREDITS": b"x"}
        )
    }
    all_debs = {**debs, "z-data": _build_deb(tmp_path, "z-data", "1", evil, "Copyright 2000 Z\n")}
    report = gather_debian_music(tmp_path / "out", ["z-data", X_SPEC], downloader=_fake_downloader(all_debs, []))
    z, x = report.packages
    assert z.error is not None and "outside the unpack folder" in z.error and z.files == 0
    assert x.error is None and x.files == 2
    assert not (tmp_path / "out" / "z-data").exists() and not (tmp_path / "out" / "CREDITS").exists()
    assert {t.metadata["package"] for t in read_manifest(report.manifest)} == {"x-music"}


def test_bad_package_name_is_refused_before_any_download(tmp_path: Path) -> None:
    def never(package: str, cache_dir: Path) -> Path:
        raise AssertionError("must not download")

    with pytest.raises(ManifestError, match="not a Debian package name"):
        gather_debian_music(tmp_path, ["singularity-music", "../etc"], downloader=never)


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
def test_unsafe_tar_members_refuse_the_archive(tmp_path: Path, bad: str) -> None:
    dest = tmp_path / "a" / "b"
    with pytest.raises(ManifestError, match="outside"):
        extract_members(_tar_with(["./usr/ok.ogg", bad]), dest, lambda rel: True)
    assert not (tmp_path / "a" / "evil.ogg").exists() and not (tmp_path / "evil.ogg").exists()


def test_tar_links_are_never_written_and_names_are_normalised(tmp_path: Path) -> None:
    written = extract_members(_tar_with(["./usr/ok.ogg", "usr/skip.txt"]), tmp_path, lambda r: r.suffix == ".ogg")
    assert written == [PurePosixPath("usr/ok.ogg")]
    assert (tmp_path / "usr" / "ok.ogg").read_bytes() == b"abc"
    assert not (tmp_path / "usr" / "link.ogg").exists() and not (tmp_path / "usr" / "skip.txt").exists()


@pytest.mark.parametrize("bad", ["../evil.ogg", "/abs/evil.ogg", "music/../../evil.ogg"])
def test_unsafe_zip_members_refuse_the_archive(tmp_path: Path, bad: str) -> None:
    arc = tmp_path / "x.pk3"
    arc.write_bytes(_zip_bytes({"music/ok.ogg": b"abc", bad: b"evil"}))
    dest = tmp_path / "a" / "b"
    with pytest.raises(ManifestError, match="outside"):
        extract_zip_members(arc, dest, lambda rel: True)
    assert not list(tmp_path.rglob("evil.ogg"))


def test_zip_links_are_skipped_and_size_limit_refuses(tmp_path: Path) -> None:
    arc = tmp_path / "x.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr("music/ok.ogg", b"abcd")
        link = zipfile.ZipInfo("music/link.ogg")
        link.external_attr = (0o120777 << 16) | 0x20  # a Unix symlink entry
        zf.writestr(link, "/etc/passwd")
    written = extract_zip_members(arc, tmp_path / "out", lambda rel: True)
    assert written == [PurePosixPath("music/ok.ogg")]
    assert (tmp_path / "out" / "music" / "ok.ogg").read_bytes() == b"abcd"
    assert not (tmp_path / "out" / "music" / "link.ogg").exists()
    with pytest.raises(ManifestError, match="limit"):
        extract_zip_members(arc, tmp_path / "out2", lambda rel: True, max_bytes=3)
    assert not (tmp_path / "out2" / "music" / "ok.ogg").exists()
    (tmp_path / "bad.pk3").write_bytes(b"not a zip")
    with pytest.raises(ManifestError, match="not a readable zip"):
        extract_zip_members(tmp_path / "bad.pk3", tmp_path / "out3", lambda rel: True)


def test_licence_summary_free_form_and_dep5() -> None:
    assert licence_summary(COPYRIGHT) == "GPL-2+; CC-BY-SA-3.0"
    free = "Packaged by someone.\n\nCopyright (C) 2007 Max\n\nSome words.\nDebian packaging is licensed under GPL.\n"
    assert licence_summary(free) == "Debian packaging is licensed under GPL. | Copyright (C) 2007 Max"
    assert licence_summary("just text\nmore\n") == "just text | more"
    gpl = "Copyright:\n  This package is free software; under the terms of the GNU General Public License\n"
    assert licence_summary(gpl) == "This package is free software; under the terms of the GNU General Public License"


def test_track_licence_last_matching_paragraph_on_any_path_tail() -> None:
    assert track_licence(COPYRIGHT, "usr/share/games/x/data/music/a.ogg") == "CC-BY-SA-3.0"
    assert track_licence(COPYRIGHT, "usr/share/games/x/data/extra/b.ogg") == "CC-BY-SA-3.0"  # continuation line
    assert track_licence(COPYRIGHT, "usr/share/games/x/data/extra/b.flac") == "GPL-2+"
    assert track_licence(COPYRIGHT, "usr/share/games/x/sound/s.ogg") == "GPL-2+"
    assert track_licence(COPYRIGHT, "usr/share/games/x/data/music.pk3/b.ogg") == "GPL-2+"
    assert track_licence(COPYRIGHT, "usr/share/games/x/data/pak0.pk3/music/b.ogg") == "CC-BY-SA-3.0"  # as packed
    assert track_licence("Copyright (C) 2007 Max\n", "usr/a.ogg") is None


def _similarity_oracle(a: np.ndarray, b: np.ndarray) -> float:
    """Plain loops at lag 0: per excerpt, the cosine of the per-band standardised matrices; mean over excerpts."""
    scores = []
    for k in range(a.shape[0]):
        dot = na = nb = 0.0
        for band in range(a.shape[2]):
            x = [float(v) for v in a[k, :, band]]
            y = [float(v) for v in b[k, :, band]]
            mx, my = sum(x) / len(x), sum(y) / len(y)
            sx = (sum((v - mx) ** 2 for v in x) / len(x)) ** 0.5
            sy = (sum((v - my) ** 2 for v in y) / len(y)) ** 0.5
            for u, v in zip(x, y, strict=True):
                zu, zv = (u - mx) / sx, (v - my) / sy
                dot, na, nb = dot + zu * zv, na + zu * zu, nb + zv * zv
        scores.append(dot / (na * nb) ** 0.5)
    return sum(scores) / len(scores)


def test_fingerprint_similarity_against_plain_loop_oracle() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 40, 8)).astype(np.float32)
    b = (0.6 * a + 0.8 * rng.normal(size=a.shape)).astype(np.float32)
    assert fingerprint_similarity(a, b, max_lag=0) == pytest.approx(_similarity_oracle(a, b), abs=1e-5)
    assert fingerprint_similarity(a, a) == pytest.approx(1.0, abs=1e-5)
    # a shift by 3 frames is found by the lag search, and lost without it
    shifted = np.roll(a, 3, axis=1)
    assert fingerprint_similarity(a, shifted, max_lag=5) == pytest.approx(1.0, abs=1e-5)
    assert fingerprint_similarity(a, shifted, max_lag=0) < 0.5
    assert abs(fingerprint_similarity(a, rng.normal(size=a.shape).astype(np.float32), max_lag=0)) < 0.2


def test_fingerprint_matches_across_codecs_not_across_pieces(tmp_path: Path) -> None:
    for name, seed, sr, fmt in [("a.ogg", 1, 16000, "OGG"), ("a.flac", 1, 44100, "FLAC"), ("c.ogg", 5, 16000, "OGG")]:
        (tmp_path / name).write_bytes(_audio_bytes(seed, 25.0, sr, fmt))
    fa, fa2, fc = (audio_fingerprint(tmp_path / n, 25.0) for n in ("a.ogg", "a.flac", "c.ogg"))
    assert fa.shape == (3, 60, 8) and fa.dtype == np.float32
    assert fingerprint_similarity(fa, fa2) > 0.95
    assert fingerprint_similarity(fa, fc) < 0.5


def test_remove_duplicates_rules() -> None:
    rng = np.random.default_rng(1)
    fp = rng.normal(size=(3, 30, 8)).astype(np.float32)
    other = rng.normal(size=(3, 30, 8)).astype(np.float32)
    items = [
        (100.0, "h1", fp),
        (100.5, "h2", fp + 0.01 * rng.normal(size=fp.shape).astype(np.float32)),  # same audio, within 1 s
        (102.0, "h3", fp),  # same fingerprint but 2 s longer: a different edit, kept
        (100.2, "h4", other),  # same length, other audio: kept
        (50.0, "h1", None),  # same bytes as the first
    ]
    assert remove_duplicates(items) == [None, 0, None, None, 0]
